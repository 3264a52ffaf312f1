"""Group statistics, GRPO group_norm reference, per-objective normalization modes."""

from __future__ import annotations

import torch

from openrlhf_maestro.method import ObjectiveNormalizer, RunningMeanStd, group_norm, group_zscore


def openrlhf_group_norm(rewards: torch.Tensor, n_samples_per_prompt: int) -> torch.Tensor:
    """OpenRLHF 0.11.2 experience_maker.py, verbatim."""
    rewards = rewards.reshape(-1, n_samples_per_prompt)
    rewards = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)
    return rewards.flatten()


def test_group_norm_matches_openrlhf() -> None:
    r = torch.randn(32, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(32) // 8
    assert torch.allclose(group_norm(r, ids), openrlhf_group_norm(r, 8), atol=1e-6)


def test_group_norm_unsorted_ids_equal_sorted() -> None:
    r = torch.randn(12)
    ids = torch.arange(12) // 4
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(group_norm(r[perm], ids[perm] * 10 + 3), group_norm(r, ids)[perm], atol=1e-6)


def test_group_zscore_per_objective_and_constant_is_zero() -> None:
    r = torch.tensor([[1.0, 0.1, 5.0], [2.0, 0.1, 5.0], [3.0, 0.1, 7.0], [4.0, 0.1, 5.0]])
    ids = torch.tensor([0, 0, 1, 1])
    z = group_zscore(r, ids, eps=1e-6)
    # Group 0, objective 0: values 1, 2 -> μ = 1.5, unbiased σ = sqrt(0.5), z = ±0.5 / (σ + ε).
    half = 0.5 / (0.5**0.5 + 1e-6)
    assert torch.allclose(z[:, 0], torch.tensor([-half, half, -half, half]), atol=1e-6)
    assert torch.equal(z[:, 1], torch.zeros(4))  # 0.1 constant everywhere: exactly 0
    assert torch.equal(z[:2, 2], torch.zeros(2))  # constant in group 0 only
    assert float(z[2, 2]) > 0 > float(z[3, 2])


def test_running_mean_std_equals_full_data_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 3, generator=gen) * 3 + 1 for n in (5, 17, 2, 40)]
    rms = RunningMeanStd(3)
    for c in chunks:
        rms.update(c)
    full = torch.cat(chunks).double()
    assert rms.count == full.shape[0]
    assert torch.allclose(rms.mean, full.mean(0))
    assert torch.allclose(rms.std, full.std(0))


def test_batch_mode_uses_running_stats_and_roundtrips() -> None:
    a = ObjectiveNormalizer("batch", 2)
    ids = torch.arange(8) // 2
    x1 = torch.randn(8, 2)
    x1[:, 1] = 3.0
    z1 = a(x1, ids)
    assert torch.allclose(z1[:, 0], ((x1[:, 0] - x1[:, 0].mean()) / (x1[:, 0].std() + 1e-6)), atol=1e-5)
    assert torch.equal(z1[:, 1], torch.zeros(8))  # constant so far -> 0
    b = ObjectiveNormalizer("batch", 2)
    b.load_state_dict(a.state_dict())
    x2 = torch.randn(8, 2)
    assert torch.equal(a(x2, ids), b(x2, ids))


def test_none_mode_is_identity() -> None:
    x = torch.randn(6, 2)
    assert torch.equal(ObjectiveNormalizer("none", 2)(x, torch.arange(6) // 3), x)
