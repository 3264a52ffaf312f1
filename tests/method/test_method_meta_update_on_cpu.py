"""The Conductor learns a context-dependent emphasis; non-finite meta-losses are skipped."""

from __future__ import annotations

import math
import os
import sys
import warnings

import pytest
import torch

from openrlhf_maestro.method import MaestroAggregator, group_norm, meta_update

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
    with pytest.warns(RuntimeWarning, match="non-finite meta-loss") as record:
        fb = agg.feedback(adv)
    # attributed to feedback's caller (this file; under mutmut, its trampoline), not to the method or torch
    method_dir, torch_dir = (os.path.dirname(m.__file__) for m in (meta_update, torch))
    assert len(record) == 1 and not record[0].filename.startswith((method_dir, torch_dir)), record[0].filename
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


def test_the_stacklevel_counts_the_frames_inside_the_method_and_torch() -> None:
    frame = sys._getframe()  # this test's own frame: already outside, so the caller itself (level 1)
    assert meta_update._stacklevel_outside(frame) == 1
    inner = torch.enable_grad()(lambda: sys._getframe(1))  # torch's wrapper frame, called from here
    assert meta_update._stacklevel_outside(inner()) == 2  # the wrapper, then this test


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


# ---- the meta-loss, its gradient, grad_clip and meta_steps against hand computations -----------------------
# A linear head on H = 4 with K = 3 actions, fixed weights, a temperature and a probability floor, so every
# term of π_φ(a|h) = (1 − K·ε)·softmax(z/τ)_a + ε matters. The expected values below are computed in plain
# Python floats from the formulas, not from the Conductor or the MetaUpdater.
HAND_K, HAND_H, TAU, EPS, ENT = 3, 4, 0.7, 0.05, 0.3
HAND_W = [[0.5, -1.0, 0.25, 2.0], [-0.75, 0.5, 1.5, -0.5], [1.0, 0.0, -1.25, 0.75]]
HAND_B = [0.1, -0.2, 0.3]
HAND_HIDDEN = [[1.0, 2.0, -1.0, 0.5], [-2.0, 0.5, 1.0, 1.0], [0.3, -0.7, 2.0, -1.5], [1.5, 1.5, 0.5, -0.5]]
HAND_ACTIONS = [2, 0, 1, 0]
HAND_ADV = [1.2, -0.4, 0.9, -1.7]


def _hand_terms() -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """Per row: x = h / sqrt(mean(h²) + 1e-6), p = softmax(z / τ) with z = W x + b, π = (1 − Kε) p + ε."""
    xs, ps, pis = [], [], []
    for h in HAND_HIDDEN:
        scale = 1.0 / math.sqrt(sum(v * v for v in h) / HAND_H + 1e-6)
        x = [v * scale for v in h]
        z = [sum(w * xi for w, xi in zip(row, x, strict=True)) + b for row, b in zip(HAND_W, HAND_B, strict=True)]
        e = [math.exp(v / TAU) for v in z]
        p = [v / sum(e) for v in e]
        xs.append(x)
        ps.append(p)
        pis.append([(1 - HAND_K * EPS) * v + EPS for v in p])
    return xs, ps, pis


def _hand_loss() -> tuple[float, float]:
    """L = −mean_n(Â_n · log π_n(a_n)) − λ · mean_n H_n, H_n = −Σ_k π_nk log π_nk; returns (L, mean H)."""
    _, _, pis = _hand_terms()
    n = len(pis)
    reinforce = -sum(adv * math.log(pi[a]) for adv, pi, a in zip(HAND_ADV, pis, HAND_ACTIONS, strict=True)) / n
    entropy = sum(-sum(v * math.log(v) for v in pi) for pi in pis) / n
    return reinforce - ENT * entropy, entropy


def _hand_gradient() -> tuple[list[list[float]], list[float]]:
    """dL/dW and dL/db. With dπ_j/dz_k = (1 − Kε)·p_j·(δ_jk − p_k)/τ:
    d log π_a/dz_k = (dπ_a/dz_k) / π_a and dH/dz_k = −Σ_j (log π_j + 1)·dπ_j/dz_k;
    dL/dz_nk = −(Â_n/N)·d log π_a/dz_k − (λ/N)·dH/dz_k, dL/dW = Σ_n dL/dz_n x_nᵀ, dL/db = Σ_n dL/dz_n."""
    xs, ps, pis = _hand_terms()
    n = len(xs)
    grad_w = [[0.0] * HAND_H for _ in range(HAND_K)]
    grad_b = [0.0] * HAND_K
    for x, p, pi, a, adv in zip(xs, ps, pis, HAND_ACTIONS, HAND_ADV, strict=True):
        for k in range(HAND_K):
            dpi = [(1 - HAND_K * EPS) * p[j] * ((j == k) - p[k]) / TAU for j in range(HAND_K)]
            dlogpi_a = dpi[a] / pi[a]
            dh = -sum((math.log(pi[j]) + 1) * dpi[j] for j in range(HAND_K))
            g = -adv / n * dlogpi_a - ENT / n * dh
            grad_b[k] += g
            for j in range(HAND_H):
                grad_w[k][j] += g * x[j]
    return grad_w, grad_b


def _hand_setup(**options) -> tuple[MaestroAggregator, torch.Tensor]:
    """A maestro aggregator whose Conductor has the weights above, and the buffered batch of the hand values:
    the sampled actions are replaced by HAND_ACTIONS (what the meta-update reads is the buffer)."""
    agg = MaestroAggregator(
        ["a", "b", "c"], hidden_size=HAND_H, tau=TAU, min_prob=EPS, entropy_coef=ENT, lr=0.05, **options
    )
    with torch.no_grad():
        agg.conductor.output_layer.weight.copy_(torch.tensor(HAND_W))
        agg.conductor.output_layer.bias.copy_(torch.tensor(HAND_B))
    hidden = torch.tensor(HAND_HIDDEN)
    agg.aggregate(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 1, 1]), hidden)
    features, _, logits = agg._pending
    agg._pending = (features, torch.tensor(HAND_ACTIONS), logits)
    return agg, torch.tensor(HAND_ADV)


def test_meta_loss_is_the_reinforce_term_minus_the_entropy_bonus_written_out() -> None:
    loss, entropy = _hand_loss()
    agg, adv = _hand_setup()
    updater = agg.updater
    logits = agg.conductor(agg.conductor.features(torch.tensor(HAND_HIDDEN)))
    got_loss, got_entropy = updater.loss(logits, torch.tensor(HAND_ACTIONS), adv)
    assert float(got_entropy) == pytest.approx(entropy, rel=1e-5)
    assert float(got_loss) == pytest.approx(loss, rel=1e-5)
    # The entropy bonus (λ·H ≈ 0.18) is far above the tolerance: a dropped bonus or a flipped sign fails.
    assert ENT * entropy > 0.1
    fb = agg.feedback(adv)  # the reported loss is the first step's, before the update
    assert fb["maestro/meta_loss"] == pytest.approx(loss, rel=1e-5)


def test_grad_norm_is_the_norm_of_the_hand_derived_gradient() -> None:
    grad_w, grad_b = _hand_gradient()
    norm = math.sqrt(sum(g * g for row in grad_w for g in row) + sum(g * g for g in grad_b))
    agg, adv = _hand_setup(grad_clip=None)
    fb = agg.feedback(adv)
    assert fb["maestro/grad_norm"] == pytest.approx(norm, rel=1e-5)
    # grad_clip None: Adam stepped on the whole gradient (it is left in .grad after the last meta step).
    layer = agg.conductor.output_layer
    assert layer.weight.grad.tolist() == [pytest.approx(row, rel=1e-4, abs=1e-7) for row in grad_w]
    assert layer.bias.grad.tolist() == pytest.approx(grad_b, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("clip", [0.01, None])
def test_grad_clip_bounds_the_gradient_adam_steps_on_and_none_does_not(clip: float | None) -> None:
    """The clipped gradient is what Adam consumes: its first moment after one step is (1 − β1)·g_clipped.
    (Adam's very first parameter step, lr·g/(|g| + 1e-8), hardly depends on the scale of g, so the
    observable is the gradient and the optimizer's state, not the first step's size.)"""
    grad_w, grad_b = _hand_gradient()
    norm = math.sqrt(sum(g * g for row in grad_w for g in row) + sum(g * g for g in grad_b))
    assert norm > 0.1  # so a clip at 0.01 must act
    agg, adv = _hand_setup(grad_clip=clip)
    fb = agg.feedback(adv)
    assert fb["maestro/grad_norm"] == pytest.approx(norm, rel=1e-5)  # the norm before clipping, either way
    expected_norm = norm if clip is None else clip
    layer = agg.conductor.output_layer
    grads = [layer.weight.grad, layer.bias.grad]
    assert math.sqrt(sum(float(g.square().sum()) for g in grads)) == pytest.approx(expected_norm, rel=1e-4)
    factor = expected_norm / norm  # clipping rescales, it keeps the direction
    assert layer.bias.grad.tolist() == pytest.approx([g * factor for g in grad_b], rel=1e-4, abs=1e-9)
    first_moment = agg.updater.optimizer.state[layer.bias]["exp_avg"]
    assert first_moment.tolist() == pytest.approx([0.1 * g * factor for g in grad_b], rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("meta_steps", [1, 3])
def test_meta_steps_runs_that_many_adam_steps_on_the_written_out_loss(meta_steps: int) -> None:
    """The reference: torch's Adam, stepped meta_steps times on the loss written out with plain tensor ops."""
    agg, adv = _hand_setup(meta_steps=meta_steps, grad_clip=1.0)
    weight = torch.tensor(HAND_W, requires_grad=True)
    bias = torch.tensor(HAND_B, requires_grad=True)
    h = torch.tensor(HAND_HIDDEN)
    x = h / torch.sqrt(h.square().mean(-1, keepdim=True) + 1e-6)
    actions = torch.tensor(HAND_ACTIONS)
    reference = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(meta_steps):
        reference.zero_grad()
        pi = (1 - HAND_K * EPS) * torch.softmax((x @ weight.T + bias) / TAU, -1) + EPS
        entropy = -(pi * pi.log()).sum(-1)
        loss = -(adv * pi.log()[torch.arange(4), actions]).mean() - ENT * entropy.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([weight, bias], 1.0)
        reference.step()
    fb = agg.feedback(adv)
    assert fb["maestro/updates"] == 1.0
    layer = agg.conductor.output_layer
    assert agg.updater.optimizer.state[layer.weight]["step"].item() == meta_steps
    torch.testing.assert_close(layer.weight.detach(), weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), bias.detach(), rtol=1e-5, atol=1e-6)


def test_an_update_every_two_calls_learns_from_both_buffered_batches(make_batch, objectives) -> None:
    """update_every = 2: the reported meta-loss is the loss over the 2N buffered rows, not the last or first N."""
    agg = MaestroAggregator(objectives, update_every=2, hidden_size=8, entropy_coef=0.0)
    with torch.no_grad():
        agg.conductor.output_layer.weight.normal_(generator=torch.Generator().manual_seed(0))
    rows = []
    for seed in (1, 2):
        r, g, h = make_batch(seed=seed)
        out = agg.aggregate(r, g, h)
        features, actions, _ = agg._pending
        adv = torch.linspace(-1.0, 2.0, r.shape[0]) * seed  # the two batches' advantages differ
        log_pi = agg.conductor.log_probs(agg.conductor(features)).detach()
        rows += [(float(a), float(log_pi[n, actions[n]])) for n, a in enumerate(adv)]
        fb = agg.feedback(adv)
        assert out.rewards.shape == (16,)
    expected = -sum(a * lp for a, lp in rows) / len(rows)  # −mean(Â · log π(a|h)) over both batches
    assert fb["maestro/updates"] == 1.0 and fb["maestro/meta_loss"] == pytest.approx(expected, rel=1e-5)
