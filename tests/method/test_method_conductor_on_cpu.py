"""Weights map and Conductor: simplex, floors, sampling frequencies, Dirichlet mode."""

from __future__ import annotations

import math

import pytest
import torch

from openrlhf_maestro.method import Conductor, action_weights, emphasis_weights, validate_prior, weight_matrix


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_weight_map_on_simplex_and_above_prior_floor(beta: float) -> None:
    prior = validate_prior([2.0, 1.0, 1.0, 0.0], 4)
    assert torch.allclose(prior, torch.tensor([0.5, 0.25, 0.25, 0.0]))
    m = weight_matrix(prior, beta)
    assert torch.allclose(m.sum(-1), torch.ones(4))
    assert bool((m >= (1 - beta) * prior - 1e-7).all())
    # w(a) = (1 − β)·w_prior + β·e_a, and the vectorized map agrees row by row.
    for a in range(4):
        expected = (1 - beta) * prior + beta * torch.nn.functional.one_hot(torch.tensor(a), 4).float()
        assert torch.allclose(m[a], expected)
    actions = torch.tensor([3, 0, 0, 2])
    assert torch.equal(action_weights(actions, prior, beta), m[actions])
    s = torch.tensor([[0.2, 0.3, 0.5, 0.0]])
    assert torch.allclose(emphasis_weights(s, prior, beta).sum(-1), torch.ones(1))


def test_uniform_prior_default() -> None:
    assert torch.equal(validate_prior(None, 4), torch.full((4,), 0.25))
    # One objective is a valid aggregation (its prior is 1); none is not, and the error says so.
    assert validate_prior(None, 1).tolist() == [1.0] and validate_prior(torch.tensor([3.0]), 1).tolist() == [1.0]
    with pytest.raises(ValueError, match="need at least one objective, got K=0"):
        validate_prior(None, 0)


@pytest.mark.parametrize("tau,min_prob", [(1.0, 0.02), (0.5, 0.1), (2.0, 0.0)])
def test_probs_on_simplex_and_floored(tau: float, min_prob: float) -> None:
    c = Conductor(16, 4, tau=tau, min_prob=min_prob, seed=1)
    with torch.no_grad():
        c.output_layer.weight.normal_(0, 3.0, generator=torch.Generator().manual_seed(0))
    h = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    p = c.probs(h)
    assert torch.allclose(p.sum(-1), torch.ones(64), atol=1e-6)
    assert bool((p >= min_prob * (1 - 1e-5)).all())
    # π = (1 − K·ε)·softmax(z/τ) + ε exactly.
    z = c(c.features(h))
    assert torch.allclose(p, (1 - 4 * min_prob) * torch.softmax(z / tau, -1) + min_prob, atol=1e-6)
    # Expected weights are the probability-weighted rows of the weights map.
    assert torch.allclose(c.expected_weights(h), p @ weight_matrix(c.prior, c.beta), atol=1e-6)


def test_zero_init_is_uniform_policy() -> None:
    c = Conductor(32, 5, hidden_sizes=(8,))
    p = c.probs(torch.randn(10, 32))
    assert torch.allclose(p, torch.full_like(p, 0.2))


def test_sampling_frequencies_match_probabilities() -> None:
    """Chi-square goodness of fit of 20k draws (fixed seed) against the reported π."""
    c = Conductor(4, 4, tau=1.0, min_prob=0.05, seed=3)
    with torch.no_grad():
        c.output_layer.bias.copy_(torch.tensor([1.5, 0.0, -1.0, 0.5]))
    h = torch.ones(20_000, 4)
    p = c.probs(h[:1])[0]
    sample = c.sample(h)
    counts = torch.bincount(sample.actions, minlength=4).double()
    expected = p.double() * h.shape[0]
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27  # 3 degrees of freedom, p = 0.001
    # Reported log-prob and entropy agree with π.
    assert torch.allclose(sample.log_prob, p.log()[sample.actions], atol=1e-6)
    assert math.isclose(float(sample.entropy[0]), float(-(p * p.log()).sum()), rel_tol=1e-5)
    assert torch.equal(sample.weights, weight_matrix(c.prior, c.beta)[sample.actions])


def test_own_generator_is_reproducible_and_leaves_global_rng_alone() -> None:
    h = torch.randn(100, 8)
    before = torch.random.get_rng_state()
    a1 = Conductor(8, 3, seed=7).sample(h).actions
    assert torch.equal(torch.random.get_rng_state(), before)
    a2 = Conductor(8, 3, seed=7).sample(h).actions
    a3 = Conductor(8, 3, seed=8).sample(h).actions
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, a3)


def test_dirichlet_mode_samples_simplex_with_finite_log_prob() -> None:
    c = Conductor(8, 3, mode="dirichlet", beta=0.5, seed=0)
    h = torch.randn(500, 8)
    # Starts at α = 1 (uniform on the simplex).
    assert torch.allclose(c.concentration(c(c.features(h))), torch.ones(500, 3), atol=1e-5)
    s = c.sample(h)
    assert s.actions.shape == (500, 3)
    assert torch.allclose(s.actions.sum(-1), torch.ones(500), atol=1e-5)
    assert torch.allclose(s.weights.sum(-1), torch.ones(500), atol=1e-5)
    assert bool((s.weights >= 0.5 / 3 - 1e-6).all())
    # Dir(1, 1, 1) is uniform on the simplex: its density is Γ(3) = 2 everywhere, so log Dir(s; α) = log 2.
    assert torch.allclose(s.log_prob, torch.full((500,), math.log(2.0)), atol=1e-4)
    # Tiny concentrations put samples on the faces; the clamp keeps log Dir(s; α) finite, and it is the density
    # written out: log Γ(Σα) − Σ log Γ(α_k) + Σ (α_k − 1) log s_k, α = softplus(−30) + 1e-3.
    with torch.no_grad():
        c.output_layer.bias.fill_(-30.0)
    s = c.sample(h[:20])
    alpha = math.log1p(math.exp(-30.0)) + 1e-3
    for point, log_prob in zip(s.actions.tolist(), s.log_prob.tolist(), strict=True):
        assert min(point) >= 1e-6 / (1 + 3e-6) and sum(point) == pytest.approx(1.0, abs=1e-6)  # clamped, renormed
        density = math.lgamma(3 * alpha) - 3 * math.lgamma(alpha) + sum((alpha - 1) * math.log(x) for x in point)
        assert log_prob == pytest.approx(density, rel=1e-4)
    assert torch.allclose(s.weights, 0.5 / 3 + 0.5 * s.actions, atol=1e-7)
    assert torch.allclose(c.expected_weights(h).sum(-1), torch.ones(500), atol=1e-5)


def test_input_norm_makes_head_scale_free() -> None:
    c = Conductor(8, 3, seed=0)
    with torch.no_grad():
        c.output_layer.weight.normal_()
    h = torch.randn(5, 8)
    assert torch.allclose(c.probs(h), c.probs(1000.0 * h), atol=1e-6)
    # bf16 hidden states are accepted and cast to float32.
    assert c.probs(h.to(torch.bfloat16)).dtype == torch.float32


def test_conductor_rejects_bad_floor_and_width() -> None:
    with pytest.raises(ValueError, match=r"min_prob=0.3 is out of range for K=4.*< 0.25"):
        Conductor(8, 4, min_prob=0.3)
    with pytest.raises(ValueError, match=r"shape \(N, H\) with H=8, got \(5, 6\)"):
        Conductor(8, 4).sample(torch.randn(5, 6))


@pytest.mark.parametrize("mode", ["discrete", "dirichlet"])
def test_sample_reports_the_expected_weights_of_its_policy(mode: str) -> None:
    """E[w | h] per response, as the weights log records it: the mean of many draws for that h."""
    c = Conductor(4, 3, mode=mode, beta=0.6, prior=(0.5, 0.3, 0.2), seed=1)
    with torch.no_grad():  # the head starts at zero (one policy for every h); make it depend on h
        weight = c.output_layer.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    h = torch.randn(2, 4, generator=torch.Generator().manual_seed(1)).repeat_interleave(20_000, dim=0)
    s = c.sample(h)
    assert torch.allclose(s.expected_weights, c.expected_weights(h), atol=1e-6)
    first, second = s.expected_weights[0], s.expected_weights[-1]
    assert (first - second).abs().max() > 0.05  # two contexts, two preferences
    for rows, mean in ((slice(0, 20_000), first), (slice(20_000, None), second)):
        assert torch.allclose(s.weights[rows].double().mean(0), mean.double(), atol=0.01)
