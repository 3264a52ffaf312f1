"""The skip_objective failure policy in the method library: a NaN objective is left out of its response's R."""

from __future__ import annotations

import math

import pytest
import torch

from openrlhf_maestro.method import GDPOAggregator, MaestroAggregator, RandomEmphasisAggregator, SumAggregator
from openrlhf_maestro.method.normalize import ObjectiveNormalizer, group_zscore, scalarize

NAN = float("nan")


def test_scalarize_leaves_missing_entries_out_and_renormalizes_the_rest():
    weights = torch.tensor([2.0, 1.0, 1.0])
    values = torch.tensor([[1.0, 2.0, 3.0], [1.0, NAN, 3.0], [NAN, NAN, NAN], [NAN, 5.0, NAN]])
    out = scalarize(weights, values)
    assert out[0].item() == 2 + 2 + 3  # nothing missing: the plain weighted sum
    assert out[1].item() == pytest.approx((2 * 1 + 1 * 3) * 4 / 3)  # weights 2 and 1 of 4 present
    assert math.isnan(out[2].item())  # all missing: the integration gives this response zero advantage
    assert out[3].item() == pytest.approx(5.0 * 4)
    per_row = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    out = scalarize(per_row, values)
    assert out[1].item() == 0.0  # the only weighted objective is missing: nothing to weigh
    assert out[3].item() == 0.0


def test_group_zscore_uses_the_present_entries_of_each_group():
    rewards = torch.tensor([[1.0, 4.0], [2.0, NAN], [3.0, 6.0], [NAN, 8.0], [5.0, 1.0], [5.0, NAN]])
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1])
    z = group_zscore(rewards, group_ids)
    first = torch.tensor([1.0, 2.0, 3.0])  # objective 0 of group 0 without the missing row
    expected = (first - first.mean()) / (first.std() + 1e-6)
    torch.testing.assert_close(z[:3, 0], expected)
    assert math.isnan(z[3, 0].item()) and math.isnan(z[1, 1].item()) and math.isnan(z[5, 1].item())
    assert z[4, 1].item() == 0.0  # one present value in its group: nothing to normalize against
    assert z[4, 0].item() == 0.0 and z[5, 0].item() == 0.0  # constant in its group
    # A missing entry in another group changes nothing here: the NaN-aware path gives the complete path's z-scores.
    complete = torch.tensor([[1.0, 4.0], [2.0, 0.0], [3.0, 6.0], [0.5, 8.0]])
    with_other = torch.cat([complete, torch.tensor([[NAN, 1.0], [2.0, 3.0]])])
    by_group = group_zscore(with_other, torch.tensor([0, 0, 0, 0, 1, 1]))
    torch.testing.assert_close(by_group[:4], group_zscore(complete, group_ids[:4]))


@pytest.mark.parametrize("cls", [SumAggregator, GDPOAggregator, RandomEmphasisAggregator, MaestroAggregator])
def test_a_missing_objective_is_left_out_only_when_the_integration_allows_it(cls):
    torch.manual_seed(0)
    rewards = torch.rand(8, 3)
    rewards[1, 2] = NAN
    groups = torch.arange(8) // 4
    hidden = torch.randn(8, 16)
    aggregator = cls.build(["a", "b", "c"], None, {}, hidden_size=16)
    with pytest.raises(ValueError, match=r"reward 'c' \(objective 2\) is not finite at row 1"):
        aggregator.aggregate(rewards, groups, hidden)
    aggregator.accepts_missing = True  # the spec sets it under failure_policy skip_objective
    out = aggregator.aggregate(rewards, groups, hidden)
    assert bool(torch.isfinite(out.rewards).all())
    assert cls.handles_missing
    rewards[2, 0] = float("inf")  # an infinity is an error whatever the policy
    with pytest.raises(ValueError, match=r"reward 'a' \(objective 0\) is not finite at row 2: inf"):
        aggregator.aggregate(rewards, groups, hidden)


def test_sum_with_a_missing_objective_reweights_the_others():
    aggregator = SumAggregator(["a", "b"], [3.0, 1.0])
    aggregator.accepts_missing = True
    out = aggregator.aggregate(torch.tensor([[1.0, 2.0], [NAN, 2.0]]), torch.tensor([0, 1]))
    assert out.rewards.tolist() == [5.0, 8.0]  # 3 + 2; b alone carries the whole weight 4
    assert out.metrics["reward/a"] == 1.0  # the mean over the responses that have it


def test_batch_normalization_refuses_missing_objectives():
    normalizer = ObjectiveNormalizer("batch", 2)
    with pytest.raises(ValueError, match="need normalization 'group' or 'none'"):
        normalizer(torch.tensor([[1.0, NAN], [2.0, 3.0]]), torch.tensor([0, 0]))
