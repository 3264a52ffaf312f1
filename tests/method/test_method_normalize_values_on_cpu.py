"""Normalization and advantages against values worked out by hand: the ε of each z-score, groups with exactly two
present entries, a constant group whose float mean misses its value, the estimators' defaults, the running
statistics' float64 precision and state, and the messages that name the bad value."""

from __future__ import annotations

import math
import re

import pytest
import torch

from openrlhf_maestro.method import ObjectiveNormalizer, RunningMeanStd, group_advantages, group_norm, group_zscore

NAN = float("nan")
SQRT2 = math.sqrt(2.0)


def test_group_zscore_divides_by_sigma_plus_the_given_eps() -> None:
    """ε = 0.5 is far above float error: (r − μ) / (σ + ε) with σ unbiased, by hand."""
    rewards = torch.tensor([[1.0, 10.0], [3.0, 10.0], [2.0, 4.0], [6.0, 0.0]])
    z = group_zscore(rewards, torch.tensor([0, 0, 1, 1]), eps=0.5)
    # Group 0, objective 0: 1, 3 -> μ = 2, σ = √2. Group 1: 2, 6 -> μ = 4, σ = √8; objective 1: 4, 0 -> μ = 2, σ = √8.
    expected = [
        [-1 / (SQRT2 + 0.5), 0.0],
        [1 / (SQRT2 + 0.5), 0.0],
        [-2 / (math.sqrt(8) + 0.5), 2 / (math.sqrt(8) + 0.5)],
        [2 / (math.sqrt(8) + 0.5), -2 / (math.sqrt(8) + 0.5)],
    ]
    assert z.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_group_zscore_with_missing_entries_by_hand() -> None:
    """The NaN-aware path: μ and σ over the present entries of each group, with ε = 0.5.

    group 0 (rows 0-2): objective 0 is 1, 3, missing: two present, μ = 2, σ = √2 (divisor n − 1 = 1);
                        objective 1 is 0.9 three times: constant, exactly 0 (a float32 mean of three 0.9 is one
                        ulp off 0.9, so only the exact constant test gives 0).
    group 1 (rows 3-5): objective 0 is 2, 4, 9: μ = 5, σ = √((9 + 1 + 16) / 2) = √13;
                        objective 1 is missing, 0.5, missing: one present value, 0.
    """
    rewards = torch.tensor([[1.0, 0.9], [3.0, 0.9], [NAN, 0.9], [2.0, NAN], [4.0, 0.5], [9.0, NAN]])
    z = group_zscore(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), eps=0.5)
    s13 = math.sqrt(13.0) + 0.5
    assert z[:, 0].tolist()[:2] == pytest.approx([-1 / (SQRT2 + 0.5), 1 / (SQRT2 + 0.5)], abs=1e-6)
    assert math.isnan(z[2, 0].item())
    assert z[3:, 0].tolist() == pytest.approx([-3 / s13, -1 / s13, 4 / s13], abs=1e-6)
    assert z[:3, 1].tolist() == [0.0, 0.0, 0.0]
    assert z[4, 1].item() == 0.0 and math.isnan(z[3, 1].item()) and math.isnan(z[5, 1].item())


def test_group_advantages_default_to_group_norm_and_use_the_given_eps() -> None:
    r = torch.tensor([1.0, 3.0, 2.0, 6.0])
    ids = torch.tensor([0, 0, 1, 1])
    by_hand = [-1 / (SQRT2 + 0.5), 1 / (SQRT2 + 0.5), -2 / (math.sqrt(8) + 0.5), 2 / (math.sqrt(8) + 0.5)]
    assert group_advantages(r, ids, eps=0.5).tolist() == pytest.approx(by_hand, abs=1e-6)
    assert group_norm(r, ids, eps=0.5).tolist() == pytest.approx(by_hand, abs=1e-6)
    default = [-1 / (SQRT2 + 1e-9), 1 / (SQRT2 + 1e-9), -2 / (math.sqrt(8) + 1e-9), 2 / (math.sqrt(8) + 1e-9)]
    assert group_advantages(r, ids).tolist() == pytest.approx(default, abs=1e-6)  # the estimator is group_norm
    # rloo: Â = R − mean of the others; unequal groups (3 and 2): 1 − (3 + 5)/2, 3 − 3, 5 − 2; 2 − 6, 6 − 2.
    rloo = group_advantages(torch.tensor([1.0, 3.0, 5.0, 2.0, 6.0]), torch.tensor([0, 0, 0, 1, 1]), "rloo")
    assert rloo.tolist() == pytest.approx([-3.0, 0.0, 3.0, -4.0, 4.0]) and rloo.dtype == torch.float32
    message = (
        "advantage estimator 'gae' is not group-relative; use one of "
        "('group_norm', 'dr_grpo', 'rloo', 'reinforce_baseline')"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        group_advantages(r, ids, "gae")


def test_running_statistics_are_float64_from_float32_input_and_from_a_float32_state() -> None:
    """A float32 batch is merged in float64: 1001 rows of 3000 + k/1000 (float32-rounded) have a float64 mean
    that a float32 sum misses by far more than 1e-9."""
    x = (3000.0 + torch.arange(1001, dtype=torch.float64) / 1000).float().unsqueeze(-1)
    exact = math.fsum(x.double().squeeze(-1).tolist()) / 1001
    stats = RunningMeanStd(1)
    assert stats.mean.dtype == stats.m2.dtype == torch.float64  # before any update too (it is the state)
    stats.update(x)
    assert abs(float(stats.mean[0]) - exact) < 1e-9
    var = math.fsum((v - exact) ** 2 for v in x.double().squeeze(-1).tolist()) / 1000
    assert float(stats.std[0]) == pytest.approx(math.sqrt(var), rel=1e-9)
    # A state holding float32 tensors is brought back to float64.
    resumed = RunningMeanStd(1)
    resumed.load_state_dict({"count": 2, "mean": torch.tensor([1.5]), "m2": torch.tensor([0.5])})
    assert resumed.mean.dtype == resumed.m2.dtype == torch.float64 and resumed.count == 2
    assert resumed.std.tolist() == [math.sqrt(0.5)]


def test_state_of_another_size_or_mode_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"^running stats are for 2 objectives, this normalizer has 3$"):
        RunningMeanStd(3).load_state_dict(RunningMeanStd(2).state_dict())
    with pytest.raises(ValueError, match=r"^normalizer state is for mode 'group', this normalizer uses 'batch'$"):
        ObjectiveNormalizer("batch", 2).load_state_dict(ObjectiveNormalizer("group", 2).state_dict())
    with pytest.raises(ValueError, match=r"^normalization must be one of \['group', 'batch', 'none'\], got 'rank'$"):
        ObjectiveNormalizer("rank", 2)


def test_batch_normalization_uses_its_eps_and_the_statistics_of_every_batch_so_far() -> None:
    """ε = 0.5; objective 0: after batches [1, 3] and [5, 7] the running μ = 4, σ = √(20/3) over all four rows.
    Objective 1 varies little (0.1, 0.3: Σ(x − μ)² = 0.02), which is still a signal: (x − 0.2) / (σ + ε), σ = √0.02."""
    normalizer = ObjectiveNormalizer("batch", 2, eps=0.5)
    ids = torch.tensor([0, 0])
    first = normalizer(torch.tensor([[1.0, 0.1], [3.0, 0.3]]), ids)
    assert first[:, 0].tolist() == pytest.approx([-1 / (SQRT2 + 0.5), 1 / (SQRT2 + 0.5)], abs=1e-6)
    small = math.sqrt(0.02) + 0.5
    assert first[:, 1].tolist() == pytest.approx([-0.1 / small, 0.1 / small], abs=1e-6)
    second = normalizer(torch.tensor([[5.0, 0.2], [7.0, 0.2]]), ids)
    sigma = math.sqrt(20 / 3) + 0.5
    assert second[:, 0].tolist() == pytest.approx([1 / sigma, 3 / sigma], abs=1e-6)
    assert second.dtype == torch.float32


def test_only_batch_mode_keeps_running_statistics_and_missing_entries_need_another_mode() -> None:
    for mode in ("group", "none"):
        assert ObjectiveNormalizer(mode, 2).state_dict() == {"mode": mode, "running": None}
    message = (
        "missing objectives (the skip_objective failure policy) need normalization 'group' or 'none'; "
        "the running statistics of 'batch' count every objective in every row"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ObjectiveNormalizer("batch", 1)(torch.tensor([[1.0], [NAN]]), torch.tensor([0, 0]))


def test_a_group_of_one_is_named_with_the_fix() -> None:
    message = (
        "group 7 has a single response; group-relative rewards need at least 2 responses per group "
        "(n_samples_per_prompt >= 2)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        group_zscore(torch.ones(3, 1), torch.tensor([2, 2, 7]))
