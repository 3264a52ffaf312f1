"""AggregatorSpec: the three sources parse into one value, it round-trips through JSON, and it validates once."""

from __future__ import annotations

import argparse
import json

import pytest

from openrlhf_maestro.integration.flags import add_plugin_arguments, spec_from_flags
from openrlhf_maestro.method import MaestroAggregator, RandomEmphasisAggregator, RewardAggregator, SumAggregator
from openrlhf_maestro.spec import AggregatorSpec, SpecError


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_plugin_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_json_args_and_saved_record_describe_the_same_spec():
    from_flags = spec_from_flags(
        flags(
            "--reward.aggregator", "maestro", "--reward.objectives", "format,perplexity", "--reward.weights", "3,1",
            "--maestro.tau", "0.5", "--reward.context", "prompt", "--reward.failure_policy", "drop_response",
            "--perplexity.reasoning_end", "</reason>",
        )
    )  # fmt: skip
    assert from_flags.options["tau"] == 0.5 and from_flags.weights == (3.0, 1.0) and from_flags.drop_invalid_samples
    assert from_flags.channels == {
        "perplexity": {"reasoning_end": "</reason>", "reference_template": "\n\n<answer>\n{reference}\n</answer>"}
    }
    as_json = json.loads(json.dumps(from_flags.to_json()))
    assert AggregatorSpec.from_json(as_json) == from_flags
    args = {k: as_json[k] for k in ("objectives", "weights", "options", "context", "channels", "failure_policy")}
    assert AggregatorSpec.from_aggregator_args("maestro", args) == from_flags


def test_the_aggregator_class_decides_options_and_prior():
    random = spec_from_flags(
        flags("--reward.aggregator", "random", "--reward.objectives", "a,b", "--random.seed", "7")
    )
    assert set(random.options) == set(RandomEmphasisAggregator.option_names) and random.options["seed"] == 7
    assert isinstance(random.build(None), RandomEmphasisAggregator) and not random.needs_hidden
    total = spec_from_flags(
        flags("--reward.aggregator", "sum", "--reward.objectives", "a,b", "--reward.weights", "1,-2")
    )
    assert total.options == {} and total.weights == (1.0, -2.0)  # static weights may be negative, a prior not
    assert isinstance(total.build(None), SumAggregator)
    with pytest.raises(SpecError, match=r"maestro's prior: prior\[1\] must be a finite number >= 0, got -2.0"):
        AggregatorSpec("maestro", ("a", "b"), weights=(1, -2))
    with pytest.raises(SpecError, match=r"random's prior: prior must have a positive sum, got \[0.0, 0.0\]"):
        AggregatorSpec("random", ("a", "b"), weights=(0, 0))
    maestro = AggregatorSpec("maestro", ("a", "b"), options={"lr": 0.1})
    assert maestro.needs_hidden and isinstance(maestro.build(16), MaestroAggregator)


@pytest.mark.parametrize(  # the other refusals, whole and with their field: tests/test_spec_messages_on_cpu.py
    "kwargs, message",
    [
        ({"weights": (1.0, float("nan"))}, "2 finite numbers"),
        ({"options": {"taus": 1.0}}, r"has no options \['taus'\]"),
        ({"plugins": ("no_such_module_xyz",)}, "cannot import plugin 'no_such_module_xyz'"),
        ({"objectives": ("perplexity", "b"), "channels": {"perplexity": {"reference_template": "x"}}}, "{reference}"),
        ({"aggregator": "median"}, "unknown reward aggregator 'median'"),
    ],
)
def test_one_validation_names_the_bad_value(kwargs, message):
    base = {"aggregator": "maestro", "objectives": ("a", "b")}
    with pytest.raises(SpecError, match=message):
        AggregatorSpec(**{**base, **kwargs})


def test_a_class_given_as_file_and_name_is_resolved_and_registered(tmp_path):
    path = tmp_path / "my_agg.py"
    path.write_text(
        "from openrlhf_maestro.method import SumAggregator\n"
        "class Doubled(SumAggregator):\n"
        "    option_names = ('scale',)\n"
        "    def __init__(self, objectives, weights=None, scale=2.0):\n"
        "        super().__init__(objectives, [scale] * len(objectives))\n"
    )
    spec = AggregatorSpec(f"{path}:Doubled", ("a", "b"), options={"scale": 3.0})
    built = spec.build(None)
    assert isinstance(built, RewardAggregator) and built.weights.tolist() == [3.0, 3.0]
    with pytest.raises(SpecError, match="defines no 'Nope'"):
        AggregatorSpec(f"{path}:Nope", ("a",))


def test_a_missing_plugin_in_json_args_names_the_key():
    with pytest.raises(SpecError, match=r"--reward.aggregator_args \"plugins\": cannot import plugin 'no_such_mod_q'"):
        AggregatorSpec.from_aggregator_args("sum", {"objectives": ["a"], "plugins": ["no_such_mod_q"]})


def test_failure_policy_parses_from_every_source_and_refuses_what_cannot_skip():
    new = spec_from_flags(flags("--reward.aggregator", "gdpo", "--reward.objectives", "a,b", "--reward.failure_policy",
                                "skip_objective"))  # fmt: skip
    assert new.failure_policy == "skip_objective" and new.build(None).accepts_missing
    drop = spec_from_flags(flags("--reward.aggregator", "gdpo", "--reward.objectives", "a,b",
                                 "--reward.failure_policy", "drop_response"))  # fmt: skip
    assert drop.failure_policy == "drop_response" and not drop.build(None).accepts_missing
    assert AggregatorSpec.from_json(drop.to_json()).failure_policy == "drop_response"
    with pytest.raises(SpecError, match='"failure_policy"'):
        AggregatorSpec.from_aggregator_args("sum", {"objectives": ["a"], "failure_policy": "ignore"})
    with pytest.raises(SpecError, match=r"unknown keys \['drop_invalid_samples'\]"):
        AggregatorSpec.from_aggregator_args("sum", {"objectives": ["a"], "drop_invalid_samples": True})
    with pytest.raises(SpecError, match="skip_objective needs normalization 'group' or 'none'"):
        AggregatorSpec("maestro", ("a", "b"), options={"normalization": "batch"}, failure_policy="skip_objective")
    with pytest.raises(SystemExit):  # argparse refuses a value outside the choices
        flags("--reward.aggregator", "sum", "--reward.objectives", "a", "--reward.failure_policy", "ignore")


def test_input_norm_none_from_the_flag_feeds_h_itself_to_the_head():
    """--maestro.input_norm none: x = h (no 1 / rms(h)), so z = W·h + b and the policy depends on h's scale."""
    import torch

    spec = spec_from_flags(
        flags("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--maestro.input_norm", "none")
    )
    conductor = spec.build(3).conductor
    weight, bias = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]), torch.tensor([0.25, -0.5])
    with torch.no_grad():
        conductor.output_layer.weight.copy_(weight)
        conductor.output_layer.bias.copy_(bias)
    h = torch.tensor([[2.0, 1.0, -4.0], [0.5, 0.5, 0.5]])
    features = conductor.features(h)
    assert torch.equal(features.scale, torch.ones(2, 1))
    assert conductor(features).tolist() == [[-1.75, -3.5], [0.0, 0.5]]  # W·h + b by hand
    assert not torch.allclose(conductor.probs(h), conductor.probs(10 * h))


@pytest.mark.parametrize(
    "objective, key",
    [("invalid", "reward/invalid"), ("seconds_feedback", "reward/seconds_feedback"), ("skipped", "reward/skipped/")],
)
def test_an_objective_named_like_the_hooks_own_key_is_refused(objective, key):
    """reward/<objective> would overwrite (or sit on) one of the hook's reward/* keys: the message names the
    objective, the key it collides with and the fix; from the flags it also names the flag."""
    with pytest.raises(SpecError, match=rf"objective '{objective}' would be logged as reward/{objective}, which "
                       rf"collides with the plugin's own key {key}.*rename the objective"):  # fmt: skip
        AggregatorSpec(aggregator="sum", objectives=("format", objective))
    with pytest.raises(SpecError, match=rf"^--reward.objectives: objective '{objective}'"):
        spec_from_flags(flags("--reward.aggregator", "sum", "--reward.objectives", f"format,{objective}"))


def test_names_near_the_hooks_keys_pass():
    spec = AggregatorSpec(aggregator="sum", objectives=("format", "invalid_answer", "skipped_steps", "seconds"))
    assert spec.objectives == ("format", "invalid_answer", "skipped_steps", "seconds")
