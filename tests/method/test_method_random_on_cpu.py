"""The `random` ablation: MAESTRO's weights map and normalization with uniform actions, no Conductor."""

from __future__ import annotations

import io

import pytest
import torch

from openrlhf_maestro.method import (
    MaestroAggregator,
    RandomEmphasisAggregator,
    build_aggregator,
    group_zscore,
    weight_matrix,
)


def test_rewards_are_the_emphasis_weights_times_group_zscores(make_batch, objectives) -> None:
    r, g, _ = make_batch(num_groups=50, group_size=4)
    agg = RandomEmphasisAggregator(objectives, weights=[2.0, 1.0, 1.0], beta=0.5)
    out = agg.aggregate(r, g)
    rows = weight_matrix(torch.tensor([0.5, 0.25, 0.25]), 0.5)
    # Every response got one row of w(a) (its action) and R = Σ_k w_k r̃_k with the group z-score.
    matches = (out.weights.unsqueeze(1) - rows.unsqueeze(0)).abs().amax(-1) < 1e-6  # (N, K)
    assert bool((matches.sum(-1) == 1).all())
    assert torch.allclose(out.rewards, (out.weights * group_zscore(r, g)).sum(-1), atol=1e-6)
    # Uniform actions: with 200 draws each of the 3 actions is picked between 20 % and 47 % of the time.
    share = matches.float().mean(0)
    assert bool(((share > 0.2) & (share < 0.47)).all()), share
    keys = {f"{kind}/{n}" for kind in ("reward", "aggregator/weight", "aggregator/emphasis") for n in objectives}
    assert set(out.metrics) == keys
    # The logs count what was drawn: each action's share and the mean weight, named neutrally (not maestro/*).
    mean_w = out.weights.mean(0)
    for k, name in enumerate(objectives):
        assert out.metrics[f"aggregator/emphasis/{name}"] == pytest.approx(float(share[k]))
        assert out.metrics[f"aggregator/weight/{name}"] == pytest.approx(float(mean_w[k]))


def test_ignores_hidden_and_advantages_and_is_seeded(make_batch, objectives) -> None:
    r, g, h = make_batch()
    a = RandomEmphasisAggregator(objectives, seed=3)
    b = build_aggregator("random", objectives, seed=3)
    assert torch.equal(a.aggregate(r, g, h).rewards, b.aggregate(r, g).rewards)
    assert a.feedback(torch.zeros(16)) == {}
    other = RandomEmphasisAggregator(objectives, seed=4)
    draws = [other.aggregate(r, g).weights for _ in range(3)]
    mine = [a.aggregate(r, g).weights for _ in range(3)]
    assert any(not torch.equal(x, y) for x, y in zip(draws, mine, strict=True))


def test_resume_draws_the_same_actions_after_a_weights_only_round_trip(make_batch, objectives) -> None:
    r, g, _ = make_batch()
    run = RandomEmphasisAggregator(objectives, normalization="batch", seed=1)
    run.aggregate(r, g)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    buffer.seek(0)
    resumed = RandomEmphasisAggregator(objectives, normalization="batch", seed=99)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for seed in (5, 6):
        r2, g2, _ = make_batch(seed=seed)
        assert torch.equal(run.aggregate(r2, g2).rewards, resumed.aggregate(r2, g2).rewards)


def test_bad_options_and_foreign_state_are_refused(objectives) -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\], got 1.5"):
        RandomEmphasisAggregator(objectives, beta=1.5)
    with pytest.raises(ValueError, match=r"prior\[1\] must be a finite number >= 0, got -1.0"):
        RandomEmphasisAggregator(objectives, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="normalization must be one of"):
        RandomEmphasisAggregator(objectives, normalization="rank")
    maestro_state = MaestroAggregator(objectives).state_dict()
    with pytest.raises(ValueError, match="saved by the 'maestro' aggregator, not 'random'"):
        RandomEmphasisAggregator(objectives).load_state_dict(maestro_state)
