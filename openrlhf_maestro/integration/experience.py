"""The experience-maker stage on an unpatched OpenRLHF: model channels, then the ``AggregatorHook``.

``AggregatingExperienceMaker`` subclasses OpenRLHF's ``RemoteExperienceMaker`` (experience_maker.py 19) and
extends three of its methods with ``super()`` calls, at the points where the upstream patch calls the hook:

- ``split_rollout_samples``: each sample's reward-function output is checked, and a failed one flagged
  (``reward/invalid``) with placeholders so OpenRLHF's concatenation keeps rows aligned;
- ``make_experience`` (113-235) runs the model forwards; then the model channels (``entropy``,
  ``perplexity``, ``preference``) fill their ``info["obj/<name>"]`` and ``hook.before_advantages`` turns the
  objectives into R, with the h the policy actors collected during their forward;
- ``compute_advantages_and_returns`` (239-340) applies OpenRLHF's own length penalties and group
  normalization to R; then ``hook.after_advantages`` feeds the advantages back.
"""

from __future__ import annotations

import time

import ray
import torch
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from openrlhf_maestro.channels import reference_batch
from openrlhf_maestro.integration.hook import (
    INVALID_KEY,
    AggregatorHook,
    InvalidSampleError,
    group_ids_of,
    set_objective,
)


def sample_problems(sample, function_objectives: list[str]) -> list[str]:
    """What is wrong with one rollout sample's reward-function output (empty list: nothing)."""
    problems = []
    if sample.rewards is None:
        problems.append(
            "the reward function raised or returned no 'rewards' for it (OpenRLHF logs the exception in the "
            "rollout actor: look for '[SingleTurnExecutor] Failed to fetch reward')"
        )
    for name in function_objectives:
        value = sample.info.get(f"obj/{name}")
        if value is None:
            if sample.rewards is not None:
                reported = sorted(k for k in sample.info if k.startswith("obj/"))
                problems.append(
                    f"objective '{name}' (declared in --reward.objectives): the reward function's extra_logs has no "
                    f"'obj/{name}'; it reported {reported or 'no obj/* keys'}"
                )
        elif not torch.isfinite(value.float()).all():
            problems.append(f"objective '{name}': value {value.flatten()[0].item()} is not finite")
    return problems


def _describe(sample) -> str:
    prompt = sample.prompts[0] if sample.prompts else ""
    return f"prompt {prompt[-120:]!r}"


class AggregatingExperienceMaker(RemoteExperienceMaker):
    """OpenRLHF's experience maker that computes the model channels and calls the ``AggregatorHook``.

    Args:
        hook: the run's hook; its spec's objectives are the columns of the reward matrix.
        preference_group: a ``RewardModelActor`` group for the ``preference`` channel, or None.
    """

    def __init__(self, *args, hook: AggregatorHook, preference_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hook = hook
        self.model_channels = hook.spec.model_channels
        self.function_objectives = hook.spec.function_objectives
        self.preference_group = preference_group
        self.drop_invalid = hook.spec.drop_invalid_samples
        self.metrics: dict[str, float] = {}

    # -- before the forwards: validate what the reward function returned, one sample at a time --------------

    def split_rollout_samples(self, rollout_samples: list) -> list:
        for i, sample in enumerate(rollout_samples):
            clash = [o for o in self.model_channels if f"obj/{o}" in sample.info]
            if clash:
                raise InvalidSampleError(
                    f"the reward function reports {clash}, which the plugin computes itself (model channels); "
                    "rename the reward function's objective"
                )
            problems = sample_problems(sample, self.function_objectives)
            if problems and not self.drop_invalid:
                raise InvalidSampleError(
                    f"response {i} of this rollout batch ({_describe(sample)}): "
                    + "; ".join(problems)
                    + ". Fix the reward function, or pass --reward.drop_invalid_samples to give such responses "
                    "zero advantage and count them in reward/dropped_samples."
                )
            # Placeholders keep the micro-batch tensors aligned; the row is neutralized after aggregation.
            sample.info[INVALID_KEY] = torch.tensor([float(bool(problems))])
            if sample.rewards is None:
                sample.rewards = torch.zeros(1)
            if sample.scores is None:
                sample.scores = sample.rewards.clone()
            for name in self.function_objectives:
                key = f"obj/{name}"
                if key not in sample.info or not torch.isfinite(sample.info[key].float()).all():
                    sample.info[key] = torch.tensor([float("nan")])
        _align_info_keys(rollout_samples)
        return super().split_rollout_samples(rollout_samples)

    # -- after the forwards: channels, aggregation --------------------------------------------------------

    def make_experience(self, samples_list: list) -> list:
        preference_refs = self._dispatch_preference(samples_list)  # runs beside the policy/reference forwards
        experiences = super().make_experience(samples_list)
        self.metrics = {}
        records = self._collect_records(experiences)
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        for name in self.model_channels:
            channel = self.hook.spec.channel(name)
            if channel.source == "policy_logits":  # reduced inside the policy forward that ran above
                values = torch.cat([r[name] for r in records])
            elif channel.source == "policy_forward":
                t1 = time.time()
                nll = self._teacher_forced_nll(channel, experiences)
                values, logs = channel.from_nll(nll, group_ids)
                self.metrics.update(logs)
                self.metrics[f"{name}/seconds"] = time.time() - t1
            else:  # reward_model: the preference group started beside the reward function
                scores = self._flatten_results(preference_refs, self._copies)
                values = torch.cat([r.reshape(-1).float() for r in scores])
            set_objective(experiences, name, values)
        hidden = [r["hidden"] for r in records] if self.hook.needs_hidden_states else None
        self.metrics.update(self.hook.before_advantages(experiences, hidden))
        return experiences

    def compute_advantages_and_returns(self, experiences: list) -> list:
        experiences = super().compute_advantages_and_returns(experiences)
        self.metrics.update(self.hook.after_advantages(experiences))
        return experiences

    # -- helpers ----------------------------------------------------------------------------------------------

    @property
    def _copies(self) -> int:
        """Actors per data chunk (ring attention x tensor parallel): their results are duplicates."""
        return self.args.ds.ring_attn_size * self.args.ds.tensor_parallel_size

    def _dispatch_preference(self, samples_list: list):
        if self.preference_group is None:
            return None
        return self.preference_group.async_run_method_batch(
            method_name="forward",
            sequences=[s.sequences for s in samples_list],
            attention_mask=[s.attention_mask for s in samples_list],
            pad_sequence=[True] * len(samples_list),
        )

    def _teacher_forced_nll(self, channel, experiences: list) -> torch.Tensor:
        """(N,) mean NLL of the tokens ``channel.rows`` scores, given prompt + its context (one batched forward)."""
        tok = self.tokenizer

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        batches = {"sequences": [], "attention_mask": [], "action_mask": []}
        for experience in experiences:
            prompts, contexts, scored, tails = [], [], [], []
            seq_len, num_actions = experience.sequences.shape[1], experience.action_mask.shape[1]
            for b in range(experience.sequences.shape[0]):
                label = experience.labels[b] if b < len(experience.labels) else None
                if channel.needs_label and not label:
                    raise InvalidSampleError(
                        f"the {channel.name} channel needs each prompt's reference answer, but response {b} has an "
                        "empty label: pass --data.label_key with the dataset's reference field"
                    )
                actions = experience.action_mask[b].nonzero().flatten()
                start = seq_len - num_actions + int(actions[0])
                end = seq_len - num_actions + int(actions[-1]) + 1
                row = experience.sequences[b]
                context, target, tail = channel.rows(tok.decode(row[start:end], skip_special_tokens=True), label, ids)
                prompts.append(row[:start].tolist())
                contexts.append(context)
                scored.append(target)
                tails.append(tail)
            max_len = self.args.data.max_len
            seqs, attn, act = reference_batch(prompts, contexts, scored, tails, tok.pad_token_id, max_len)
            batches["sequences"].append(seqs)
            batches["attention_mask"].append(attn)
            batches["action_mask"].append(act)
        refs = self.actor_model_group.async_run_method_batch(method_name="channel_reference_nll", **batches)
        return torch.cat(self._flatten_results(refs, self._copies))

    def _collect_records(self, experiences: list) -> list[dict[str, torch.Tensor]]:
        """Per-micro-batch records from the policy actors' ``pop_channel_records``, in experience order.

        ``async_run_method_batch`` gives chunk c of the micro-batches to actors c*d .. c*d+d-1 (d = ring x TP
        copies, launcher.py 346-371) and each actor runs its chunk in order, so concatenating the first copy of
        every chunk restores the micro-batch order, as ``_flatten_results`` does (experience_maker.py 108-110).
        """
        results = ray.get(self.actor_model_group.async_run_method(method_name="pop_channel_records"))[:: self._copies]
        records = [r for per_actor, _ in results for r in per_actor]
        self.metrics["reward/policy_forwards"] = float(sum(forwards for _, forwards in results))
        sizes = [next(iter(r.values())).shape[0] if r else None for r in records]
        if len(records) != len(experiences) or any(
            n is not None and n != len(e.index) for n, e in zip(sizes, experiences, strict=True)
        ):
            raise RuntimeError(
                f"collected channel records for {sizes} responses per forward, expected "
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
