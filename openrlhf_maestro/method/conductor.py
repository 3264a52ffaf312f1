"""The Conductor π_φ(a | h): a contextual-bandit policy over reward-emphasis modes.

Discrete mode (the paper): K actions, one per objective,
    x = h / rms(h)                                   (input_norm='rms'; parameter-free, this project's choice)
    z = f_φ(x)                                       (linear head, or an MLP with `hidden_sizes`)
    π_φ(a | h) = (1 − K·ε)·softmax(z / τ)_a + ε      (ε = min_prob, so every action keeps π >= ε)
    a ~ π_φ(·|h),  s = e_a,  w = (1 − β)·w_prior + β·s
Dirichlet mode (this project's extension, not in the paper):
    α = softplus(z) + ε_α,  s ~ Dir(α),  w = (1 − β)·w_prior + β·s,  log-prob = log Dir(s; α)
x is never materialized: the first layer is linear, so W·x + b = (W·h)·(1 / rms(h)) + b, which saves an
(N, H) pass and copy per call (N = 8192, H = 4096 is 128 MiB).
Sampling uses the Conductor's own torch.Generator, so its state can be checkpointed and a resumed
Conductor draws exactly the same actions as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Dirichlet, Distribution

from .config import INPUT_NORMS, MODES, MaestroConfig, check_beta, check_min_prob
from .weights import DEFAULT_BETA, emphasis_weights, validate_prior

# Dirichlet samples are clamped away from the simplex's faces so log Dir(s; α) stays finite.
_DIRICHLET_MIN = 1e-6


class Features(NamedTuple):
    """The head's input x = scale · h, kept factored."""

    hidden: Tensor
    """(N, H) float32 h (the caller's tensor when it already is float32 on the Conductor's device: not copied)."""
    scale: Tensor
    """(N, 1) float32 1 / rms(h) (input_norm='rms') or 1 (input_norm='none')."""


@dataclass
class ConductorSample:
    """One draw per response; N responses, K objectives, H hidden width."""

    actions: Tensor
    """(N,) long emphasis actions a (discrete) or (N, K) simplex points s (dirichlet)."""
    emphasis: Tensor
    """(N, K) s: one-hot e_a (discrete) or the Dirichlet sample."""
    weights: Tensor
    """(N, K) w = (1 − β)·w_prior + β·s, each row on the simplex."""
    log_prob: Tensor
    """(N,) log π_φ(a | h) at sampling time."""
    entropy: Tensor
    """(N,) H(π_φ(·|h)) (differential entropy in dirichlet mode)."""
    features: Features
    """The head's input (h, 1 / rms(h)), buffered for the meta-update."""
    logits: Tensor
    """(N, K) head output z; carries its autograd graph when sampled with keep_graph=True."""
    expected_weights: Tensor
    """(N, K) E_{a~π_φ(·|h)}[w(a)] = (1 − β)·w_prior + β·E[s]: E[s] = π_φ(·|h) (discrete) or α / Σα
    (dirichlet). What the Conductor prefers for each response, free of the draw's noise."""


class Conductor(nn.Module):
    """π_φ(a | h) over K emphasis actions (discrete) or a Dirichlet over the simplex.

    Args:
        hidden_size: H, the width of the context h (the policy's last-layer hidden state).
        num_objectives: K; also the number of discrete actions (one emphasis per objective).
        tau: softmax temperature τ > 0 (discrete).
        min_prob: floor ε with 0 <= ε < 1/K (discrete).
        beta: β of the weights map w = (1 − β)·w_prior + β·s.
        prior: w_prior, K non-negative weights (normalized), None = uniform.
        mode: 'discrete' or 'dirichlet'.
        hidden_sizes: MLP widths; () = linear head.
        input_norm: 'rms' or 'none'.
        concentration_eps: ε_α in α = softplus(z) + ε_α (dirichlet).
        seed: seeds the sampling generator and the initialization.
    """

    def __init__(
        self,
        hidden_size: int,
        num_objectives: int,
        *,
        tau: float = 1.0,
        min_prob: float = 0.02,
        beta: float = DEFAULT_BETA,
        prior: Sequence[float] | Tensor | None = None,
        mode: str = "discrete",
        hidden_sizes: Sequence[int] = (),
        input_norm: str = "rms",
        concentration_eps: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {list(INPUT_NORMS)}, got {input_norm!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.hidden_size = hidden_size
        self.num_objectives = num_objectives
        self.tau = float(tau)
        self.min_prob = check_min_prob(min_prob, num_objectives)
        self.beta = check_beta(beta)
        self.mode = mode
        self.input_norm = input_norm
        self.concentration_eps = float(concentration_eps)
        self.register_buffer("prior", validate_prior(prior, num_objectives), persistent=False)

        # Build under a forked global RNG so initialization depends on `seed` only.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = []
            width = hidden_size
            for size in hidden_sizes:
                layers += [nn.Linear(width, int(size)), nn.ReLU()]
                width = int(size)
            self.head = nn.Sequential(*layers, nn.Linear(width, num_objectives))
        with torch.no_grad():
            # A zero output layer starts from the uniform policy (π = 1/K; Dirichlet α = 1, uniform on the simplex).
            self.output_layer.weight.zero_()
            init_bias = 0.0 if mode == "discrete" else _inverse_softplus(1.0 - self.concentration_eps)
            self.output_layer.bias.fill_(init_bias)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def output_layer(self) -> nn.Linear:
        """The last Linear of the head (K outputs)."""
        return self.head[-1]

    @classmethod
    def from_config(cls, config: MaestroConfig, hidden_size: int, num_objectives: int) -> Conductor:
        """Build from a MaestroConfig."""
        return cls(
            hidden_size,
            num_objectives,
            tau=config.tau,
            min_prob=config.min_prob,
            beta=config.beta,
            prior=config.prior,
            mode=config.mode,
            hidden_sizes=config.hidden_sizes,
            input_norm=config.input_norm,
            concentration_eps=config.concentration_eps,
            seed=config.seed,
        )

    # ---- policy -------------------------------------------------------------------------------------------
    def features(self, hidden: Tensor) -> Features:
        """Validate h and return the factored head input x = scale · h.

        Args:
            hidden: (N, H) any float dtype.

        Returns:
            Features(hidden (N, H) float32, scale (N, 1)); ValueError naming the first non-finite row.
        """
        if hidden.dim() != 2 or hidden.shape[1] != self.hidden_size:
            raise ValueError(f"hidden must have shape (N, H) with H={self.hidden_size}, got {tuple(hidden.shape)}")
        h = hidden.detach().to(device=self.prior.device, dtype=torch.float32)
        # One pass over h gives both the RMS and the finiteness check: a nan/inf entry makes its row norm non-finite.
        norm = torch.linalg.vector_norm(h, dim=-1)
        bad = ~torch.isfinite(norm)
        rows = None
        if bool(bad.any()):
            rows = bad.nonzero().squeeze(-1)
            row_finite = torch.isfinite(h[rows]).all(-1)
            if not bool(row_finite.all()):
                raise ValueError(f"hidden state is not finite at row {int(rows[~row_finite][0])}")
        if self.input_norm == "rms":
            # Makes the head (and its lr) independent of the LM's hidden-state scale.
            scale = torch.rsqrt(norm.square() / self.hidden_size + 1e-6)
            if rows is not None:  # finite but huge: Σh² overflowed float32; in float64 it fits, and so does 1/rms
                scale[rows] = torch.rsqrt(h[rows].double().square().mean(-1) + 1e-6).float()
            scale = scale.unsqueeze(-1)
        else:
            scale = torch.ones_like(norm).unsqueeze(-1)
        return Features(h, scale)

    def forward(self, features: Features) -> Tensor:
        """z = f_φ(x), x = scale · h: Features ((N, H), (N, 1)) -> (N, K) logits (or pre-softplus concentrations)."""
        first = self.head[0]
        z = F.linear(features.hidden, first.weight) * features.scale + first.bias
        for layer in self.head[1:]:
            z = layer(z)
        return z

    def log_probs(self, logits: Tensor) -> Tensor:
        """log π_φ(·|h) = log((1 − K·ε)·softmax(z / τ) + ε): head output z (N, K) -> (N, K). Discrete mode."""
        log_soft = torch.log_softmax(logits / self.tau, dim=-1)
        if self.min_prob == 0.0:
            return log_soft
        # logaddexp keeps the floored log-probability exact and differentiable for tiny softmax entries.
        floor = torch.full_like(log_soft, math.log(self.min_prob))
        return torch.logaddexp(log_soft + math.log1p(-self.num_objectives * self.min_prob), floor)

    def concentration(self, logits: Tensor) -> Tensor:
        """α = softplus(z) + ε_α: head output z (N, K) -> (N, K). Dirichlet mode."""
        return F.softplus(logits) + self.concentration_eps

    def distribution(self, logits: Tensor) -> Distribution:
        """π_φ(·|h) from the head output z (N, K): Categorical over K actions, or Dirichlet over the simplex."""
        if self.mode == "discrete":
            return Categorical(logits=self.log_probs(logits), validate_args=False)
        return Dirichlet(self.concentration(logits), validate_args=False)

    def probs(self, hidden: Tensor) -> Tensor:
        """π_φ(a|h) for every action: (N, H) -> (N, K), rows sum to 1, entries >= min_prob. Discrete mode."""
        if self.mode != "discrete":
            raise ValueError("probs() is defined for mode='discrete'; use expected_emphasis() in dirichlet mode")
        return self.log_probs(self(self.features(hidden))).exp()

    @torch.no_grad()
    def expected_emphasis(self, hidden: Tensor) -> Tensor:
        """E[s | h]: π (discrete) or α / Σα (dirichlet). (N, H) -> (N, K)."""
        return self.mean_emphasis(self(self.features(hidden)))

    def mean_emphasis(self, logits: Tensor) -> Tensor:
        """E[s] under π_φ for head outputs z (N, K): π (discrete) or α / Σα (dirichlet)."""
        if self.mode == "discrete":
            return self.log_probs(logits).exp()
        alpha = self.concentration(logits)
        return alpha / alpha.sum(-1, keepdim=True)

    @torch.no_grad()
    def expected_weights(self, hidden: Tensor) -> Tensor:
        """E[w | h] = (1 − β)·w_prior + β·E[s | h] (the map is linear in s). (N, H) -> (N, K)."""
        return emphasis_weights(self.expected_emphasis(hidden), self.prior, self.beta)

    def _emphasis(self, actions: Tensor) -> Tensor:
        if self.mode == "discrete":
            return F.one_hot(actions, self.num_objectives).to(self.prior.dtype)
        return actions

    # ---- sampling -----------------------------------------------------------------------------------------
    def sample(self, hidden: Tensor, keep_graph: bool = False) -> ConductorSample:
        """Draw one action per response from the Conductor's own generator.

        Args:
            hidden: (N, H) context h_ij (detached; no gradient reaches the policy).
            keep_graph: keep the autograd graph of the head output in `ConductorSample.logits`, so the
                meta-update's first step can reuse this forward pass instead of repeating it.

        Returns:
            ConductorSample with actions (N,) or (N, K), emphasis/weights (N, K), log_prob/entropy (N,),
            the Features and the head output.
        """
        return self.sample_from_features(self.features(hidden), keep_graph)

    def sample_from_features(self, features: Features, keep_graph: bool = False) -> ConductorSample:
        """sample() for precomputed Features (N rows)."""
        with torch.enable_grad() if keep_graph else torch.no_grad():
            logits = self(features)
        with torch.no_grad():
            z = logits.detach()
            if self.mode == "discrete":
                log_p = self.log_probs(z)
                probs = log_p.exp()
                actions = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
                log_prob = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
                entropy = -(probs * log_p).sum(-1)
            else:
                alpha = self.concentration(z)
                # torch.distributions.Dirichlet.sample takes no generator; this is its sampler, with one.
                actions = torch._sample_dirichlet(alpha, generator=self.generator).clamp_min(_DIRICHLET_MIN)
                actions = actions / actions.sum(-1, keepdim=True)
                dist = Dirichlet(alpha, validate_args=False)
                log_prob, entropy = dist.log_prob(actions), dist.entropy()
            emphasis = self._emphasis(actions)
            weights = emphasis_weights(emphasis, self.prior, self.beta)
            expected = emphasis_weights(self.mean_emphasis(z), self.prior, self.beta)  # w is linear in s
        return ConductorSample(actions, emphasis, weights, log_prob, entropy, features, logits, expected)

    def get_rng_state(self) -> Tensor:
        """The sampling generator's state (a uint8 tensor)."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return y + math.log(-math.expm1(-y))
