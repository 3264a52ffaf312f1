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

from openrlhf_maestro.method import RewardAggregator


class MissingObjectiveError(KeyError):
    """The reward function did not report a declared objective."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def objective_matrix(experiences: list, objectives: list[str]) -> torch.Tensor:
    """(N, K) float32: column k holds ``info["obj/<objectives[k]>"]`` of every response, in experience order."""
    columns = []
    for name in objectives:
        key = f"obj/{name}"
        if not all(key in e.info for e in experiences):
            reported = sorted({k for e in experiences for k in e.info if k.startswith("obj/")})
            raise MissingObjectiveError(
                f"the reward function reported no '{key}' for objective '{name}' declared in --reward.objectives; "
                f"it reported {reported or 'no obj/* keys'}. Put extra_logs['{key}'] = <float> in its return value, "
                f"or drop '{name}' from --reward.objectives."
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
    """OpenRLHF's experience maker with a reward aggregator between the forwards and the advantages."""

    def __init__(self, *args, aggregator: RewardAggregator, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aggregator = aggregator
        self.objectives = list(aggregator.objectives)
        self.metrics: dict[str, float] = {}
        self.last_batch: tuple[list[str], torch.Tensor | None] = ([], None)  # prompts, (N, K) weights used

    def make_experience(self, samples_list: list) -> list:
        experiences = super().make_experience(samples_list)
        t0 = time.time()
        self.metrics = {}
        hidden = self._collect_hidden(experiences) if self.aggregator.needs_hidden else None
        rewards = objective_matrix(experiences, self.objectives)
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        out = self.aggregator.aggregate(rewards, group_ids, hidden)
        for experience, scalar in zip(
            experiences, out.rewards.split([len(e.index) for e in experiences]), strict=True
        ):
            experience.rewards = scalar.to(
                experience.rewards.dtype if experience.rewards is not None else scalar.dtype
            )
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

    def _collect_hidden(self, experiences: list) -> torch.Tensor:
        """(N, H) context rows in experience order, from the policy actors' ``pop_maestro_hidden``.

        ``async_run_method_batch`` gives chunk c of the micro-batches to actors c*d .. c*d+d-1 (d = ring x TP
        copies, launcher.py 346-371) and each actor runs its chunk in order, so concatenating the first copy of
        every chunk restores the micro-batch order, as ``_flatten_results`` does (experience_maker.py 108-110).
        """
        duplicate = self.args.ds.ring_attn_size * self.args.ds.tensor_parallel_size
        results = ray.get(self.actor_model_group.async_run_method(method_name="pop_maestro_hidden"))[::duplicate]
        per_forward = [h for hidden, _ in results for h in hidden]
        self.metrics["maestro/policy_forwards"] = float(sum(forwards for _, forwards in results))
        if len(per_forward) != len(experiences) or any(
            h.shape[0] != len(e.index) for h, e in zip(per_forward, experiences, strict=True)
        ):
            raise RuntimeError(
                f"collected hidden states for {[h.shape[0] for h in per_forward]} responses per forward, expected "
                f"{[len(e.index) for e in experiences]}: the policy forwards and the micro-batches are out of step"
            )
        return torch.cat(per_forward)
