"""sum / gdpo / maestro aggregators: equivalences, metrics, registry."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.method import (
    GDPOAggregator,
    MaestroAggregator,
    RewardAggregator,
    SumAggregator,
    available_aggregators,
    build_aggregator,
    get_aggregator,
    group_norm,
    register_aggregator,
    weight_matrix,
)
from openrlhf_maestro.method import aggregation as aggregation_module


def test_sum_constant_rewards_trl_style() -> None:
    """TRL's check: constant rewards 1 and 0 with weights 0.7 and 0.3 give 0.7."""
    agg = SumAggregator(["a", "b"], weights=[0.7, 0.3])
    rewards = torch.tensor([[1.0, 0.0]]).repeat(8, 1)
    out = agg.aggregate(rewards, torch.arange(8) // 4)
    assert torch.allclose(out.rewards, torch.full((8,), 0.7))
    assert out.metrics == {"reward/a": 1.0, "reward/b": 0.0}
    assert agg.feedback(torch.zeros(8)) == {} and agg.state_dict() == {}


def test_sum_default_weights_are_ones(make_batch, objectives) -> None:
    r, g, _ = make_batch()
    assert torch.allclose(SumAggregator(objectives).aggregate(r, g).rewards, r.sum(-1))


def test_gdpo_equals_manual_group_zscore_then_weighted_sum(make_batch, objectives) -> None:
    r, g, _ = make_batch(num_groups=3, group_size=5)
    w = torch.tensor([1.0, 0.5, 2.0])
    manual = torch.zeros(r.shape[0])
    for k in range(3):
        col = r[:, k].reshape(3, 5)
        z = (col - col.mean(-1, keepdim=True)) / (col.std(-1, keepdim=True) + 1e-6)
        manual += w[k] * z.flatten()
    out = GDPOAggregator(objectives, weights=w.tolist()).aggregate(r, g)
    assert torch.allclose(out.rewards, manual, atol=1e-5)


@pytest.mark.parametrize("normalization,reference", [("none", "sum"), ("group", "gdpo")])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_frozen_deterministic_maestro_equals_static(
    make_batch, force_action, objectives, normalization: str, reference: str, beta: float
) -> None:
    """A Conductor that always picks action 1 equals the static aggregator with weights w(1)."""
    r, g, h = make_batch()
    agg = MaestroAggregator(objectives, hidden_size=h.shape[1], min_prob=0.0, beta=beta, normalization=normalization)
    force_action(agg, 1)
    w1 = weight_matrix(agg.conductor.prior, beta)[1]
    out = agg.aggregate(r, g, h)
    ref = build_aggregator(reference, objectives, weights=w1.tolist()).aggregate(r, g)
    assert torch.equal(out.rewards, ref.rewards)
    assert torch.equal(group_norm(out.rewards, g), group_norm(ref.rewards, g))
    assert out.metrics["aggregator/emphasis/format"] == 1.0
    assert out.metrics["maestro/entropy"] == 0.0
    assert out.metrics["aggregator/weight/format"] == pytest.approx(float(w1[1]))


def test_uniform_conductor_with_beta_zero_equals_sum_then_group_norm(make_batch, objectives) -> None:
    """β = 0: w(a) = w_prior whatever the Conductor does (here uniform): maestro == sum(1/K)."""
    r, g, h = make_batch()
    out = MaestroAggregator(objectives, beta=0.0, normalization="none").aggregate(r, g, h)
    ref = SumAggregator(objectives, weights=[1 / 3] * 3).aggregate(r, g)
    assert torch.allclose(group_norm(out.rewards, g), group_norm(ref.rewards, g), atol=1e-6)


def test_maestro_metric_keys(make_batch, objectives, cycle) -> None:
    r, g, h = make_batch()
    agg = MaestroAggregator(objectives)
    out = agg.aggregate(r, g, h)
    keys = {f"reward/{n}" for n in objectives}
    keys |= {f"aggregator/{kind}/{n}" for kind in ("weight", "emphasis") for n in objectives}
    assert set(out.metrics) == keys | {"maestro/entropy"}
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert sum(out.metrics[f"aggregator/emphasis/{n}"] for n in objectives) == pytest.approx(1.0)
    assert sum(out.metrics[f"aggregator/weight/{n}"] for n in objectives) == pytest.approx(1.0)
    fb = agg.feedback(group_norm(out.rewards, g))
    assert set(fb) == {"maestro/meta_loss", "maestro/grad_norm", "maestro/updates", "maestro/skipped_updates"}
    assert fb["maestro/updates"] == 1.0 and fb["maestro/skipped_updates"] == 0.0


def test_update_every_buffers_until_due(objectives, cycle) -> None:
    agg = MaestroAggregator(objectives, update_every=3)
    for i in range(1, 7):
        _, fb = cycle(agg, seed=i)
        assert fb["maestro/updates"] == float(i // 3)
        assert ("maestro/meta_loss" in fb) == (i % 3 == 0)


def test_dirichlet_maestro_runs(objectives, cycle) -> None:
    agg = MaestroAggregator(objectives, mode="dirichlet")
    _, fb = cycle(agg, seed=0)
    assert fb["maestro/updates"] == 1.0


def test_registry_names_and_unknown_name() -> None:
    assert {"sum", "gdpo", "maestro"} <= set(available_aggregators())
    assert get_aggregator("maestro") is MaestroAggregator and MaestroAggregator.needs_hidden
    assert not SumAggregator.needs_hidden and not GDPOAggregator.needs_hidden
    with pytest.raises(
        ValueError, match=r"unknown reward aggregator 'nope'; valid names: \[.*'gdpo'.*'maestro'.*'sum'"
    ):
        get_aggregator("nope")


def test_registry_reregister_same_ok_conflict_raises() -> None:
    try:
        register_aggregator("sum")(SumAggregator)  # same class: harmless
        assert get_aggregator("sum") is SumAggregator

        @register_aggregator("test_custom")
        class Custom(RewardAggregator):
            pass

        register_aggregator("test_custom")(Custom)
        with pytest.raises(ValueError, match=r"aggregator 'sum' is already registered to .*SumAggregator"):

            @register_aggregator("sum")
            class Other(RewardAggregator):
                pass
    finally:
        aggregation_module._AGGREGATORS.pop("test_custom", None)
    assert get_aggregator("sum") is SumAggregator


@pytest.mark.parametrize("mode", ["discrete", "dirichlet"])
def test_action_frequencies_count_every_action_of_a_mixed_policy(mode: str) -> None:
    """h = e_k picks action k (a head W = 1000·I, no floor): over rows whose chosen actions are counted by hand,
    aggregator/emphasis/<name> is each action's share and aggregator/weight/<name> the mean of
    w(a) = (1 − β)/K + β·e_a."""
    chosen = [0, 0, 1, 0, 2, 1, 0, 1]  # shares 4/8, 3/8, 1/8
    hidden = torch.eye(3)[chosen]
    agg = MaestroAggregator(["a", "b", "c"], hidden_size=3, min_prob=0.0, beta=0.5, mode=mode)
    with torch.no_grad():
        agg.conductor.output_layer.weight.copy_(1000.0 * torch.eye(3))
        agg.conductor.output_layer.bias.zero_()
    rewards = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    out = agg.aggregate(rewards, torch.arange(8) // 4, hidden)
    shares = {"a": 4 / 8, "b": 3 / 8, "c": 1 / 8}
    for name, share in shares.items():
        assert out.metrics[f"aggregator/emphasis/{name}"] == pytest.approx(share)
    if mode == "discrete":  # the drawn weights are exactly w(a); a Dirichlet draw is only near the vertex
        for name, share in shares.items():
            assert out.metrics[f"aggregator/weight/{name}"] == pytest.approx(0.5 / 3 + 0.5 * share, rel=1e-6)
