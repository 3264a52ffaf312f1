"""The alignment meta-reward's target through the hook, on real OpenRLHF Experience objects (no Ray, no model):
obj/<target> read as an optional column, kept out of R, NaN where missing or dropped; refusals in the spec."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from openrlhf_maestro.runtime import standin_finder

# OpenRLHF imports flash_attn unconditionally; on this CPU-only machine the CPU runtime's stand-in serves it.
standin_finder.install()

from openrlhf.trainer.ppo_utils.experience import Experience

from openrlhf_maestro.integration.hook import AggregatorHook, InvalidSampleError, target_column
from openrlhf_maestro.method import AggregateOutput, MaestroAggregator, MaestroConfig
from openrlhf_maestro.metric_names import INVALID as INVALID_KEY
from openrlhf_maestro.probe import PolicyProbe
from openrlhf_maestro.spec import AggregatorSpec, SpecError

NAN = float("nan")
ALIGN = {"meta_reward": "alignment", "target": "judge", "lr": 0.05}


def _experience(index: list[int], info: dict) -> Experience:
    b = len(index)
    return Experience(
        rewards=torch.zeros(b),
        kl=torch.zeros(b, 3),
        action_mask=torch.ones(b, 3, dtype=torch.bool),
        index=list(index),
        info=dict(info),
    )


def _hook(spec: AggregatorSpec, hidden_size: int) -> AggregatorHook:
    """The hook as the launcher builds it, minus reading H from a model's config (no model loads)."""
    hook = AggregatorHook.__new__(AggregatorHook)
    args = SimpleNamespace(rollout=SimpleNamespace(n_samples_per_prompt=4))
    args.algo = SimpleNamespace(advantage=SimpleNamespace(estimator="group_norm"))
    hook.args, hook.spec, hook.hidden_size, hook.steps = args, spec, hidden_size, 0
    hook.aggregator, hook.policy_probe = spec.build(hidden_size), PolicyProbe.of(spec)
    return hook


class _Recorder(MaestroAggregator):
    """The real alignment aggregator, recording what the hook hands it."""

    def aggregate(self, rewards, group_ids, hidden=None, *, target=None) -> AggregateOutput:
        self.seen = {"rewards": rewards.clone(), "target": None if target is None else target.clone()}
        return super().aggregate(rewards, group_ids, hidden, target=target)


def _batch(judge_by_experience: list[list[float] | None], flagged: tuple[int, ...] = ()) -> list[Experience]:
    """8 responses of 2 prompts in micro-batches of 2, out of sample order; obj/judge per micro-batch (None: the
    key is absent there)."""
    order = [3, 6, 1, 4, 0, 7, 2, 5]
    hidden = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    experiences = []
    for k, judge in zip(range(0, 8, 2), judge_by_experience, strict=True):
        rows = order[k : k + 2]
        info = {
            "obj/a": torch.tensor([0.1 * i for i in rows]),
            "obj/b": torch.tensor([1.0 - 0.1 * i for i in rows]),
            "hidden": hidden[rows],
            INVALID_KEY: torch.tensor([float(i in flagged) for i in rows]),
        }
        if judge is not None:
            info["obj/judge"] = torch.tensor(judge)
        experiences.append(_experience(rows, info))
    return experiences


def test_the_target_is_an_optional_column_kept_out_of_r_and_nan_where_missing_or_dropped() -> None:
    spec = AggregatorSpec("maestro", ("a", "b"), options=ALIGN, context="prompt", failure_policy="drop_response")
    hook = _hook(spec, 4)
    hook.aggregator = recorder = _Recorder(["a", "b"], MaestroConfig(**ALIGN), hidden_size=4)
    # Micro-batches hold samples (3, 6), (1, 4), (0, 7), (2, 5); the third has no obj/judge; sample 4 is flagged.
    experiences = _batch([[0.3, float("inf")], [0.1, 0.4], None, [0.2, 0.5]], flagged=(4,))
    logs = hook.before_advantages(experiences)
    # In sample order: 0 absent, 1 = 0.1, 2 = 0.2, 3 = 0.3, 4 dropped, 5 = 0.5, 6 infinite, 7 absent.
    expected = torch.tensor([NAN, 0.1, 0.2, 0.3, NAN, 0.5, NAN, NAN])
    torch.testing.assert_close(recorder.seen["target"], expected, equal_nan=True)
    assert recorder.seen["rewards"].shape == (8, 2)  # the target is not an objective column
    assert logs["maestro/target_fraction"] == 0.5  # group 0 (samples 0-3) has 3 values, group 1 only one
    assert all(torch.isfinite(e.rewards).all() for e in experiences)
    # Logged over the responses that report it: (0.1 + 0.2 + 0.3 + 0.5) / 4, and out of info (whose mean OpenRLHF
    # would log as NaN); the objectives' own entries stay.
    assert logs["reward/judge"] == pytest.approx(0.275)
    assert all("obj/judge" not in e.info and "obj/a" in e.info for e in experiences)
    hook.after_advantages(experiences)
    assert hook.aggregator.updater.updates == 1


def test_target_column_names_a_key_with_the_wrong_number_of_values() -> None:
    experiences = [_experience([0, 1], {"obj/judge": torch.tensor([1.0])})]
    with pytest.raises(InvalidSampleError, match=r"obj/judge has 1 values for 2 responses.*float\('nan'\)"):
        target_column(experiences, "judge")


def test_an_aggregator_without_a_target_is_not_handed_one() -> None:
    spec = AggregatorSpec("maestro", ("a", "b"), context="prompt")
    hook = _hook(spec, 4)
    assert hook.aggregator.target_objective is None
    logs = hook.before_advantages(_batch([[0.3, 0.6], [0.1, 0.4], [0.0, 0.7], [0.2, 0.5]]))
    assert "maestro/target_fraction" not in logs  # the paper's rule ran, and obj/judge was ignored


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"options": ALIGN}, "context", r"needs context prompt, got 'response': pass --reward.context prompt"),
        (
            {"options": {**ALIGN, "target": "b"}, "context": "prompt"},
            "options",
            r"target 'b' is also a training objective",
        ),
        ({"options": {"target": "judge"}, "context": "prompt"}, "options", r"only read by meta_reward='alignment'"),
        (
            {"options": {**ALIGN, "target": "invalid"}, "context": "prompt"},
            "options",
            r"the target 'invalid' would log as reward/invalid, one of the hook's own keys",
        ),
    ],
)
def test_bad_combinations_are_refused_by_the_spec_before_any_model_loads(kwargs, field, message) -> None:
    with pytest.raises(SpecError, match=message) as err:
        AggregatorSpec("maestro", ("a", "b"), **kwargs)
    assert err.value.field == field


def test_the_flags_name_the_target_and_a_missing_prompt_context_names_its_flag() -> None:
    import argparse

    from openrlhf_maestro.integration.flags import add_plugin_arguments, spec_from_flags

    parser = argparse.ArgumentParser()
    add_plugin_arguments(parser)
    flags = ["--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--maestro.meta_reward", "alignment"]
    flags += ["--maestro.target", "judge"]
    with pytest.raises(SpecError, match=r"^--reward.context: .*pass --reward.context prompt"):
        spec_from_flags(parser.parse_args(flags))
    spec = spec_from_flags(parser.parse_args([*flags, "--reward.context", "prompt"]))
    assert spec.build(4).target_objective == "judge"
