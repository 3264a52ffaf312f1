"""The Conductor learns a context-dependent emphasis; non-finite meta-losses are skipped."""

from __future__ import annotations

import warnings

import pytest
import torch

from openrlhf_maestro.method import MaestroAggregator, group_norm

K, H, GROUPS, GROUP_SIZE = 3, 16, 32, 4


def _bandit_batch(gen: torch.Generator, centers: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each response falls in a context cluster c (visible in h); it does best on objective c.

    So emphasizing objective c raises its scalarized reward relative to its group: the right emphasis is
    the response's own cluster, which only h reveals.
    """
    n = GROUPS * GROUP_SIZE
    cluster = torch.randint(0, K, (n,), generator=gen)
    hidden = centers[cluster] + 0.3 * torch.randn(n, H, generator=gen)
    rewards = torch.nn.functional.one_hot(cluster, K).float() + 0.3 * torch.randn(n, K, generator=gen)
    return rewards, torch.arange(n) // GROUP_SIZE, hidden, cluster


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conductor_learns_context_dependent_emphasis(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    centers = torch.randn(K, H, generator=gen)
    agg = MaestroAggregator(["a", "b", "c"], lr=0.01, seed=seed, hidden_size=H)

    def p_right() -> float:
        """Mean π(right emphasis | h) on a fresh batch."""
        _, _, h, cluster = _bandit_batch(gen, centers)
        return float(agg.conductor.probs(h).gather(1, cluster[:, None]).mean())

    assert abs(p_right() - 1 / K) < 1e-6  # zero-initialized head: chance
    for _ in range(40):
        r, g, h, _ = _bandit_batch(gen, centers)
        agg.feedback(group_norm(agg.aggregate(r, g, h).rewards, g))
    assert p_right() > 0.8


def test_non_finite_meta_loss_is_skipped_counted_and_warned_once(make_batch, objectives) -> None:
    agg = MaestroAggregator(objectives, lr=1e-2)
    r, g, h = make_batch()
    agg.aggregate(r, g, h)
    before = [p.detach().clone() for p in agg.conductor.parameters()]
    adv = torch.zeros(r.shape[0])
    adv[3] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite meta-loss"):
        fb = agg.feedback(adv)
    assert fb["maestro/skipped_updates"] == 1.0 and fb["maestro/updates"] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(before, agg.conductor.parameters(), strict=True))
    agg.aggregate(r, g, h)
    adv[3] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second skip must not warn again
        fb = agg.feedback(adv)
    assert fb["maestro/skipped_updates"] == 2.0
    # The buffer was cleared: a good batch updates normally afterwards.
    out = agg.aggregate(r, g, h)
    fb = agg.feedback(group_norm(out.rewards, g))
    assert fb["maestro/updates"] == 1.0 and fb["maestro/skipped_updates"] == 2.0


def test_feedback_without_aggregate_raises(objectives) -> None:
    with pytest.raises(RuntimeError, match="preceding aggregate"):
        MaestroAggregator(objectives).feedback(torch.zeros(4))


def test_feedback_updates_under_no_grad(make_batch, objectives) -> None:
    """OpenRLHF's experience maker runs under torch.no_grad(); the meta-update must still train."""
    agg = MaestroAggregator(objectives, lr=1e-2)
    r, g, h = make_batch()
    with torch.no_grad():
        out = agg.aggregate(r, g, h)
        before = agg.conductor.output_layer.weight.detach().clone()
        fb = agg.feedback(group_norm(out.rewards, g))
    assert fb["maestro/updates"] == 1.0
    assert not torch.equal(before, agg.conductor.output_layer.weight)
