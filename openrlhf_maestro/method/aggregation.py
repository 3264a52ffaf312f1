"""Reward aggregators: K objectives r_ijk -> one scalar R_ij per response, before GRPO's group_norm.

    sum:     R_ij = Σ_k w_k · r_ijk                              (static weights, like TRL's reward_weights)
    gdpo:    R_ij = Σ_k w_k · r̃_ijk,  r̃ = per-objective z-score inside the group (NVIDIA's GDPO; its
             batch whitening is OpenRLHF's reinforce_baseline estimator)
    maestro: R_ij = Σ_k w_k(a_ij) · r̃_ijk,  a_ij ~ π_φ(·|h_ij)  (MAESTRO; π_φ learns from feedback(Â))
    random:  R_ij = Σ_k w_k(a_ij) · r̃_ijk,  a_ij ~ Uniform{0..K−1}  (ablation: MAESTRO without a Conductor)

N responses, K objectives, H hidden width; group_ids give each response's prompt group. The caller then
applies the usual group normalization (see `group_norm`) and, for maestro, passes Â back to feedback().
Everything runs on CPU in float32 (the Conductor lives in OpenRLHF's CPU trainer actor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from openrlhf_maestro.metric_names import (
    CONDUCTOR_ENTROPY,
    TARGET_FRACTION,
    TARGET_GAIN,
    emphasis_key,
    reward_key,
    weight_key,
)

from .conductor import Conductor, Features
from .config import GDPOOptions, MaestroConfig, RandomOptions, check_min_prob
from .meta_update import MetaUpdater
from .normalize import ObjectiveNormalizer, group_index, group_norm, group_zscore, scalarize
from .weights import action_weights, validate_prior, weight_matrix

__all__ = [
    "AggregateOutput",
    "GDPOAggregator",
    "MaestroAggregator",
    "RandomEmphasisAggregator",
    "RewardAggregator",
    "SumAggregator",
    "alignment_values",
    "available_aggregators",
    "build_aggregator",
    "check_option_names",
    "check_target",
    "counterfactual_advantages",
    "get_aggregator",
    "group_norm",
    "load_module",
    "register_aggregator",
]


@dataclass
class AggregateOutput:
    """Result of RewardAggregator.aggregate()."""

    rewards: Tensor
    """(N,) float32 scalarized reward R_ij."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalar logs, named in ``openrlhf_maestro.metric_names`` (``reward/<objective>``, ``aggregator/weight/...``)."""
    weights: Tensor | None = None
    """(N, K) weights used per response (None if not meaningful)."""
    expected_weights: Tensor | None = None
    """(N, K) the weights' expectation under the aggregator's own policy for each response, when the weights
    are drawn from one (maestro: E_{a~π_φ(·|h)}[w(a)]); None otherwise."""


def check_target(target: str | None, objectives: Sequence[str]) -> None:
    """A target (the alignment meta-reward's) is kept out of R, so it cannot also be a training objective."""
    if target is not None and target in objectives:
        raise ValueError(
            f"target {target!r} is also a training objective {list(objectives)}: the alignment meta-reward keeps "
            "the target out of R; drop it from the objectives or name another target"
        )


# ---- registry (verl-style) ----------------------------------------------------------------------------------
_AGGREGATORS: dict[str, type[RewardAggregator]] = {}


def register_aggregator(name: str) -> Callable[[type[RewardAggregator]], type[RewardAggregator]]:
    """Class decorator: register a RewardAggregator under `name`.

    Re-registering the same class (also a reloaded copy: same module and qualname) is harmless;
    registering a different class under a taken name raises ValueError.
    """

    def decorator(cls: type[RewardAggregator]) -> type[RewardAggregator]:
        existing = _AGGREGATORS.get(name)
        if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
            raise ValueError(
                f"aggregator {name!r} is already registered to {_qualname(existing)}; cannot register {_qualname(cls)}"
            )
        cls.name = name
        _AGGREGATORS[name] = cls
        return cls

    return decorator


# Other packages register aggregators here (setup.py entry_points); they then work like the built-in names.
ENTRY_POINT_GROUP = "openrlhf_maestro.aggregators"


def get_aggregator(name: str) -> type[RewardAggregator]:
    """The aggregator class for `name`: a registered name, an entry point of ENTRY_POINT_GROUP, or a class given
    as ``package.module:Class`` / ``path/to/file.py:Class`` (registered under that string on first use).

    Raises:
        ValueError: listing the valid names.
    """
    if name in _AGGREGATORS:
        return _AGGREGATORS[name]
    entry = _entry_points().get(name)
    if entry is not None:
        cls = entry.load()
    elif ":" in name:
        cls = _load_class(name)
    else:
        raise ValueError(
            f"unknown reward aggregator {name!r}; valid names: {available_aggregators()}, or a RewardAggregator "
            "subclass as package.module:Class or path/to/file.py:Class"
        )
    if not (isinstance(cls, type) and issubclass(cls, RewardAggregator)):
        raise ValueError(f"reward aggregator {name!r} resolved to {cls!r}, which is not a RewardAggregator subclass")
    if not cls.name:
        cls.name = name
    return cls


def available_aggregators() -> list[str]:
    """Sorted registered and entry-point names."""
    return sorted(set(_AGGREGATORS) | set(_entry_points()))


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_module(where: str):
    """Import ``package.module`` or execute ``path/to/file.py`` (once per process) and return the module."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = Path(where).resolve()
    module_name = "_openrlhf_maestro_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ValueError(f"cannot load the file {where!r}: it does not exist or is not a Python file")
    module = sys.modules[module_name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_class(target: str) -> type:
    where, _, attr = target.rpartition(":")
    module = load_module(where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"reward aggregator {target!r}: {where} defines no {attr!r}") from None


def build_aggregator(name: str, objectives: Sequence[str], **kwargs: Any) -> RewardAggregator:
    """get_aggregator(name)(objectives, **kwargs)."""
    return get_aggregator(name)(objectives, **kwargs)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ---- interface ----------------------------------------------------------------------------------------------
class RewardAggregator:
    """Interface: aggregate K objectives into one reward per response; optionally learn from advantages.

    Args:
        objectives: the K objective names, in the column order of `rewards`.
    """

    name: ClassVar[str] = ""
    needs_hidden: ClassVar[bool] = False
    """True: aggregate() needs each response's hidden state h (N, H); the integration then captures it."""
    weights_are_prior: ClassVar[bool] = False
    """True: the weights are a prior w_prior (non-negative, positive sum), not static weights."""
    options_class: ClassVar[type | None] = None
    """A dataclass of the aggregator's own options (each field's docstring is its help; the launcher's flags are
    ``--<name>.<field>``), whose ``__post_init__`` checks them; None: no options."""
    weights_field: ClassVar[str | None] = None
    """The ``options_class`` field that receives the spec's weights (maestro: ``prior``), so not an option."""
    option_names: ClassVar[tuple[str, ...]] = ()
    """The keyword options build() accepts (besides objectives, weights and the hidden width): the fields of
    ``options_class`` but ``weights_field`` (set by ``__init_subclass__``)."""
    options: Any = None
    """This instance's ``options_class`` value (None without one)."""
    handles_missing: ClassVar[bool] = False
    """True: aggregate() can take NaN for a missing objective when ``accepts_missing`` is set (the
    ``skip_objective`` failure policy): that objective is left out of the response's R, the rest reweighted."""
    accepts_missing: bool = False
    """Set by the integration under ``skip_objective`` (only for a class that ``handles_missing``)."""
    learns_from_advantages: ClassVar[bool] = False
    """True: feedback() learns from the group-relative advantages Â of R (the integration computes them, and
    needs a group-relative estimator and groups for it); False: feedback() is never called."""
    defining_estimator: ClassVar[str | None] = None
    """The advantage estimator under which R gives the method's advantage as its authors define it (None: the
    method defines R only, any estimator applies to it). The integration notes other estimators."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "options_class" in cls.__dict__ and cls.options_class is not None:
            cls.option_names = tuple(f.name for f in fields(cls.options_class) if f.name != cls.weights_field)

    @classmethod
    def validate_options(cls, options: Mapping[str, Any] | None = None, num_objectives: int | None = None) -> Any:
        """The ``options_class`` value of ``options`` (None without an options class), checked without building
        the aggregator; ``num_objectives`` K enables the checks that depend on it.

        Raises:
            ValueError: naming the unknown option or the bad value.
        """
        options = dict(options or {})
        check_option_names(cls, options)
        return None if cls.options_class is None else cls.options_class(**options)

    @classmethod
    def build(
        cls,
        objectives: Sequence[str],
        weights: Sequence[float] | None = None,
        options: Mapping[str, Any] | None = None,
        hidden_size: int | None = None,
    ) -> RewardAggregator:
        """The aggregator from the parts of an AggregatorSpec; subclasses whose constructor differs override it."""
        options = dict(options or {})
        check_option_names(cls, options)
        return cls(objectives, weights, **options)

    @classmethod
    def needs_groups(cls, options: Any = None) -> bool:
        """Whether aggregate() with these options (an ``options_class`` value; None: the defaults) reads statistics
        of the prompt groups (so each group needs 2+ responses). A static weighted sum does not; a z-score inside
        the group or a group-relative meta-reward does."""
        return True

    @classmethod
    def target_of(cls, options: Any = None) -> str | None:
        """The target objective that aggregate() with these options (an ``options_class`` value) reads as
        ``target=``, kept out of R; None: it reads none (read from the class, nothing is built)."""
        return None

    @property
    def target_objective(self) -> str | None:
        """``target_of`` this aggregator's options."""
        return self.target_of(getattr(self, "options", None))

    @classmethod
    def has_state(cls) -> bool:
        """Whether state_dict() holds anything (a learned Conductor, a random generator, running statistics)."""
        return cls.state_dict is not RewardAggregator.state_dict

    def __init__(self, objectives: Sequence[str]) -> None:
        names = list(objectives)
        if not names:
            raise ValueError("objectives must name at least one objective, got []")
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"objectives must be distinct non-empty strings, got {names}")
        self.objectives: list[str] = names

    def aggregate(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None = None, *, target: Tensor | None = None
    ) -> AggregateOutput:
        """rewards (N, K) float, group_ids (N,) int, hidden (N, H) or None -> AggregateOutput(rewards (N,)).

        target: (N,) values of a target objective kept out of R (NaN where missing); only an aggregator that
        learns from one reads it (maestro with meta_reward='alignment'), the others refuse it (`refuse_target`).
        """
        raise NotImplementedError

    def refuse_target(self, target: Tensor | None) -> None:
        """ValueError if a target was passed to an aggregator that does not learn from one."""
        if target is not None:
            raise ValueError(
                f"the {self.name!r} aggregator does not read a target objective; a target is only learnt from by "
                "maestro with meta_reward='alignment' (--maestro.meta_reward alignment --maestro.target NAME). "
                "Pass target=None, or train on the objective as one of the rewards"
            )

    def feedback(self, advantages: Tensor) -> dict[str, float]:
        """Group-relative advantages Â (N,) of the last aggregate() call. Stateless aggregators ignore them."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(
                f"the {self.name!r} aggregator is stateless but got state with keys {sorted(state)} "
                f"(saved by the {state.get('aggregator', 'unknown')!r} aggregator?)"
            )

    # ---- shared validation ----
    def validate_inputs(self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validate shapes, finiteness and groups; return rewards as float32 CPU and group_ids as long CPU.

        The finiteness of hidden is checked where it is used (Conductor.features), in the same pass as its RMS.
        """
        k = len(self.objectives)
        if not isinstance(rewards, Tensor) or rewards.dim() != 2 or rewards.shape[1] != k:
            got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
            raise ValueError(f"rewards must have shape (N, K) = (N, {k}) for objectives {self.objectives}, got {got}")
        if not rewards.is_floating_point():
            raise ValueError(f"rewards must be a float tensor, got {rewards.dtype}")
        n = rewards.shape[0]
        if n == 0:
            raise ValueError("rewards is empty (N=0)")
        rewards = rewards.detach().cpu()
        bad = ~torch.isfinite(rewards)
        if self.accepts_missing:  # NaN marks a missing objective; an infinity is still an error
            bad &= ~torch.isnan(rewards)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            value = rewards[row, col].item()
            raise ValueError(f"reward {self.objectives[col]!r} (objective {col}) is not finite at row {row}: {value}")
        if not isinstance(group_ids, Tensor) or group_ids.is_floating_point() or group_ids.dtype == torch.bool:
            got = group_ids.dtype if isinstance(group_ids, Tensor) else type(group_ids).__name__
            raise ValueError(f"group_ids must be an integer tensor, got {got}")
        if tuple(group_ids.shape) != (n,):
            raise ValueError(f"group_ids must have shape (N,) = ({n},) to match rewards, got {tuple(group_ids.shape)}")
        group_ids = group_ids.detach().cpu().long()
        if self.needs_groups(self.options):
            group_index(group_ids)  # raises on a group of size one, naming its id
        if hidden is None:
            if self.needs_hidden:
                raise ValueError(f"the {self.name!r} aggregator needs hidden states of shape (N, H) = ({n}, H)")
        else:
            if not isinstance(hidden, Tensor) or hidden.dim() != 2 or hidden.shape[0] != n:
                got = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
                raise ValueError(f"hidden must have shape (N, H) = ({n}, H) to match rewards, got {got}")
        return rewards.to(torch.float32), group_ids

    def reward_metrics(self, rewards: Tensor) -> dict[str, float]:
        """`reward/<objective>`: batch mean of each raw objective (over the responses that have it)."""
        means = rewards.nanmean(0).tolist()
        return {reward_key(name): float(m) for name, m in zip(self.objectives, means, strict=True)}

    def emphasis_metrics(self, weights: Tensor, emphasized: Tensor) -> dict[str, float]:
        """For weights drawn per response: ``aggregator/weight/<objective>`` = mean_i w_ik (sums to 1 over k for
        normalized weights) and ``aggregator/emphasis/<objective>`` = share of responses i with emphasized_i = k.

        Args:
            weights: (N, K) the weights the responses got.
            emphasized: (N,) long, the objective each response's action emphasized.
        """
        k = len(self.objectives)
        share = torch.bincount(emphasized, minlength=k).float() / emphasized.numel()
        mean_w = weights.mean(0)
        metrics = {weight_key(name): float(mean_w[i]) for i, name in enumerate(self.objectives)}
        metrics.update({emphasis_key(name): float(share[i]) for i, name in enumerate(self.objectives)})
        return metrics


def check_option_names(cls: type[RewardAggregator], options: Mapping[str, Any]) -> None:
    """Refuse option names the aggregator class does not read (the one check of option names).

    Raises:
        ValueError: naming the unknown options and the valid ones.
    """
    unknown = sorted(set(options) - set(cls.option_names))
    if unknown:
        hint = f" (the {cls.weights_field} is the weights)" if cls.weights_field in unknown else ""
        raise ValueError(
            f"the {cls.name!r} aggregator has no options {unknown}{hint}; it reads {list(cls.option_names) or 'none'}"
        )


def _static_weights(weights: Sequence[float] | None, objectives: list[str]) -> Tensor:
    """(K,) float32 weights: one finite number per objective (default 1.0 each, as TRL's reward_weights)."""
    if weights is None:
        return torch.ones(len(objectives))
    values = [float(w) for w in weights]
    if len(values) != len(objectives):
        raise ValueError(
            f"weights must have one entry per objective (K={len(objectives)}: {objectives}), "
            f"got {len(values)}: {values}"
        )
    w = torch.tensor(values, dtype=torch.float32)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights must be finite, got {values}")
    return w


@register_aggregator("sum")
class SumAggregator(RewardAggregator):
    """R_ij = Σ_k w_k · r_ijk with static weights w (K,), default 1.0 each (a missing r_ijk: ``scalarize``).

    Args:
        objectives: K names.
        weights: K finite numbers (not normalized; group_norm afterwards is scale-invariant anyway).
    """

    handles_missing: ClassVar[bool] = True

    def __init__(self, objectives: Sequence[str], weights: Sequence[float] | None = None) -> None:
        super().__init__(objectives)
        self.weights = _static_weights(weights, self.objectives)

    @classmethod
    def needs_groups(cls, options: Any = None) -> bool:
        return False

    def aggregate(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None = None, *, target: Tensor | None = None
    ) -> AggregateOutput:
        """rewards (N, K), group_ids (N,) -> R (N,) = rewards @ w."""
        self.refuse_target(target)
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        scalar = scalarize(self.weights, rewards)
        return AggregateOutput(scalar, self.reward_metrics(rewards), self.weights.expand_as(rewards))


@register_aggregator("gdpo")
class GDPOAggregator(RewardAggregator):
    """R_ij = Σ_k w_k · r̃_ijk, r̃_ijk = (r_ijk − μ_ik) / (σ_ik + ε) per objective inside group i (GDPO).

    GDPO's advantage (TRL, verl, NeMo-RL) is then R whitened over the batch: Â = (R − mean) / std. Since R
    already has mean 0 in every group, OpenRLHF's ``reinforce_baseline`` (R − group mean, then whitening over
    the batch's tokens) gives exactly that: ``defining_estimator``. ``group_norm`` would standardize R per group
    a second time instead.

    Args:
        objectives: K names.
        weights: K finite numbers, default 1.0 each.
        eps: ε of the per-objective z-score.
    """

    handles_missing: ClassVar[bool] = True

    defining_estimator = "reinforce_baseline"
    options_class: ClassVar[type] = GDPOOptions

    def __init__(self, objectives: Sequence[str], weights: Sequence[float] | None = None, eps: float = 1e-6) -> None:
        super().__init__(objectives)
        self.weights = _static_weights(weights, self.objectives)
        self.options = GDPOOptions(eps=eps)
        self.eps = self.options.eps

    def aggregate(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None = None, *, target: Tensor | None = None
    ) -> AggregateOutput:
        """rewards (N, K), group_ids (N,) -> R (N,)."""
        self.refuse_target(target)
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        scalar = scalarize(self.weights, group_zscore(rewards, group_ids, self.eps))
        return AggregateOutput(scalar, self.reward_metrics(rewards), self.weights.expand_as(rewards))


@register_aggregator("maestro")
class MaestroAggregator(RewardAggregator):
    """MAESTRO: r̃ = normalize(r); a_ij ~ π_φ(·|h_ij); R_ij = Σ_k w_k(a_ij) · r̃_ijk; π_φ learns from Â.

    With ``meta_reward='alignment'`` (this project's extension; docs/method.md, "What the paper's meta-reward can
    and cannot learn") the action is per prompt group and the Conductor learns from a target objective t kept
    out of R:

        a_i ~ π_φ(·|h_i) with h_i the hidden state of group i's first response (every response of a group shares
              its prompt, so the integration must run with ``context prompt``); R_ij = Σ_k w_k(a_i) · r̃_ijk
        Â_i·(a) = group_norm(Σ_k w_k(a) r̃_i·k) for every emphasis a (K recomputations, no rollouts)
        u_ij = t_ij − mean_{j' with t} t_ij'   (over the group's responses that have a target; 0 where missing)
        G_i(a) = Σ_{j with t} Â_ij(a) · u_ij    (groups with fewer than 2 target values have no G)

    and feedback() takes the full-information step L(φ) = −mean_i Σ_a π_φ(a|h_i) G_i(a) − λ_ent H on the groups
    that have a G (MetaUpdater). To first order a policy step along Â(a) raises u by ∝ G_i(a), so G values an
    emphasis by how well its update points at the target; the paper's Â alone cannot tell prompt families apart.

    Args:
        objectives: K names (K emphasis actions, one per objective).
        config: MaestroConfig; keyword `options` override its fields (e.g. tau=0.5).
        hidden_size: H; if None the Conductor is built on the first aggregate() from hidden.shape[1].
    """

    handles_missing: ClassVar[bool] = True

    needs_hidden: ClassVar[bool] = True
    weights_are_prior: ClassVar[bool] = True
    learns_from_advantages: ClassVar[bool] = True
    options_class: ClassVar[type] = MaestroConfig
    weights_field: ClassVar[str] = "prior"

    @classmethod
    def validate_options(cls, options=None, num_objectives=None) -> MaestroConfig:
        """MaestroConfig(**options), with the floor checked against K when K is given."""
        config = super().validate_options(options)
        if num_objectives is not None:
            check_min_prob(config.min_prob, num_objectives)
        return config

    @classmethod
    def build(cls, objectives, weights=None, options=None, hidden_size=None) -> MaestroAggregator:
        """MaestroConfig(prior=weights, **options); the Conductor is built now when hidden_size is known."""
        config = replace(cls.validate_options(options), prior=None if weights is None else tuple(weights))
        return cls(objectives, config, hidden_size=hidden_size)

    def __init__(
        self,
        objectives: Sequence[str],
        config: MaestroConfig | None = None,
        *,
        hidden_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(objectives)
        config = config or MaestroConfig()
        check_option_names(type(self), {k: v for k, v in options.items() if k != self.weights_field})
        self.config = self.options = replace(config, **options) if options else config
        k = len(self.objectives)
        validate_prior(self.config.prior, k)
        check_min_prob(self.config.min_prob, k)
        self.normalizer = ObjectiveNormalizer(self.config.normalization, k, self.config.norm_eps)
        self.conductor: Conductor | None = None
        self.updater: MetaUpdater | None = None
        check_target(self.config.target, self.objectives)
        self._pending: tuple[Features, Tensor, Tensor | None] | None = None
        # meta_reward='alignment': the labelled groups' G (M, K) and the response count N of the last aggregate().
        self._pending_values: Tensor | None = None
        self._pending_n = 0
        if hidden_size is not None:
            self._build(hidden_size)

    @classmethod
    def target_of(cls, options: MaestroConfig | None = None) -> str | None:
        """meta_reward='alignment': the target's name (its action is per prompt: run with context prompt)."""
        config = options or MaestroConfig()
        return config.target if config.meta_reward == "alignment" else None

    def _build(self, hidden_size: int) -> Conductor:
        if self.conductor is None:
            c = self.config
            self.conductor = Conductor.from_config(c, hidden_size, len(self.objectives))
            self.updater = MetaUpdater(
                self.conductor,
                lr=c.lr,
                update_every=c.update_every,
                meta_steps=c.meta_steps,
                entropy_coef=c.entropy_coef,
                grad_clip=c.grad_clip,
            )
        elif self.conductor.hidden_size != hidden_size:
            raise ValueError(
                f"hidden width H={hidden_size} does not match the Conductor's hidden_size={self.conductor.hidden_size}"
            )
        return self.conductor

    def aggregate(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None = None, *, target: Tensor | None = None
    ) -> AggregateOutput:
        """rewards (N, K), group_ids (N,), hidden (N, H) -> R (N,); samples one action per response.

        meta_reward='alignment': one action per group, and `target` (N,) is required (NaN where missing).
        A float32 CPU `hidden` is kept by reference (not copied) until feedback(): do not modify it in place.
        """
        if self.config.meta_reward == "alignment":
            return self._aggregate_alignment(rewards, group_ids, hidden, target)
        self.refuse_target(target)  # meta_reward='advantage' (the paper's) reads none
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        assert hidden is not None
        conductor = self._build(hidden.shape[1])
        features = conductor.features(hidden)  # validates h before any state (running stats, RNG) changes
        r_tilde = self.normalizer(rewards, group_ids)  # (N, K)
        sample = conductor.sample_from_features(features, keep_graph=True)
        scalar = scalarize(sample.weights, r_tilde)  # R_ij = Σ_k w_k(a_ij) r̃_ijk
        self._pending = (sample.features, sample.actions, sample.logits)

        chosen = sample.actions if conductor.mode == "discrete" else sample.actions.argmax(-1)
        metrics = {**self.reward_metrics(rewards), **self.emphasis_metrics(sample.weights, chosen)}
        metrics[CONDUCTOR_ENTROPY] = float(sample.entropy.mean())
        return AggregateOutput(scalar, metrics, sample.weights, sample.expected_weights)

    def _aggregate_alignment(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None, target: Tensor | None
    ) -> AggregateOutput:
        """meta_reward='alignment' (see the class docstring): one action per group, G_i(a) for the labelled groups."""
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        assert hidden is not None
        target = self._validate_target(target, rewards.shape[0])
        conductor = self._build(hidden.shape[1])
        inverse, counts = group_index(group_ids)
        n = rewards.shape[0]
        # h of each group's first response: the prompt's context, shared by the whole group.
        first = torch.full((counts.numel(),), n).scatter_reduce(0, inverse, torch.arange(n), reduce="amin")
        features = conductor.features(hidden[first])  # validates h before any state (running stats, RNG) changes
        r_tilde = self.normalizer(rewards, group_ids)  # (N, K)
        sample = conductor.sample_from_features(features)  # (G,) actions; the update recomputes the logits
        weights = sample.weights[inverse]  # the group's weights for each of its responses
        scalar = scalarize(weights, r_tilde)  # R_ij = Σ_k w_k(a_i) r̃_ijk
        gain, labelled = alignment_values(r_tilde, group_ids, target, weight_matrix(conductor.prior, conductor.beta))
        self._pending = (Features(features.hidden[labelled], features.scale[labelled]), sample.actions[labelled], None)
        self._pending_values, self._pending_n = gain[labelled], n

        # per response, as under the paper's rule: a group's action counts once per response it weights
        metrics = {**self.reward_metrics(rewards), **self.emphasis_metrics(weights, sample.actions[inverse])}
        metrics[CONDUCTOR_ENTROPY] = float(sample.entropy.mean())
        metrics[TARGET_FRACTION] = float(labelled.float().mean())  # groups with a G
        chosen = gain[labelled].gather(-1, sample.actions[labelled].unsqueeze(-1))
        metrics[TARGET_GAIN] = float(chosen.mean()) if chosen.numel() else float("nan")
        return AggregateOutput(scalar, metrics, weights, sample.expected_weights[inverse])

    def _validate_target(self, target: Tensor | None, n: int) -> Tensor:
        name = self.config.target
        if target is None:
            raise ValueError(
                f"meta_reward='alignment' needs the target {name!r} as aggregate(..., target=(N,) tensor), NaN where "
                "it is missing; got none"
            )
        if not isinstance(target, Tensor) or tuple(target.shape) != (n,) or not target.is_floating_point():
            got = (tuple(target.shape), target.dtype) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(
                f"target {name!r} must be a float tensor of shape (N,) = ({n},), NaN where missing; got {got}"
            )
        target = target.detach().cpu().float()
        if bool(torch.isinf(target).any()):
            row = int(torch.isinf(target).nonzero()[0])
            raise ValueError(f"target {name!r} is infinite at row {row}; mark a missing value with NaN")
        return target

    def feedback(self, advantages: Tensor) -> dict[str, float]:
        """Â (N,) of the last aggregate(): buffer (h, a, Â); run the meta-update every `update_every` calls.

        meta_reward='alignment': Â is checked for its shape but not used: the buffered values are the labelled
        groups' G_i(·), computed in aggregate() from the counterfactual advantages.
        """
        if self._pending is None or self.updater is None:
            raise RuntimeError("feedback() needs a preceding aggregate() call whose advantages it receives")
        features, actions, logits = self._pending
        values = self._pending_values
        n = features.hidden.shape[0] if values is None else self._pending_n
        if not isinstance(advantages, Tensor) or tuple(advantages.shape) != (n,):
            got = tuple(advantages.shape) if isinstance(advantages, Tensor) else type(advantages).__name__
            raise ValueError(f"advantages must have shape (N,) = ({n},) like the last aggregate() call, got {got}")
        self._pending, self._pending_values = None, None
        if values is None:
            # Non-finite advantages are not rejected here: they make the meta-loss non-finite, and that update is
            # skipped and counted (one bad batch should not end a long run).
            self.updater.add(features, actions, advantages.detach().cpu().float(), logits)
        elif values.shape[0]:  # no labelled group in this batch: nothing to learn from, the period still counts
            self.updater.add(features, actions, values)
        return self.updater.step()

    def state_dict(self) -> dict:
        """Everything a resumed run needs to sample and update exactly as an uninterrupted one.

        Only tensors, lists, dicts, numbers, strings and None: loadable with torch.load(weights_only=True).
        """
        c = self.conductor
        return {
            "aggregator": self.name,
            "objectives": list(self.objectives),
            "config": self.config.to_dict(),
            "hidden_size": None if c is None else c.hidden_size,
            "conductor": None if c is None else {k: v.detach().clone() for k, v in c.state_dict().items()},
            "rng": None if c is None else c.get_rng_state(),
            "meta": None if self.updater is None else self.updater.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "pending": None if self._pending is None else [*self._pending[0], self._pending[1]],  # not the graph
            "pending_values": self._pending_values,
            "pending_n": self._pending_n,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("aggregator") != self.name:
            raise ValueError(f"state was saved by the {state.get('aggregator')!r} aggregator, not {self.name!r}")
        if list(state["objectives"]) != self.objectives:
            raise ValueError(f"state is for objectives {state['objectives']}, this aggregator has {self.objectives}")
        saved = state["config"]
        for key in ("mode", "hidden_sizes", "input_norm", "normalization", "meta_reward"):
            mine = self.config.to_dict()[key]
            theirs = saved.get(key, "advantage" if key == "meta_reward" else None)  # saved before the option
            if theirs != mine:
                raise ValueError(f"state has {key}={theirs!r}, this aggregator's config has {key}={mine!r}")
        self.normalizer.load_state_dict(state["normalizer"])
        if state["hidden_size"] is not None:
            conductor = self._build(int(state["hidden_size"]))
            conductor.load_state_dict(state["conductor"])
            conductor.set_rng_state(state["rng"])
            assert self.updater is not None
            self.updater.load_state_dict(state["meta"])
        pending = state["pending"]
        self._pending = None if pending is None else (Features(pending[0], pending[1]), pending[2], None)
        self._pending_values, self._pending_n = state.get("pending_values"), int(state.get("pending_n", 0))


def counterfactual_advantages(r_tilde: Tensor, group_ids: Tensor, weights: Tensor) -> Tensor:
    """Â_ij(a) = group_norm(R(a))_ij with R_ij(a) = Σ_k w_k(a) r̃_ijk, for every row a of `weights`.

    The advantage GRPO would give each response if its whole group had emphasis a (``group_norm``, OpenRLHF's
    (R − mean) / (std + 1e-9)): K recomputations of the scalarization, no rollouts.

    Args:
        r_tilde: (N, K) normalized objectives (NaN where missing, see ``scalarize``).
        group_ids: (N,) integer group ids.
        weights: (A, K) one weight vector per action, e.g. ``weight_matrix(prior, beta)``.

    Returns:
        (N, A) float32.
    """
    return torch.stack([group_norm(scalarize(w, r_tilde), group_ids) for w in weights], dim=-1)


def alignment_values(r_tilde: Tensor, group_ids: Tensor, target: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """G_i(a) = Σ_{j: t_ij present} Â_ij(a) · (t_ij − mean_{j': t_ij' present} t_ij'), per group i and action a.

    Args:
        r_tilde: (N, K) normalized objectives; group_ids: (N,) integer ids; target: (N,) float, NaN where missing;
        weights: (A, K) weight vector per action.

    Returns:
        G (num_groups, A) float32, in the order of ``torch.unique(group_ids)`` (0 where not labelled), and
        labelled (num_groups,) bool: the group has at least 2 target values and finite advantages (a group
        with one target value has no centred signal).
    """
    inverse, counts = group_index(group_ids)
    num_groups = counts.numel()
    present = ~torch.isnan(target)
    t = torch.where(present, target, torch.zeros_like(target))
    n_present = torch.zeros(num_groups).index_add_(0, inverse, present.float())
    mean = torch.zeros(num_groups).index_add_(0, inverse, t) / n_present.clamp(min=1)
    u = torch.where(present, t - mean[inverse], torch.zeros_like(t))  # (N,) centred over the present ones
    adv = counterfactual_advantages(r_tilde, group_ids, weights)  # (N, A)
    bad_rows = (~torch.isfinite(adv).all(-1)).long()
    finite = torch.zeros(num_groups, dtype=torch.long).index_add_(0, inverse, bad_rows) == 0
    contrib = torch.where(present.unsqueeze(-1), adv * u.unsqueeze(-1), torch.zeros_like(adv))
    gain = torch.zeros(num_groups, adv.shape[1]).index_add_(0, inverse, contrib)
    labelled = (n_present >= 2) & finite
    return torch.where(labelled.unsqueeze(-1), gain, torch.zeros_like(gain)), labelled


@register_aggregator("random")
class RandomEmphasisAggregator(RewardAggregator):
    """Ablation: MAESTRO's scalarization with a uniform random emphasis in place of the Conductor.

        r̃ = normalize(r);  a_ij ~ Uniform{0..K−1};  R_ij = Σ_k w_k(a_ij) · r̃_ijk,  w(a) = (1 − β)·w_prior + β·e_a

    Same weights map and normalization as `maestro` with its defaults, so `maestro` − `random` isolates what
    the learned π_φ(a | h) adds. Ignores hidden states and advantages.

    Args:
        objectives: K names.
        weights: w_prior, K non-negative numbers with a positive sum (default uniform).
        beta: β in [0, 1].
        normalization: `group`, `batch` or `none` (see ObjectiveNormalizer).
        norm_eps: ε of the normalization.
        seed: seeds the action generator; the global torch RNG is left untouched.
    """

    handles_missing: ClassVar[bool] = True

    weights_are_prior: ClassVar[bool] = True
    options_class: ClassVar[type] = RandomOptions

    def __init__(self, objectives: Sequence[str], weights: Sequence[float] | None = None, **options: Any) -> None:
        super().__init__(objectives)
        self.options = self.validate_options(options)
        self.prior = validate_prior(weights, len(self.objectives))
        self.beta = self.options.beta
        self.normalizer = ObjectiveNormalizer(self.options.normalization, len(self.objectives), self.options.norm_eps)
        self.generator = torch.Generator().manual_seed(self.options.seed)

    @classmethod
    def needs_groups(cls, options: RandomOptions | None = None) -> bool:
        return (options or RandomOptions()).normalization == "group"

    def aggregate(
        self, rewards: Tensor, group_ids: Tensor, hidden: Tensor | None = None, *, target: Tensor | None = None
    ) -> AggregateOutput:
        """rewards (N, K), group_ids (N,) -> R (N,); one uniform action per response."""
        self.refuse_target(target)
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        k = len(self.objectives)
        actions = torch.randint(k, (rewards.shape[0],), generator=self.generator)
        weights = action_weights(actions, self.prior, self.beta)
        scalar = scalarize(weights, self.normalizer(rewards, group_ids))
        metrics = {**self.reward_metrics(rewards), **self.emphasis_metrics(weights, actions)}
        return AggregateOutput(scalar, metrics, weights)

    def state_dict(self) -> dict:
        """The action generator and the normalizer: a resumed run draws the same actions. weights_only-safe."""
        return {
            "aggregator": self.name,
            "objectives": list(self.objectives),
            "rng": self.generator.get_state(),
            "normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("aggregator") != self.name:
            raise ValueError(f"state was saved by the {state.get('aggregator')!r} aggregator, not {self.name!r}")
        if list(state["objectives"]) != self.objectives:
            raise ValueError(f"state is for objectives {state['objectives']}, this aggregator has {self.objectives}")
        self.normalizer.load_state_dict(state["normalizer"])
        self.generator.set_state(state["rng"])
