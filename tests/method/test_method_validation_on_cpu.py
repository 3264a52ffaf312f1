"""Every validation error names the bad value (objective, row, group, expected vs got shape)."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.method import (
    GDPOAggregator,
    MaestroAggregator,
    MaestroConfig,
    RandomEmphasisAggregator,
    SumAggregator,
    validate_prior,
)

AGGREGATORS = {
    "sum": SumAggregator,
    "gdpo": GDPOAggregator,
    "maestro": MaestroAggregator,
    "random": RandomEmphasisAggregator,
}


@pytest.fixture(params=list(AGGREGATORS))
def agg(request, objectives):
    return AGGREGATORS[request.param](objectives)


def test_wrong_reward_shape(agg, make_batch) -> None:
    r, g, h = make_batch()
    with pytest.raises(ValueError, match=r"rewards must have shape \(N, K\) = \(N, 3\) .*got \(16, 2\)"):
        agg.aggregate(r[:, :2], g, h)
    with pytest.raises(ValueError, match=r"got \(16,\)"):
        agg.aggregate(r[:, 0], g, h)


def test_non_finite_reward_names_objective_and_row(agg, make_batch) -> None:
    r, g, h = make_batch()
    r[5, 2] = float("nan")
    with pytest.raises(ValueError, match=r"reward 'length' \(objective 2\) is not finite at row 5: nan"):
        agg.aggregate(r, g, h)
    r[5, 2] = 0.0
    r[9, 1] = float("-inf")
    with pytest.raises(ValueError, match=r"reward 'format' \(objective 1\) is not finite at row 9: -inf"):
        agg.aggregate(r, g, h)


def test_group_ids_length_mismatch_and_dtype(agg, make_batch) -> None:
    r, g, h = make_batch()
    with pytest.raises(ValueError, match=r"group_ids must have shape \(N,\) = \(16,\) to match rewards, got \(12,\)"):
        agg.aggregate(r, g[:12], h)
    with pytest.raises(ValueError, match=r"group_ids must be an integer tensor, got torch.float32"):
        agg.aggregate(r, g.float(), h)


def test_group_of_size_one_names_group(agg, make_batch) -> None:
    r, g, h = make_batch()
    g = g.clone()
    g[-1] = 41
    if not agg.needs_groups(agg.options):  # sum reads no group statistics: PPO's one response per prompt is fine
        assert agg.aggregate(r, g, h).rewards.shape == (r.shape[0],)
        return
    with pytest.raises(ValueError, match=r"group 41 has a single response"):
        agg.aggregate(r, g, h)


def test_hidden_errors(make_batch, objectives) -> None:
    r, g, h = make_batch()
    agg = MaestroAggregator(objectives)
    with pytest.raises(ValueError, match=r"'maestro' aggregator needs hidden states of shape \(N, H\) = \(16, H\)"):
        agg.aggregate(r, g)
    with pytest.raises(
        ValueError, match=r"hidden must have shape \(N, H\) = \(16, H\) to match rewards, got \(15, 8\)"
    ):
        agg.aggregate(r, g, h[:15])
    h = h.clone()
    h[7, 3] = float("inf")
    with pytest.raises(ValueError, match=r"hidden state is not finite at row 7"):
        agg.aggregate(r, g, h)
    agg.aggregate(r, g, torch.randn(16, 8))
    with pytest.raises(ValueError, match=r"hidden width H=4 does not match the Conductor's hidden_size=8"):
        agg.aggregate(r, g, torch.randn(16, 4))
    with pytest.raises(ValueError, match=r"advantages must have shape \(N,\) = \(16,\) .*got \(16, 1\)"):
        agg.feedback(torch.zeros(16, 1))


def test_objective_and_weight_count_mismatch(objectives) -> None:
    with pytest.raises(ValueError, match=r"weights must have one entry per objective \(K=3: .*got 2"):
        SumAggregator(objectives, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"weights must be finite"):
        GDPOAggregator(objectives, weights=[1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match=r"prior must have one weight per objective \(K=3\), got 2"):
        MaestroAggregator(objectives, prior=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"distinct non-empty strings"):
        SumAggregator(["a", "a"])
    with pytest.raises(ValueError, match=r"'maestro' aggregator has no options \['temperature'\]; it reads \['tau'"):
        MaestroAggregator(objectives, temperature=0.5)
    with pytest.raises(ValueError, match=r"min_prob=0.4 is out of range for K=3 objectives.*< 0.333333"):
        MaestroAggregator(objectives, min_prob=0.4)


def test_prior_validation() -> None:
    with pytest.raises(ValueError, match=r"prior\[1\] must be a finite number >= 0, got -1.0"):
        validate_prior([1.0, -1.0], 2)
    with pytest.raises(ValueError, match=r"positive sum"):
        validate_prior([0.0, 0.0], 2)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("tau", 0.0, r"tau must be a finite number > 0, got 0.0"),
        ("min_prob", 1.0, r"min_prob must be in \[0, 1\)"),
        ("lr", -1.0, r"lr must be a finite number > 0, got -1.0"),
        ("update_every", 0, r"update_every must be an integer >= 1, got 0"),
        ("meta_steps", 1.5, r"meta_steps must be an integer >= 1, got 1.5"),
        ("entropy_coef", -0.1, r"entropy_coef must be a finite number >= 0"),
        ("grad_clip", 0.0, r"grad_clip must be a finite number > 0 or None"),
        ("beta", 1.5, r"beta must be in \[0, 1\], got 1.5"),
        ("prior", [1.0, -2.0], r"prior\[1\] must be a finite number >= 0, got -2.0"),
        ("normalization", "zscore", r"normalization must be one of \['group', 'batch', 'none'\], got 'zscore'"),
        ("mode", "gaussian", r"mode must be one of \['discrete', 'dirichlet'\], got 'gaussian'"),
        ("hidden_sizes", (8, 0), r"hidden_sizes entries must be integers >= 1, got \[8, 0\]"),
        ("input_norm", "layer", r"input_norm must be one of \['rms', 'none'\]"),
        ("concentration_eps", 0.0, r"concentration_eps must be a finite number > 0"),
        ("seed", "x", r"seed must be an int"),
    ],
)
def test_config_errors_name_value_and_range(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaestroConfig(**{field: value})


def test_config_to_dict_is_plain() -> None:
    d = MaestroConfig(hidden_sizes=(4,), prior=(1, 2)).to_dict()
    assert d["hidden_sizes"] == [4] and d["prior"] == [1.0, 2.0]
