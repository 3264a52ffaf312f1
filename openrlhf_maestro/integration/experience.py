"""The experience-maker stage on an unpatched OpenRLHF: what the upstream patch adds, as a subclass.

``AggregatingExperienceMaker`` subclasses OpenRLHF's ``RemoteExperienceMaker`` (experience_maker.py 19) and
extends four of its methods with ``super()`` calls, at the points where the upstream patch calls the hook:

- ``split_rollout_samples``: each sample's reward-function output is checked, and a failed one flagged
  (``reward/invalid``) with placeholders so OpenRLHF's concatenation keeps rows aligned;
- ``_dispatch_forward`` (100-106): the policy's forward in ``make_experience`` carries the hook's
  ``policy_probe``, as the patch's does;
- ``make_experience`` (113-235) runs the model forwards; then the probe's outputs, collected from the policy
  actors, go into each experience's ``info`` (where the policy-probe patch puts them), and
  ``hook.before_advantages`` gets the experiences and this experience maker, whose model groups compute the
  other model channels, and turns the objectives into R;
- ``compute_advantages_and_returns`` (239-340) applies OpenRLHF's own length penalties and group
  normalization to R; then ``hook.after_advantages`` feeds the advantages back.
"""

from __future__ import annotations

import ray
import torch
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from openrlhf_maestro.integration.hook import (
    AggregatorHook,
    InvalidSampleError,
    log_into_info,
)
from openrlhf_maestro.metric_names import INVALID, OBJECTIVE_PREFIX, POLICY_FORWARDS, objective_key


def sample_problems(sample, function_objectives: list[str]) -> list[str]:
    """What is wrong with one rollout sample's reward-function output (empty list: nothing)."""
    problems = []
    if sample.rewards is None:
        problems.append(
            "the reward function raised or returned no 'rewards' for it (OpenRLHF logs the exception in the "
            "rollout actor: look for '[SingleTurnExecutor] Failed to fetch reward')"
        )
    for name in function_objectives:
        value = sample.info.get(objective_key(name))
        if value is None:
            if sample.rewards is not None:
                reported = sorted(k for k in sample.info if k.startswith(OBJECTIVE_PREFIX))
                problems.append(
                    f"objective '{name}' (declared in --reward.objectives): the reward function's extra_logs has no "
                    f"'{objective_key(name)}'; it reported {reported or f'no {OBJECTIVE_PREFIX}* keys'}"
                )
        elif not torch.isfinite(value.float()).all():
            problems.append(f"objective '{name}': value {value.flatten()[0].item()} is not finite")
    return problems


def _describe(sample) -> str:
    prompt = sample.prompts[0] if sample.prompts else ""
    return f"prompt {prompt[-120:]!r}"


class AggregatingExperienceMaker(RemoteExperienceMaker):
    """OpenRLHF's experience maker that calls the ``AggregatorHook`` where the upstream patch does.

    Args:
        hook: the run's hook; its spec's objectives are the columns of the reward matrix.

    A reward model beside the reward function arrives as OpenRLHF's ``reward_model_group`` (the launcher starts
    it, as the patched CLI does); OpenRLHF's own reward dispatch skips it, since the reward function has already
    scored every sample, and the hook's ``reward_model`` channels call it.
    """

    def __init__(self, *args, hook: AggregatorHook, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hook = hook
        self.function_objectives = hook.spec.function_objectives
        self.drop_invalid = hook.spec.drop_invalid_samples
        self.skip_objective = hook.spec.failure_policy == "skip_objective"
        self._probe_next_actor_forward = False

    # -- before the forwards: validate what the reward function returned, one sample at a time --------------

    def split_rollout_samples(self, rollout_samples: list) -> list:
        for i, sample in enumerate(rollout_samples):
            problems = sample_problems(sample, self.function_objectives)
            if problems and not self.drop_invalid:
                raise InvalidSampleError(
                    f"response {i} of this rollout batch ({_describe(sample)}): "
                    + "; ".join(problems)
                    + ". Fix the reward function, or pass --reward.failure_policy drop_response (zero advantage "
                    "for such responses) or skip_objective (leave out only the missing objectives)."
                )
            # Placeholders keep the micro-batch tensors aligned; the row is neutralized after aggregation. Under
            # skip_objective only a reward function that returned nothing fails the whole row; a missing objective
            # becomes NaN below and is left out of that row's R alone.
            whole_row = sample.rewards is None if self.skip_objective else bool(problems)
            sample.info[INVALID] = torch.tensor([float(whole_row)])  # read by the hook (_invalid_rows)
            if sample.rewards is None:
                sample.rewards = torch.zeros(1)
            if sample.scores is None:
                sample.scores = sample.rewards.clone()
            for name in self.function_objectives:
                key = objective_key(name)
                if key not in sample.info or not torch.isfinite(sample.info[key].float()).all():
                    sample.info[key] = torch.tensor([float("nan")])
        _align_info_keys(rollout_samples)
        return super().split_rollout_samples(rollout_samples)

    # -- the forwards (the policy's carries the hook's probe), then the hook ---------------------------------

    def _dispatch_forward(self, group, sync_condition, **kwargs):
        if group is self.actor_model_group and self._probe_next_actor_forward:
            self._probe_next_actor_forward = False
            kwargs["policy_probe"] = [self.hook.policy_probe] * len(kwargs["sequences"])
        return super()._dispatch_forward(group, sync_condition, **kwargs)

    def make_experience(self, samples_list: list) -> list:
        self._probe_next_actor_forward = self.hook.policy_probe is not None
        experiences = super().make_experience(samples_list)
        if self.hook.policy_probe is not None:
            for experience, outputs in zip(experiences, self._collect_policy_outputs(experiences), strict=True):
                experience.info.update(outputs)
        self.hook.before_advantages(experiences, self)
        return experiences

    def compute_advantages_and_returns(self, experiences: list) -> list:
        experiences = super().compute_advantages_and_returns(experiences)
        self.hook.after_advantages(experiences)
        return experiences

    def _collect_policy_outputs(self, experiences: list) -> list[dict[str, torch.Tensor]]:
        """Per-micro-batch probe outputs from the policy actors' ``pop_channel_records``, in experience order.

        ``async_run_method_batch`` gives chunk c of the micro-batches to actors c*d .. c*d+d-1 (d = ring x TP
        copies, launcher.py 346-371) and each actor runs its chunk in order, so concatenating the first copy of
        every chunk restores the micro-batch order, as ``_flatten_results`` does (experience_maker.py 108-110).
        """
        copies = self.args.ds.ring_attn_size * self.args.ds.tensor_parallel_size
        results = ray.get(self.actor_model_group.async_run_method(method_name="pop_channel_records"))[::copies]
        records = [r for per_actor, _ in results for r in per_actor]
        log_into_info(experiences, {POLICY_FORWARDS: float(sum(forwards for _, forwards in results))})
        sizes = [next(iter(r.values())).shape[0] if r else None for r in records]
        if len(records) != len(experiences) or any(
            n is not None and n != len(e.index) for n, e in zip(sizes, experiences, strict=True)
        ):
            raise RuntimeError(
                f"collected policy outputs for {sizes} responses per forward, expected "
                f"{[len(e.index) for e in experiences]}: the policy forwards and the micro-batches are out of step"
            )
        return records


def _align_info_keys(samples: list) -> None:
    """Give every sample every ``info`` key: ``Experience.concat_experiences`` merges dicts key by key, so a key
    missing from one sample (a reward function that failed on it) would shift the rows of that key. A missing
    value becomes the mean over the samples that have it (objectives are replaced after aggregation anyway)."""
    keys = {k for s in samples for k in s.info}
    for key in keys:
        present = [s.info[key].float() for s in samples if key in s.info]
        fill = torch.cat([p.reshape(-1) for p in present]).nanmean().reshape(1)
        for sample in samples:
            if key not in sample.info:
                sample.info[key] = fill.clone()
