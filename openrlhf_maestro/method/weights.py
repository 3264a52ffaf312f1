"""The action -> reward-weights map of MAESTRO.

    w(a) = (1 − β)·w_prior + β·e_a                         (discrete emphasis action a ∈ {0..K−1})
    w(s) = (1 − β)·w_prior + β·s                           (s on the simplex; s = e_a in discrete mode)

The paper leaves the map open. With β < 1 every objective keeps at least (1 − β)·w_prior_k of the
weight, so no objective is ever dropped for a response; with the default β = 0.5 and a uniform prior
over K = 5 objectives the emphasized objective gets 0.6 and every other one 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_BETA = 0.5


def validate_prior(prior: Sequence[float] | Tensor | None, num_objectives: int) -> Tensor:
    """Check w_prior and return it normalized to the simplex.

    Args:
        prior: K non-negative finite weights, or None for uniform 1/K.
        num_objectives: K.

    Returns:
        (K,) float32 tensor, entries >= 0, summing to 1 (w_prior / Σ_k w_prior_k).
    """
    if num_objectives < 1:
        raise ValueError(f"need at least one objective, got K={num_objectives}")
    if prior is None:
        return torch.full((num_objectives,), 1.0 / num_objectives)
    values = [float(v) for v in (prior.tolist() if isinstance(prior, Tensor) else prior)]
    if len(values) != num_objectives:
        raise ValueError(f"prior must have one weight per objective (K={num_objectives}), got {len(values)}: {values}")
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"prior[{i}] must be a finite number >= 0, got {v}")
    total = sum(values)
    if total <= 0:
        raise ValueError(f"prior must have a positive sum, got {values}")
    return torch.tensor([v / total for v in values], dtype=torch.float32)


def emphasis_weights(emphasis: Tensor, prior: Tensor, beta: float) -> Tensor:
    """w = (1 − β)·w_prior + β·s.

    Args:
        emphasis: (N, K) points s on the simplex (one-hot e_a, or a Dirichlet sample).
        prior: (K,) w_prior on the simplex.
        beta: β in [0, 1].

    Returns:
        (N, K) weights, each row on the simplex.
    """
    return (1.0 - beta) * prior + beta * emphasis


def weight_matrix(prior: Tensor, beta: float) -> Tensor:
    """Row a is w(a) = (1 − β)·w_prior + β·e_a.

    Args:
        prior: (K,) w_prior.
        beta: β.

    Returns:
        (K, K) matrix M with M[a] = w(a).
    """
    return emphasis_weights(torch.eye(prior.numel(), dtype=prior.dtype, device=prior.device), prior, beta)


def action_weights(actions: Tensor, prior: Tensor, beta: float) -> Tensor:
    """Vectorized w(a_n) for discrete actions.

    Args:
        actions: (N,) long, values in [0, K).
        prior: (K,) w_prior.
        beta: β.

    Returns:
        (N, K) weights w(a_n).
    """
    return weight_matrix(prior, beta)[actions]
