"""The experience-maker stage: objectives -> aggregator -> training rewards, then the Conductor's feedback.

``MaestroExperienceMaker`` subclasses OpenRLHF's ``RemoteExperienceMaker`` (experience_maker.py 19) and
extends two of its methods with ``super()`` calls:

- ``make_experience`` (113-235) runs the model forwards; afterwards the objectives in ``info["obj/<name>"]``
  (one scalar per response from the reward function's ``extra_logs``) and the h collected from the policy
  actors go to ``aggregator.aggregate``, whose scalar R replaces ``rewards`` (and ``info["reward"]``);
- ``compute_advantages_and_returns`` (239-340) applies OpenRLHF's own length penalties and group
  normalization to R; afterwards the group-relative advantages of the final R go to ``aggregator.feedback``.
"""

from __future__ import annotations

import itertools
import time

import ray
import torch
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from openrlhf_maestro.integration.channels import (
    MODEL_CHANNELS,
    group_rank,
    reasoning_text,
    reference_batch,
)
from openrlhf_maestro.method import RewardAggregator


class MissingObjectiveError(KeyError):
    """The reward function did not report a declared objective."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidSampleError(ValueError):
    """A response whose reward or objective is missing, None or non-finite (and dropping is not enabled)."""


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


def objective_matrix(experiences: list, objectives: list[str]) -> torch.Tensor:
    """(N, K) float32: column k holds ``info["obj/<objectives[k]>"]`` of every response, in experience order."""
    columns = []
    for name in objectives:
        key = f"obj/{name}"
        if not all(key in e.info for e in experiences):
            reported = sorted({k for e in experiences for k in e.info if k.startswith("obj/")})
            raise MissingObjectiveError(
                f"the reward function reported no '{key}' for objective '{name}' of the aggregator's objectives; it "
                f"reported {reported or 'no obj/* keys'}. Put extra_logs['{key}'] = <float> in its return value, "
                f"or drop '{name}' from the objectives."
            )
        columns.append(torch.cat([e.info[key].reshape(-1).float() for e in experiences]))
    return torch.stack(columns, dim=1)


def group_ids_of(experiences: list, n_samples_per_prompt: int) -> torch.Tensor:
    """(N,) prompt-group id of every response: rollout samples are prompt-major, n per prompt."""
    index = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))
    return index // n_samples_per_prompt


def group_relative_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, estimator: str) -> torch.Tensor:
    """(N,) scalar advantage of each response as OpenRLHF's estimator forms it (experience_maker.py 273-285).

    group_norm:                 (R - mean_g) / (std_g + 1e-9)     (unbiased std)
    dr_grpo, reinforce_baseline: R - mean_g
    rloo:                        R - (sum_g - R) / (n_g - 1)
    """
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    r = rewards.double()
    sums = torch.zeros(len(counts), dtype=r.dtype).index_add_(0, inverse, r)
    n = counts.to(r.dtype)
    mean = (sums / n)[inverse]
    if estimator in ("dr_grpo", "reinforce_baseline"):
        out = r - mean
    elif estimator == "rloo":
        out = r - (sums[inverse] - r) / (n[inverse] - 1)
    elif estimator == "group_norm":
        sq = torch.zeros_like(sums).index_add_(0, inverse, (r - mean) ** 2)
        std = (sq / (n - 1)).sqrt()[inverse]
        out = (r - mean) / (std + 1e-9)
    else:
        raise ValueError(f"advantage estimator {estimator!r} is not group-relative")
    return out.float()


class MaestroExperienceMaker(RemoteExperienceMaker):
    """OpenRLHF's experience maker with a reward aggregator between the forwards and the advantages.

    Args:
        aggregator: the method's aggregator; its objectives are the columns of the reward matrix.
        preference_group: a ``RewardModelActor`` group for the ``preference`` channel, or None.
    """

    def __init__(self, *args, aggregator: RewardAggregator, preference_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aggregator = aggregator
        self.objectives = list(aggregator.objectives)
        self.model_channels = [o for o in self.objectives if o in MODEL_CHANNELS]
        self.function_objectives = [o for o in self.objectives if o not in MODEL_CHANNELS]
        self.preference_group = preference_group
        self.drop_invalid = bool(self.args.maestro.drop_invalid_samples)
        self.metrics: dict[str, float] = {}
        self.last_batch: tuple[list[str], torch.Tensor | None] = ([], None)  # prompts, (N, K) weights used

    # -- before the forwards: validate what the reward function returned, one sample at a time --------------

    def split_rollout_samples(self, rollout_samples: list) -> list:
        for i, sample in enumerate(rollout_samples):
            clash = [o for o in self.model_channels if f"obj/{o}" in sample.info]
            if clash:
                raise InvalidSampleError(
                    f"the reward function reports {clash}, which the plugin computes itself (model channels "
                    f"{list(MODEL_CHANNELS)}); rename the reward function's objective"
                )
            problems = sample_problems(sample, self.function_objectives)
            if problems and not self.drop_invalid:
                raise InvalidSampleError(
                    f"response {i} of this rollout batch ({_describe(sample)}): "
                    + "; ".join(problems)
                    + ". Fix the reward function, or pass --maestro.drop_invalid_samples to give such responses "
                    "zero advantage and count them in maestro/dropped_samples."
                )
            # Placeholders keep the micro-batch tensors aligned; the row is neutralized after aggregation.
            sample.info["maestro/invalid_fraction"] = torch.tensor([float(bool(problems))])
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
        if "entropy" in self.model_channels:
            self._set_objective(experiences, "entropy", torch.cat([r["entropy"] for r in records]))
        if "perplexity" in self.model_channels:
            t1 = time.time()
            nll = self._reference_nll(experiences)
            self._set_objective(experiences, "perplexity", group_rank(nll, group_ids, higher_is_better=False))
            self.metrics["maestro/perplexity"] = float(nll.exp().mean())
            self.metrics["maestro/seconds_perplexity"] = time.time() - t1
        if preference_refs is not None:
            scores = torch.cat([r.reshape(-1).float() for r in self._flatten_results(preference_refs, self._copies)])
            self._set_objective(experiences, "preference", scores)

        rewards = objective_matrix(experiences, self.objectives)
        invalid = torch.cat([e.info["maestro/invalid_fraction"].reshape(-1) for e in experiences]).bool()
        if self.drop_invalid:
            self.metrics["maestro/dropped_samples"] = float(invalid.sum())
        bad = ~torch.isfinite(rewards)
        if (bad & ~invalid.unsqueeze(1)).any():  # a model channel went non-finite
            row, col = (bad & ~invalid.unsqueeze(1)).nonzero()[0].tolist()
            raise InvalidSampleError(f"objective '{self.objectives[col]}' is not finite for response {row}")
        rewards = _fill_with_group_means(rewards, invalid, group_ids)
        if invalid.any():  # keep OpenRLHF's own obj/* logs finite
            for k, name in enumerate(self.objectives):
                self._set_objective(experiences, name, rewards[:, k])
        hidden = torch.cat([r["hidden"] for r in records]) if self.aggregator.needs_hidden else None
        t0 = time.time()
        out = self.aggregator.aggregate(rewards, group_ids, hidden)
        scalar = _fill_with_group_means(
            out.rewards, invalid, group_ids
        )  # dropped rows get the group mean: zero advantage
        for experience, piece in zip(experiences, scalar.split([len(e.index) for e in experiences]), strict=True):
            experience.rewards = piece.float()  # R is real-valued even when the reward function returned ints
            experience.info["reward"] = experience.rewards.clone()
        self.metrics.update(out.metrics)
        self.last_batch = ([p for e in experiences for p in e.prompts], out.weights)
        self.metrics["maestro/seconds_aggregate"] = time.time() - t0
        return experiences

    def compute_advantages_and_returns(self, experiences: list) -> list:
        experiences = super().compute_advantages_and_returns(experiences)
        t0 = time.time()
        rewards = torch.cat([e.rewards.reshape(-1).float() for e in experiences])  # R after length penalties
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        advantages = group_relative_advantages(rewards, group_ids, self.args.algo.advantage.estimator)
        self.metrics.update(self.aggregator.feedback(advantages))
        self.metrics["maestro/seconds_feedback"] = time.time() - t0
        return experiences

    # -- helpers ----------------------------------------------------------------------------------------------

    @property
    def _copies(self) -> int:
        """Actors per data chunk (ring attention x tensor parallel): their results are duplicates."""
        return self.args.ds.ring_attn_size * self.args.ds.tensor_parallel_size

    def _set_objective(self, experiences: list, name: str, values: torch.Tensor) -> None:
        for experience, piece in zip(experiences, values.split([len(e.index) for e in experiences]), strict=True):
            experience.info[f"obj/{name}"] = piece.float()

    def _dispatch_preference(self, samples_list: list):
        if self.preference_group is None:
            return None
        return self.preference_group.async_run_method_batch(
            method_name="forward",
            sequences=[s.sequences for s in samples_list],
            attention_mask=[s.attention_mask for s in samples_list],
            pad_sequence=[True] * len(samples_list),
        )

    def _reference_nll(self, experiences: list) -> torch.Tensor:
        """(N,) mean NLL of each response's reference answer given prompt + its reasoning (one batched forward)."""
        m = self.args.maestro
        prefix, marker, suffix = m.reference_template.partition("{reference}")
        if not marker:
            raise ValueError(
                f"--maestro.reference_template must contain '{{reference}}', got {m.reference_template!r}"
            )
        tok = self.tokenizer

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        batches = {"sequences": [], "attention_mask": [], "action_mask": []}
        for experience in experiences:
            prompts, reasonings, references, suffixes = [], [], [], []
            seq_len, num_actions = experience.sequences.shape[1], experience.action_mask.shape[1]
            for b in range(experience.sequences.shape[0]):
                label = experience.labels[b] if b < len(experience.labels) else None
                if not label:
                    raise InvalidSampleError(
                        f"the perplexity channel needs each prompt's reference answer, but response {b} has an empty "
                        "label: pass --data.label_key with the dataset's reference field"
                    )
                actions = experience.action_mask[b].nonzero().flatten()
                start = seq_len - num_actions + int(actions[0])
                end = seq_len - num_actions + int(actions[-1]) + 1
                row = experience.sequences[b]
                response = tok.decode(row[start:end], skip_special_tokens=True)
                prompts.append(row[:start].tolist())
                reasonings.append(ids(reasoning_text(response, m.reasoning_end) + prefix))
                references.append(ids(label))
                suffixes.append(ids(suffix))
            seqs, attn, act = reference_batch(
                prompts, reasonings, references, suffixes, tok.pad_token_id, self.args.data.max_len
            )
            batches["sequences"].append(seqs)
            batches["attention_mask"].append(attn)
            batches["action_mask"].append(act)
        refs = self.actor_model_group.async_run_method_batch(method_name="maestro_reference_nll", **batches)
        return torch.cat(self._flatten_results(refs, self._copies))

    def _collect_records(self, experiences: list) -> list[dict[str, torch.Tensor]]:
        """Per-micro-batch records from the policy actors' ``pop_maestro_records``, in experience order.

        ``async_run_method_batch`` gives chunk c of the micro-batches to actors c*d .. c*d+d-1 (d = ring x TP
        copies, launcher.py 346-371) and each actor runs its chunk in order, so concatenating the first copy of
        every chunk restores the micro-batch order, as ``_flatten_results`` does (experience_maker.py 108-110).
        """
        results = ray.get(self.actor_model_group.async_run_method(method_name="pop_maestro_records"))[:: self._copies]
        records = [r for per_actor, _ in results for r in per_actor]
        self.metrics["maestro/policy_forwards"] = float(sum(forwards for _, forwards in results))
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


def _fill_with_group_means(values: torch.Tensor, invalid: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(N, ...) values: the rows of dropped responses become the mean of their group's valid rows (0 if none).

    Applied to the objective matrix it keeps the per-objective normalization of the group unchanged; applied to
    the scalar R it leaves the group mean as it was, so a dropped response's group-relative advantage is exactly
    0 (group_norm, dr_grpo, reinforce_baseline, and rloo with one dropped response per group).
    """
    if not invalid.any():
        return values
    out = values.clone()
    for gid in torch.unique(group_ids[invalid]):
        rows = group_ids == gid
        valid = rows & ~invalid
        out[rows & invalid] = values[valid].mean(dim=0) if valid.any() else torch.zeros(values.shape[1:])
    return out
