"""``AggregatorSpec``: everything that describes a run's reward aggregation, in one validated value.

Three sources parse into it, and it serializes back to the third:

- the launcher's flags (``--reward.aggregator/objectives/weights``, ``--maestro.*``, ``--perplexity.*``,
  ``--reward.failure_policy``, ``--reward.weights_log``): ``AggregatorSpec.from_flags(args)``;
- a patched OpenRLHF's ``--reward.aggregator_args`` (a JSON object): ``AggregatorSpec.from_aggregator_args``;
- the saved ``reward_aggregator.json`` / checkpoint record: ``AggregatorSpec.from_json(spec.to_json())``.

One naming rule for objectives (``OBJECTIVE_NAME``), one validation (``__post_init__``). The aggregator's
class (from the registry in ``openrlhf_maestro.method``) says which options it reads, whether its weights
are a prior and whether it needs hidden states; nothing here compares an aggregator's name. No Ray or
OpenRLHF import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openrlhf_maestro.channels import ModelChannel, get_channel, is_channel
from openrlhf_maestro.method import RewardAggregator, get_aggregator, load_module
from openrlhf_maestro.probe import CONTEXTS

OBJECTIVE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
ARGS_FLAG = "--reward.aggregator_args"
JSON_KEYS = (
    "objectives",
    "weights",
    "options",
    "context",
    "channels",
    "failure_policy",
    "drop_invalid_samples",  # older: true is failure_policy "drop_response"
    "weights_log",
    "plugins",
)
FAILURE_POLICIES = ("stop", "drop_response", "skip_objective")


def load_plugins(plugins: object) -> tuple[str, ...]:
    """Import each plugin module or ``.py`` file (once per process), so that what it registers resolves.

    Raises:
        SpecError: ``plugins`` is not a list of non-empty strings, or one of them fails to import.
    """
    if isinstance(plugins, str) or not all(isinstance(p, str) and p for p in plugins):
        raise SpecError(f"plugins must be a list of module names or .py paths, got {plugins!r}", "plugins")
    for plugin in plugins:
        try:
            load_module(plugin)
        except (ImportError, ValueError) as err:
            raise SpecError(f"cannot import plugin {plugin!r}: {err}", "plugins") from None
    return tuple(plugins)


class SpecError(ValueError):
    """The aggregation described is invalid; the message names the value and the fix.

    ``field`` names the spec field at fault, so each source can name its own flag or key for it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AggregatorSpec:
    aggregator: str
    """A registered name (``available_aggregators()``), an entry point, ``module:Class`` or ``file.py:Class``."""
    objectives: tuple[str, ...]
    """K objective names: ``extra_logs["obj/<name>"]`` of the reward function, or a model channel."""
    weights: tuple[float, ...] | None = None
    """K numbers: static weights, or the prior w_prior when the aggregator's ``weights_are_prior``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The aggregator's own options; only names in its class's ``option_names``."""
    context: str = "response"
    """Where a hidden-state aggregator reads h: the response's last token or the prompt's."""
    channels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Options of the model channels among the objectives (the channel class's defaults, then these)."""
    failure_policy: str = "stop"
    """What a response whose reward function failed (raised, None, or a missing / non-finite objective) does:
    ``stop`` the step with an error naming it; ``drop_response``: zero advantage, counted; ``skip_objective``:
    only the missing objectives are left out of that response's R (the remaining weights renormalized; all
    missing: zero advantage), each skip counted per objective."""
    weights_log: str | None = None
    """Append one JSON line per response and step (prompt, weights) to this file."""
    plugins: tuple[str, ...] = ()
    """Modules (``pkg.mod``) or files (``path.py``) imported first, in every process: they register aggregators
    (``@register_aggregator``) and model channels (``@register_channel``) under short names."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", load_plugins(self.plugins))
        cls = self.aggregator_class  # raises on an unknown name
        objectives = tuple(self.objectives)
        if not objectives:
            raise SpecError(
                f"the {self.aggregator!r} aggregator needs objectives: the keys obj/<name> your reward function "
                "puts in extra_logs, or model channels",
                field="objectives",
            )
        bad = [o for o in objectives if not isinstance(o, str) or not OBJECTIVE_NAME.match(o)]
        if bad:
            raise SpecError(
                f"objective names {bad} are not valid: use letters, digits, '_', '.' or '-' (no ',', '/' or spaces)",
                field="objectives",
            )
        repeated = sorted({o for o in objectives if objectives.count(o) > 1})
        if repeated:
            raise SpecError(f"objectives name {repeated} more than once", field="objectives")
        object.__setattr__(self, "objectives", objectives)
        if self.weights is not None:
            weights = tuple(self.weights)
            if not all(_is_number(w) for w in weights) or len(weights) != len(objectives):
                raise SpecError(
                    f"weights must be {len(objectives)} finite numbers, one per objective {list(objectives)}; "
                    f"got {list(weights)}",
                    field="weights",
                )
            weights = tuple(float(w) for w in weights)
            if cls.weights_are_prior and (any(w < 0 for w in weights) or sum(weights) <= 0):
                raise SpecError(
                    f"the weights are {self.aggregator}'s prior: non-negative, positive sum, got {list(weights)}",
                    field="weights",
                )
            object.__setattr__(self, "weights", weights)
        unknown = sorted(set(self.options) - set(cls.option_names))
        if unknown:
            hint = " (the prior is the weights)" if "prior" in unknown else ""
            raise SpecError(
                f"the {self.aggregator!r} aggregator has no options {unknown}{hint}; it reads "
                f"{list(cls.option_names) or 'none'}",
                field="options",
            )
        object.__setattr__(self, "options", dict(self.options))
        if self.failure_policy not in FAILURE_POLICIES:
            raise SpecError(
                f"failure_policy must be one of {list(FAILURE_POLICIES)}, got {self.failure_policy!r}",
                field="failure_policy",
            )
        if self.failure_policy == "skip_objective":
            if not cls.handles_missing:
                raise SpecError(
                    f"the {self.aggregator!r} aggregator cannot leave out a missing objective (its class does not "
                    "declare handles_missing); use failure_policy stop or drop_response",
                    field="failure_policy",
                )
            if self.options.get("normalization") == "batch":
                raise SpecError(
                    "failure_policy skip_objective needs normalization 'group' or 'none': the running statistics "
                    "of 'batch' count every objective in every row",
                    field="failure_policy",
                )
        if self.context not in CONTEXTS:
            raise SpecError(f"context must be one of {list(CONTEXTS)}, got {self.context!r}", field="context")
        channels = {}
        for name, given in dict(self.channels).items():
            if name not in self.model_channels:
                raise SpecError(
                    f"options given for channel {name!r}, which is not a model channel among the objectives "
                    f"{list(objectives)}",
                    field="channels",
                )
            channels[name] = dict(given)
        for name in self.model_channels:
            try:
                channels[name] = self.channel(name, channels.get(name, {})).options
            except ValueError as err:
                raise SpecError(str(err), field="channels") from None
        object.__setattr__(self, "channels", channels)
        rms = [n for n in self.model_channels if get_channel(n).source == "reward_model"]
        if len(rms) > 1:
            raise SpecError(f"channels {rms} each need a reward model; one is supported", field="objectives")
        try:  # the aggregator's own checks of its options (e.g. MaestroConfig): fail before any model loads
            aggregator = self.build(hidden_size=None)
        except (TypeError, ValueError) as err:
            raise SpecError(f"the {self.aggregator!r} aggregator's options: {err}", field="options") from None
        if aggregator.target_objective is not None and self.context != "prompt":
            raise SpecError(
                f"the target {aggregator.target_objective!r} (meta_reward alignment) draws one emphasis per prompt "
                f"from h at the prompt, so it needs context prompt, got {self.context!r}: pass "
                "--maestro.context prompt",
                field="context",
            )

    # -- what the aggregator needs ------------------------------------------------------------------------

    @property
    def aggregator_class(self) -> type[RewardAggregator]:
        try:
            return get_aggregator(self.aggregator)
        except ValueError as err:
            raise SpecError(str(err), field="aggregator") from None

    @property
    def needs_hidden(self) -> bool:
        return self.aggregator_class.needs_hidden

    @property
    def needs_groups(self) -> bool:
        """Whether the aggregator, with these options, reads prompt-group statistics (2+ responses per group)."""
        return self.build(hidden_size=None).needs_groups

    @property
    def model_channels(self) -> list[str]:
        """The objectives a registered ``ModelChannel`` computes (``openrlhf_maestro.channels``)."""
        return [o for o in self.objectives if is_channel(o)]

    @property
    def function_objectives(self) -> list[str]:
        """The objectives the reward function reports (the rest are computed by the plugin)."""
        return [o for o in self.objectives if not is_channel(o)]

    def channel(self, name: str, options: Mapping[str, str] | None = None) -> ModelChannel:
        """The channel object for objective ``name``, with this spec's options for it."""
        return get_channel(name)(**(self.channels.get(name, {}) if options is None else options))

    @property
    def drop_invalid_samples(self) -> bool:
        """Whether a failed response is dropped rather than stopping the step (either non-stop policy)."""
        return self.failure_policy != "stop"

    def build(self, hidden_size: int | None) -> RewardAggregator:
        aggregator = self.aggregator_class.build(self.objectives, self.weights, self.options, hidden_size)
        aggregator.accepts_missing = self.failure_policy == "skip_objective"
        return aggregator

    # -- JSON -----------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) that ``from_json`` turns back into an equal spec."""
        return {
            "aggregator": self.aggregator,
            "objectives": list(self.objectives),
            "weights": None if self.weights is None else list(self.weights),
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "context": self.context,
            "channels": {k: dict(v) for k, v in self.channels.items()},
            "failure_policy": self.failure_policy,
            "weights_log": self.weights_log,
            "plugins": list(self.plugins),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AggregatorSpec:
        """A ``to_json`` dict, or a ``reward_aggregator.json`` written before the spec existed (``config`` held
        the options and weights were strings); keys that are not the spec's (``hidden_size``) are ignored."""
        data = dict(data)
        load_plugins(data.get("plugins") or ())  # before the aggregator's options are looked up
        aggregator = data["aggregator"]
        options = data.get("options")
        if options is None:  # the older record
            allowed = get_aggregator(aggregator).option_names
            options = {k: v for k, v in (data.get("config") or {}).items() if k in allowed}
        if "hidden_sizes" in options:
            options["hidden_sizes"] = tuple(options["hidden_sizes"])
        weights = data.get("weights")
        return cls(
            aggregator=aggregator,
            objectives=tuple(data["objectives"]),
            weights=None if weights is None else tuple(float(w) for w in weights),
            options=options,
            context=data.get("context", "response"),
            channels=data.get("channels", {}),
            failure_policy=_failure_policy(data),
            weights_log=data.get("weights_log"),
            plugins=tuple(data.get("plugins") or ()),
        )

    @classmethod
    def from_aggregator_args(cls, aggregator: str, args: Mapping[str, Any]) -> AggregatorSpec:
        """``--reward.aggregator_args '{"aggregator": NAME, ...}'`` (a patched OpenRLHF); errors name the flag.

        Keys: objectives (required), weights, options, context, channels, failure_policy, weights_log, plugins.
        ``maestro`` is the older spelling of ``options``, ``drop_invalid_samples: true`` of ``failure_policy:
        "drop_response"``.
        """
        try:
            if not isinstance(args, Mapping):
                raise SpecError(f"must be a JSON object, got {args!r}")
            args = dict(args)
            load_plugins(args.get("plugins") or [])  # they may register the aggregator named
            if "maestro" in args:
                if "options" in args:
                    raise SpecError('give "options" or its older spelling "maestro", not both')
                args["options"] = args.pop("maestro")
            unknown = sorted(set(args) - set(JSON_KEYS))
            if unknown:
                raise SpecError(f"unknown keys {unknown}; valid keys: {list(JSON_KEYS)}")
            objectives = args.get("objectives")
            if not isinstance(objectives, list) or not objectives:
                raise SpecError(
                    'needs "objectives": a non-empty list of the names your reward function reports as '
                    f'extra_logs["obj/<name>"], e.g. {{"objectives": ["format", "length"]}}; got {objectives!r}'
                )
            for key, kind in (("options", dict), ("channels", dict)):
                if not isinstance(args.get(key, {}), kind):
                    raise SpecError(f'"{key}" must be a JSON object, got {args[key]!r}')
            if "context" in args and not get_aggregator(aggregator).needs_hidden:
                raise SpecError(f'"context" only applies to aggregators that read hidden states, not {aggregator!r}')
            weights = args.get("weights")
            if weights is not None and not isinstance(weights, list):
                raise SpecError(f'"weights" must be a list of numbers, got {weights!r}')
            return cls(
                aggregator=aggregator,
                objectives=tuple(objectives),
                weights=None if weights is None else tuple(weights),
                options=args.get("options", {}),
                context=args.get("context", "response"),
                channels=args.get("channels", {}),
                failure_policy=_failure_policy(args),
                weights_log=args.get("weights_log"),
                plugins=tuple(args.get("plugins") or ()),
            )
        except SpecError as err:
            where = f' "{err.field}"' if err.field else ""
            raise SpecError(f"{ARGS_FLAG}{where}: {err}", err.field) from None
        except ValueError as err:
            raise SpecError(f"{ARGS_FLAG}: {err}") from None


def _failure_policy(data: Mapping[str, Any]) -> str:
    """``failure_policy``, or the older boolean ``drop_invalid_samples`` (true: drop_response)."""
    if "failure_policy" in data and "drop_invalid_samples" in data:
        raise SpecError('give "failure_policy" or its older form "drop_invalid_samples", not both', "failure_policy")
    if "failure_policy" in data:
        return data["failure_policy"]
    return "drop_response" if data.get("drop_invalid_samples") else "stop"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
