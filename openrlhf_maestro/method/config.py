"""Every option of the MAESTRO Conductor in one dataclass, CleanRL-style.

The paper (arXiv 2601.07208) does not publish tau, min_prob, the entropy coefficient, the Conductor's
learning rate, the update period or the exact action -> weights map. The defaults below are this
project's choices; docs/method.md gives the reason for each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .weights import DEFAULT_BETA, validate_prior

NORMALIZATIONS = ("group", "batch", "none")
MODES = ("discrete", "dirichlet")
INPUT_NORMS = ("rms", "none")
META_REWARDS = ("advantage", "alignment")


@dataclass
class MaestroConfig:
    """Options of the `maestro` aggregator (Conductor, weights map, normalization, meta-update)."""

    tau: float = 1.0
    """Softmax temperature τ of the discrete Conductor: π = floor(softmax(z / τ)). Must be > 0."""
    min_prob: float = 0.02
    """Probability floor ε per action: π = (1 − K·ε)·softmax(z/τ) + ε. Needs 0 <= ε < 1/K."""
    lr: float = 3e-4
    """Adam learning rate of the Conductor head φ (tuned for H ~ 4096; a linear head's logit step grows ~H)."""
    update_every: int = 1
    """Run the meta-update after every `update_every` feedback() calls (rollout batches)."""
    meta_steps: int = 1
    """REINFORCE (Adam) steps per meta-update on the buffered (h, a, Â); 1 keeps it strictly on-policy."""
    entropy_coef: float = 0.01
    """λ_ent in L(φ) = −mean(Â·log π_φ(a|h)) − λ_ent·mean H(π_φ(·|h)). Must be >= 0."""
    grad_clip: float | None = 1.0
    """Max global grad norm of the Conductor per meta step; None disables clipping."""
    beta: float = DEFAULT_BETA
    """Emphasis strength β in w(a) = (1 − β)·w_prior + β·e_a, in [0, 1]."""
    prior: Sequence[float] | None = None
    """w_prior, one non-negative weight per objective (normalized to sum 1); None means uniform 1/K."""
    normalization: str = "group"
    """Per-objective normalization before scalarization: 'group' (z-score in the group), 'batch', 'none'."""
    norm_eps: float = 1e-6
    """ε in the per-objective z-score (r − μ) / (σ + ε)."""
    mode: str = "discrete"
    """'discrete': K emphasis actions (the paper). 'dirichlet': emphasis s ~ Dir(α(h)) (this project's extension)."""
    hidden_sizes: tuple[int, ...] = field(default_factory=tuple)
    """Hidden layer widths of the Conductor; () is the paper's linear head."""
    input_norm: str = "rms"
    """Input features of the head: 'rms' (x = h / rms(h), parameter-free) or 'none' (x = h)."""
    concentration_eps: float = 1e-3
    """Dirichlet mode: α = softplus(z) + concentration_eps keeps every concentration > 0."""
    seed: int = 0
    """Seed of the Conductor's own torch.Generator (sampling) and of its initialization."""
    meta_reward: str = "advantage"
    """What the Conductor learns from. 'advantage' (the paper): REINFORCE on each response's own Â_ij, one action
    per response. 'alignment' (this project's extension, docs/method.md): one action per prompt group, valued by
    G_i(a) = Σ_j Â_ij(a)·u_ij, how well the advantages under emphasis a point at the centred `target` u."""
    target: str | None = None
    """meta_reward='alignment': the name of the target objective (e.g. a judge scored on some prompts). It is kept
    out of R and may be missing (NaN) on most responses. Required with 'alignment', refused with 'advantage'."""

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(self.hidden_sizes)
        if self.prior is not None:
            self.prior = tuple(float(p) for p in self.prior)
        _check(_finite(self.tau) and self.tau > 0, f"tau must be a finite number > 0, got {self.tau!r}")
        check_min_prob(self.min_prob)
        _check(_finite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr!r}")
        _check(_pos_int(self.update_every), f"update_every must be an integer >= 1, got {self.update_every!r}")
        _check(_pos_int(self.meta_steps), f"meta_steps must be an integer >= 1, got {self.meta_steps!r}")
        _check(
            _finite(self.entropy_coef) and self.entropy_coef >= 0,
            f"entropy_coef must be a finite number >= 0, got {self.entropy_coef!r}",
        )
        _check(
            self.grad_clip is None or (_finite(self.grad_clip) and self.grad_clip > 0),
            f"grad_clip must be a finite number > 0 or None (no clipping), got {self.grad_clip!r}",
        )
        if self.prior is not None:
            validate_prior(self.prior, len(self.prior))
        check_emphasis_options(self)
        _check(self.mode in MODES, f"mode must be one of {list(MODES)}, got {self.mode!r}")
        for width in self.hidden_sizes:
            _check(_pos_int(width), f"hidden_sizes entries must be integers >= 1, got {list(self.hidden_sizes)}")
        _check(
            self.input_norm in INPUT_NORMS, f"input_norm must be one of {list(INPUT_NORMS)}, got {self.input_norm!r}"
        )
        _check(
            _finite(self.concentration_eps) and self.concentration_eps > 0,
            f"concentration_eps must be a finite number > 0, got {self.concentration_eps!r}",
        )
        _check(
            self.meta_reward in META_REWARDS,
            f"meta_reward must be one of {list(META_REWARDS)}, got {self.meta_reward!r}",
        )
        _check(
            self.target is None or (isinstance(self.target, str) and self.target != ""),
            f"target must be an objective name (a non-empty string) or None, got {self.target!r}",
        )
        if self.meta_reward == "alignment":
            _check(
                self.target is not None,
                "meta_reward='alignment' needs a target objective to align with: set target (--maestro.target NAME)",
            )
            _check(
                self.mode == "discrete",
                f"meta_reward='alignment' values each of the K discrete emphases, so it needs mode='discrete', got "
                f"mode={self.mode!r}",
            )
        else:
            _check(
                self.target is None,
                f"target={self.target!r} is only read by meta_reward='alignment' (got "
                f"meta_reward={self.meta_reward!r}): set meta_reward='alignment' (--maestro.meta_reward alignment) "
                "or drop the target",
            )

    def to_dict(self) -> dict:
        """Plain-python view (lists instead of tuples), e.g. for logging or a weights_only checkpoint."""
        out = asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["prior"] = None if self.prior is None else list(self.prior)
        return out


@dataclass
class RandomOptions:
    """Options of the `random` aggregator: maestro's weights map and normalization, with a uniform emphasis."""

    beta: float = DEFAULT_BETA
    """Emphasis strength β in w(a) = (1 − β)·w_prior + β·e_a, in [0, 1]."""
    normalization: str = "group"
    """Per-objective normalization before scalarization: 'group' (z-score in the group), 'batch', 'none'."""
    norm_eps: float = 1e-6
    """ε in the per-objective z-score (r − μ) / (σ + ε)."""
    seed: int = 0
    """Seed of the action generator (the global torch RNG is left untouched)."""

    def __post_init__(self) -> None:
        check_emphasis_options(self)


@dataclass
class GDPOOptions:
    """Options of the `gdpo` aggregator."""

    eps: float = 1e-6
    """ε in the per-objective z-score inside the group, (r − μ) / (σ + ε)."""

    def __post_init__(self) -> None:
        _check(_finite(self.eps) and self.eps > 0, f"eps must be a finite number > 0, got {self.eps!r}")


def check_beta(beta: object) -> float:
    """β of the weights map, in [0, 1] (config, aggregators and Conductor all check it here)."""
    _check(_finite(beta) and 0.0 <= beta <= 1.0, f"beta must be in [0, 1], got {beta!r}")
    return float(beta)


def check_min_prob(min_prob: object, num_objectives: int | None = None) -> float:
    """The floor ε of the discrete policy: 0 <= ε < 1/K (K*ε < 1, so softmax keeps some mass); without K, < 1."""
    if num_objectives is None:
        _check(
            _finite(min_prob) and 0.0 <= min_prob < 1.0,
            f"min_prob must be in [0, 1) (and < 1/K for K objectives), got {min_prob!r}",
        )
    else:
        _check(
            _finite(min_prob) and 0.0 <= min_prob * num_objectives < 1.0,
            f"min_prob={min_prob} is out of range for K={num_objectives} objectives: the floor needs "
            f"0 <= K*min_prob < 1, i.e. 0 <= min_prob < {1.0 / num_objectives:.6g}",
        )
    return float(min_prob)


def check_emphasis_options(options: MaestroConfig | RandomOptions) -> None:
    """The options maestro and random share (beta, normalization, norm_eps, seed), checked in one place."""
    check_beta(options.beta)
    _check(
        options.normalization in NORMALIZATIONS,
        f"normalization must be one of {list(NORMALIZATIONS)}, got {options.normalization!r}",
    )
    _check(_finite(options.norm_eps) and options.norm_eps > 0, f"norm_eps must be > 0, got {options.norm_eps!r}")
    _check(_int(options.seed), f"seed must be an int, got {options.seed!r}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pos_int(value: object) -> bool:
    return _int(value) and value >= 1
