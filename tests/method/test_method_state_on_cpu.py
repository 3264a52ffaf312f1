"""Checkpoint round trip: a resumed aggregator samples and updates exactly as an uninterrupted one."""

from __future__ import annotations

import io

import pytest
import torch

from openrlhf_maestro.method import GDPOAggregator, MaestroAggregator, MaestroConfig, group_norm


def _params(agg: MaestroAggregator) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agg.conductor.parameters()]


def _run_pair(a: MaestroAggregator, b: MaestroAggregator, make_batch, seeds: range) -> None:
    for seed in seeds:
        r, g, h = make_batch(seed=seed)
        out_a, out_b = a.aggregate(r, g, h), b.aggregate(r, g, h)
        assert torch.equal(out_a.rewards, out_b.rewards)
        assert torch.equal(out_a.weights, out_b.weights)
        fb_a = a.feedback(group_norm(out_a.rewards, g))
        fb_b = b.feedback(group_norm(out_b.rewards, g))
        assert fb_a == fb_b
        for pa, pb in zip(_params(a), _params(b), strict=True):
            assert torch.equal(pa, pb)


def _weights_only_roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


CONFIGS = [
    MaestroConfig(update_every=2, meta_steps=2, lr=1e-2, seed=3),
    MaestroConfig(normalization="batch", hidden_sizes=(8,), lr=1e-2),
    MaestroConfig(mode="dirichlet", lr=1e-2, update_every=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["discrete", "batch-mlp", "dirichlet"])
@pytest.mark.parametrize("via_disk", [False, True], ids=["in-memory", "weights-only"])
def test_resume_matches_uninterrupted(make_batch, objectives, config: MaestroConfig, via_disk: bool) -> None:
    a = MaestroAggregator(objectives, config)
    for seed in range(3):  # 3 cycles: with update_every=2 or 3 the buffer is mid-period at the save
        r, g, h = make_batch(seed=seed)
        a.feedback(group_norm(a.aggregate(r, g, h).rewards, g))
    state = a.state_dict()
    if via_disk:
        state = _weights_only_roundtrip(state)
    b = MaestroAggregator(objectives, config)  # lazily built: the state supplies H
    b.load_state_dict(state)
    _run_pair(a, b, make_batch, range(3, 8))
    assert a.updater.updates == b.updater.updates > 0


def test_resume_between_aggregate_and_feedback(make_batch, objectives) -> None:
    a = MaestroAggregator(objectives, lr=1e-2)
    r, g, h = make_batch(seed=0)
    out = a.aggregate(r, g, h)
    b = MaestroAggregator(objectives, lr=1e-2)
    b.load_state_dict(_weights_only_roundtrip(a.state_dict()))
    adv = group_norm(out.rewards, g)
    assert a.feedback(adv) == b.feedback(adv)
    _run_pair(a, b, make_batch, range(1, 3))


def test_fresh_state_roundtrip_and_mismatches(objectives) -> None:
    b = MaestroAggregator(objectives)
    b.load_state_dict(_weights_only_roundtrip(MaestroAggregator(objectives).state_dict()))
    assert b.conductor is None
    state = MaestroAggregator(objectives, hidden_size=8).state_dict()
    with pytest.raises(ValueError, match=r"objectives \['correct', 'format', 'length'\], this aggregator has"):
        MaestroAggregator(["x", "y", "z"]).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state has mode='discrete', this aggregator's config has mode='dirichlet'"):
        MaestroAggregator(objectives, mode="dirichlet").load_state_dict(state)
    with pytest.raises(ValueError, match=r"'gdpo' aggregator is stateless but got state with keys"):
        GDPOAggregator(objectives).load_state_dict(state)
