"""Shared helpers for the method tests (pure torch, CPU, small sizes)."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.method import MaestroAggregator, group_norm

OBJECTIVES = ["correct", "format", "length"]


def make_batch(
    num_groups: int = 4, group_size: int = 4, num_objectives: int = 3, hidden_size: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rewards (N, K), group_ids (N,) contiguous like OpenRLHF, hidden (N, H)."""
    gen = torch.Generator().manual_seed(seed)
    n = num_groups * group_size
    rewards = torch.randn(n, num_objectives, generator=gen)
    group_ids = torch.arange(n) // group_size
    hidden = torch.randn(n, hidden_size, generator=gen)
    return rewards, group_ids, hidden


def force_action(agg: MaestroAggregator, action: int) -> None:
    """Make the Conductor pick `action` with probability 1 (needs min_prob=0): zero weights, bias 1e4 on it."""
    layer = agg.conductor.output_layer
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.bias[action] = 1e4


def cycle(agg: MaestroAggregator, seed: int, **batch_kwargs: int) -> tuple[torch.Tensor, dict]:
    """One aggregate -> group_norm -> feedback round; returns (R, feedback metrics)."""
    rewards, group_ids, hidden = make_batch(seed=seed, **batch_kwargs)
    out = agg.aggregate(rewards, group_ids, hidden)
    return out.rewards, agg.feedback(group_norm(out.rewards, group_ids))


@pytest.fixture
def objectives() -> list[str]:
    return list(OBJECTIVES)


# Helpers are handed out as fixtures so test files never import conftest (robust to any --import-mode).
@pytest.fixture(name="make_batch")
def _make_batch_fixture():
    return make_batch


@pytest.fixture(name="force_action")
def _force_action_fixture():
    return force_action


@pytest.fixture(name="cycle")
def _cycle_fixture():
    return cycle


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy neighbour's CPU load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
