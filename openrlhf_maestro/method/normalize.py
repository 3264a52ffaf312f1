"""Group statistics and per-objective normalization r -> r̃ (before scalarization).

Modes of `ObjectiveNormalizer`:
    group: r̃_ijk = (r_ijk − μ_ik) / (σ_ik + ε), μ/σ over the responses j of group i (GDPO-style);
           an objective that is constant inside a group gives exactly 0 there.
    batch: r̃_ijk = (r_ijk − μ_k) / (σ_k + ε), μ/σ running over every response seen so far
           (Chan/Welford merge in float64, current batch included); a constant objective gives 0.
    none:  r̃ = r.
σ is the unbiased standard deviation, as torch.std and OpenRLHF's group_norm use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import NORMALIZATIONS


def group_index(group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Map arbitrary group ids to 0..G−1 and check every group has at least two responses.

    Args:
        group_ids: (N,) integer group id per response (need not be contiguous or sorted).

    Returns:
        inverse (N,) long in [0, G) and counts (G,) long.
    """
    ids, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    single = counts < 2
    if bool(single.any()):
        gid = int(ids[single][0])
        raise ValueError(
            f"group {gid} has a single response; group-relative rewards need at least 2 responses per group "
            "(n_samples_per_prompt >= 2)"
        )
    return inverse, counts


def group_mean_std(values: Tensor, inverse: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group mean and unbiased std.

    Args:
        values: (N, K) float.
        inverse: (N,) group index in [0, G).
        counts: (G,) responses per group, all >= 2.

    Returns:
        mean (G, K) and std (G, K): μ_g = Σ_j v_j / n_g, σ_g = sqrt(Σ_j (v_j − μ_g)² / (n_g − 1)).
    """
    num_groups = counts.numel()
    n = counts.to(values.dtype).unsqueeze(-1)
    mean = values.new_zeros(num_groups, values.shape[1]).index_add_(0, inverse, values) / n
    centered = values - mean[inverse]
    var = values.new_zeros(num_groups, values.shape[1]).index_add_(0, inverse, centered.square()) / (n - 1)
    return mean, var.sqrt()


def group_zscore(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-objective z-score inside each group: r̃_ijk = (r_ijk − μ_ik) / (σ_ik + ε).

    A NaN entry is a missing objective (the ``skip_objective`` failure policy): μ and σ are taken over the
    present entries of the group, and r̃ stays NaN there.

    Args:
        rewards: (N, K) float raw rewards, NaN where missing.
        group_ids: (N,) integer group ids.
        eps: ε.

    Returns:
        (N, K) r̃; exactly 0 where objective k is constant within the group (or present fewer than twice).
    """
    inverse, counts = group_index(group_ids)
    present = ~torch.isnan(rewards)
    if bool(present.all()):
        mean, std = group_mean_std(rewards, inverse, counts)
        constant = _group_constant(rewards, inverse, counts.numel())
        z = (rewards - mean[inverse]) / (std[inverse] + eps)
        return torch.where(constant[inverse], torch.zeros_like(z), z)
    shape = (counts.numel(), rewards.shape[1])
    filled = torch.where(present, rewards, torch.zeros_like(rewards))
    n = rewards.new_zeros(shape).index_add_(0, inverse, present.to(rewards.dtype))
    mean = rewards.new_zeros(shape).index_add_(0, inverse, filled) / n.clamp(min=1)
    centered = torch.where(present, rewards - mean[inverse], torch.zeros_like(rewards))
    std = (rewards.new_zeros(shape).index_add_(0, inverse, centered.square()) / (n - 1).clamp(min=1)).sqrt()
    constant = _group_constant(torch.where(present, rewards, mean[inverse]), inverse, counts.numel()) | (n < 2)
    z = (rewards - mean[inverse]) / (std[inverse] + eps)
    z = torch.where(constant[inverse], torch.zeros_like(z), z)
    return torch.where(present, z, torch.full_like(z, float("nan")))


def _group_constant(rewards: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    """(G, K) bool: objective k takes one value in group g. Exact (max == min): a float mean of equal values can
    miss them by one ulp."""
    idx = inverse.unsqueeze(-1).expand_as(rewards)
    shape = (num_groups, rewards.shape[1])
    gmax = rewards.new_full(shape, float("-inf")).scatter_reduce(0, idx, rewards, reduce="amax")
    gmin = rewards.new_full(shape, float("inf")).scatter_reduce(0, idx, rewards, reduce="amin")
    return gmax == gmin


def scalarize(weights: Tensor, values: Tensor) -> Tensor:
    """R_i = Σ_k w_ik v_ik over the present (non-NaN) entries, the weights renormalized to their full sum:
    R_i = (Σ_k w_ik / Σ_{k present} w_ik) · Σ_{k present} w_ik v_ik (TRL skips a missing reward the same way,
    without the renormalization). A row with every entry missing gives NaN; present weights summing to 0 give 0.

    Args:
        weights: (K,) or (N, K).
        values: (N, K), NaN where missing.
    """
    present = ~torch.isnan(values)
    weights = weights.expand_as(values)
    if bool(present.all()):
        return (weights * values).sum(-1)
    kept = torch.where(present, weights, torch.zeros_like(weights))
    kept_sum = kept.sum(-1)
    partial = (kept * torch.where(present, values, torch.zeros_like(values))).sum(-1)
    scale = torch.where(kept_sum != 0, weights.sum(-1) / torch.where(kept_sum != 0, kept_sum, 1), 0)
    out = partial * scale
    return torch.where(present.any(-1), out, torch.full_like(out, float("nan")))


# OpenRLHF's advantage estimators that are relative to the prompt's group (experience_maker.py 273-285).
GROUP_ESTIMATORS = ("group_norm", "dr_grpo", "rloo", "reinforce_baseline")


def group_advantages(rewards: Tensor, group_ids: Tensor, estimator: str = "group_norm", eps: float = 1e-9) -> Tensor:
    """(N,) scalar rewards R -> (N,) float32 advantage of each response as OpenRLHF 0.11.2's estimator forms it.

        group_norm:                  Â = (R − μ_g) / (σ_g + 1e-9)    (unbiased σ, like torch.std)
        dr_grpo, reinforce_baseline: Â = R − μ_g
        rloo:                        Â = R − (Σ_g R − R) / (n_g − 1)

    OpenRLHF reshapes to (-1, n_samples_per_prompt); this takes explicit group ids, so it also works for
    unsorted or unequal groups. Computed in float64.
    """
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"advantage estimator {estimator!r} is not group-relative; use one of {GROUP_ESTIMATORS}")
    inverse, counts = group_index(group_ids)
    r = rewards.detach().double().reshape(-1, 1)
    mean, std = group_mean_std(r, inverse, counts)
    if estimator == "group_norm":
        out = (r - mean[inverse]) / (std[inverse] + eps)
    elif estimator == "rloo":
        n = counts.double().unsqueeze(-1)[inverse]
        out = r - (mean[inverse] * n - r) / (n - 1)
    else:
        out = r - mean[inverse]
    return out.squeeze(-1).float()


def group_norm(rewards: Tensor, group_ids: Tensor, eps: float = 1e-9) -> Tensor:
    """Reference GRPO advantage, equal to OpenRLHF 0.11.2's group_norm: Â_ij = (R_ij − mean_i R) / (std_i R + 1e-9)."""
    return group_advantages(rewards, group_ids, "group_norm", eps)


class RunningMeanStd:
    """Running per-objective mean/variance over all rows seen (Chan et al. parallel Welford, float64).

    State: count n, mean μ (K,), M2 (K,) = Σ (x − μ)²; unbiased var = M2 / (n − 1).
    """

    def __init__(self, num_objectives: int) -> None:
        self.count = 0
        self.mean = torch.zeros(num_objectives, dtype=torch.float64)
        self.m2 = torch.zeros(num_objectives, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        """Merge a batch x (N, K) into the running statistics."""
        x = x.to(torch.float64)
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = (x - mean_b).square().sum(0)
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * n_b / total)
        self.count = total

    @property
    def std(self) -> Tensor:
        """(K,) unbiased running std (0 until two rows were seen)."""
        if self.count < 2:
            return torch.zeros_like(self.m2)
        return (self.m2 / (self.count - 1)).sqrt()

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["mean"].shape != self.mean.shape:
            raise ValueError(
                f"running stats are for {state['mean'].numel()} objectives, this normalizer has {self.mean.numel()}"
            )
        self.count = int(state["count"])
        self.mean = state["mean"].to(torch.float64).clone()
        self.m2 = state["m2"].to(torch.float64).clone()


class ObjectiveNormalizer:
    """r (N, K) -> r̃ (N, K) by `mode` in {'group', 'batch', 'none'} (see the module docstring)."""

    def __init__(self, mode: str, num_objectives: int, eps: float = 1e-6) -> None:
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {mode!r}")
        self.mode = mode
        self.eps = eps
        self.running = RunningMeanStd(num_objectives) if mode == "batch" else None

    def __call__(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Args: rewards (N, K) float (NaN: missing; ``group`` and ``none`` only), group_ids (N,) int.
        Returns r̃ (N, K), same dtype as rewards, NaN where missing."""
        if self.mode == "group":
            return group_zscore(rewards, group_ids, self.eps)
        if self.mode == "none":
            return rewards
        assert self.running is not None
        if bool(torch.isnan(rewards).any()):
            raise ValueError(
                "missing objectives (the skip_objective failure policy) need normalization 'group' or 'none'; "
                "the running statistics of 'batch' count every objective in every row"
            )
        self.running.update(rewards)
        std = self.running.std
        z = (rewards.to(torch.float64) - self.running.mean) / (std + self.eps)
        # An objective that never varied so far (M2 == 0) carries no signal: 0, not noise / eps.
        z = torch.where(self.running.m2 > 0, z, torch.zeros_like(z))
        return z.to(rewards.dtype)

    def state_dict(self) -> dict:
        return {"mode": self.mode, "running": None if self.running is None else self.running.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"normalizer state is for mode {state['mode']!r}, this normalizer uses {self.mode!r}")
        if self.running is not None:
            self.running.load_state_dict(state["running"])
