"""``AggregatorSpec``: everything that describes a run's reward aggregation, in one validated value.

Two readers, one JSON:

- the launcher's flags (``--reward.aggregator/objectives/weights/context/failure_policy/weights_log/plugins``,
  ``--<aggregator>.<option>``, ``--perplexity.*``): ``integration.flags.spec_from_flags``, once, in the driver;
- that spec's ``to_json()``, which the driver hands to the Ray actors as ``--reward.aggregator_args``, a patched
  OpenRLHF's own ``--reward.aggregator_args`` and the saved ``reward_aggregator.json`` / checkpoint record:
  ``AggregatorSpec.from_json`` (``from_aggregator_args`` with the aggregator's name taken out).

``SPEC_FIELDS`` is the one table of the fields, their JSON keys and their flags.

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
from openrlhf_maestro.method import RewardAggregator, check_target, get_aggregator, load_module, validate_prior
from openrlhf_maestro.metric_names import colliding_key, objective_key, reward_key
from openrlhf_maestro.probe import CONTEXTS

OBJECTIVE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
ARGS_FLAG = "--reward.aggregator_args"


@dataclass(frozen=True)
class SpecField:
    """One row of ``SPEC_FIELDS``: a spec field, its key in the JSON, the launcher flag that sets it."""

    name: str
    """The ``AggregatorSpec`` field."""
    key: str
    """Its key in ``to_json`` / ``--reward.aggregator_args``."""
    flag: str
    """The launcher's flag for it (``integration.flags``), named in its errors."""


SPEC_FIELDS = (
    SpecField("aggregator", "aggregator", "--reward.aggregator"),
    SpecField("objectives", "objectives", "--reward.objectives"),
    SpecField("weights", "weights", "--reward.weights"),
    SpecField("options", "options", "--<aggregator>.*"),
    SpecField("context", "context", "--reward.context"),
    SpecField("channels", "channels", "--<channel>.*"),
    SpecField("failure_policy", "failure_policy", "--reward.failure_policy"),
    SpecField("weights_log", "weights_log", "--reward.weights_log"),
    SpecField("plugins", "plugins", "--reward.plugins"),
)
FIELD = {f.name: f for f in SPEC_FIELDS}
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
    option_values: Any = field(default=None, init=False, compare=False, repr=False)
    """The options as the aggregator class's ``options_class`` value (``validate_options``); set by the spec."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", load_plugins(self.plugins))
        cls = self.aggregator_class  # raises on an unknown name
        objectives = tuple(self.objectives)
        if not objectives:
            raise SpecError(
                f"the {self.aggregator!r} aggregator needs objectives: the keys {objective_key('<name>')} your reward "
                "function puts in extra_logs, or model channels",
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
        for name in objectives:  # reward/<objective> is logged beside the hook's own reward/* keys
            if clash := colliding_key(name):
                raise SpecError(
                    f"objective {name!r} would be logged as {reward_key(name)}, which collides with the plugin's own "
                    f"key {clash}; rename the objective (in --reward.objectives and the reward function's extra_logs)",
                    field="objectives",
                )
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
            if cls.weights_are_prior:
                try:
                    validate_prior(weights, len(objectives))  # the prior's one check (also config's, Conductor's)
                except ValueError as err:
                    raise SpecError(f"the weights are {self.aggregator}'s prior: {err}", field="weights") from None
            object.__setattr__(self, "weights", weights)
        try:  # the aggregator's class checks its options (e.g. MaestroConfig), before any model loads
            object.__setattr__(self, "option_values", cls.validate_options(self.options, len(objectives)))
        except (TypeError, ValueError) as err:
            raise SpecError(str(err), field="options") from None
        # JSON has no tuples: a list option (hidden_sizes) is the tuple to_json wrote as a list
        object.__setattr__(
            self, "options", {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        )
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
        target = cls.target_of(self.option_values)
        try:
            check_target(target, objectives)
        except ValueError as err:
            raise SpecError(str(err), field="options") from None
        if target is not None and (clash := colliding_key(target)):
            raise SpecError(
                f"the target {target!r} would log as {clash}, one of the hook's own keys; name the target otherwise",
                field="options",
            )
        if target is not None and self.context != "prompt":
            raise SpecError(
                f"the target {target!r} (meta_reward alignment) draws one emphasis per prompt from h at the prompt, "
                f"so it needs context prompt, got {self.context!r}: pass {FIELD['context'].flag} prompt (JSON: "
                '"context": "prompt")',
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
        """Whether the aggregator, with these options, reads prompt-group statistics (2+ responses per group);
        the class answers from the options, nothing is built."""
        return self.aggregator_class.needs_groups(self.option_values)

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
        """A plain dict (lists, not tuples; keys from ``SPEC_FIELDS``) that ``from_json`` turns back into an equal
        spec; ``context`` only for an aggregator that reads hidden states (elsewhere it means nothing)."""
        plain = {
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
        if not self.needs_hidden:
            del plain["context"]
        return {f.key: plain[f.name] for f in SPEC_FIELDS if f.name in plain}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AggregatorSpec:
        """A ``to_json`` dict (also ``--reward.aggregator_args``, which a launcher run carries to its actors);
        keys that are not the spec's (``hidden_size``, ``state`` of a saved record) are ignored."""
        keys = {f.key for f in SPEC_FIELDS}
        data = {k: v for k, v in data.items() if k in keys}
        return cls.from_aggregator_args(data.pop("aggregator"), data)

    @classmethod
    def from_aggregator_args(cls, aggregator: str, args: Mapping[str, Any]) -> AggregatorSpec:
        """``--reward.aggregator_args '{"aggregator": NAME, ...}'`` (a patched OpenRLHF); errors name the flag.

        Keys: objectives (required), weights, options, context, channels, failure_policy, weights_log, plugins.
        """
        try:
            if not isinstance(args, Mapping):
                raise SpecError(f"must be a JSON object, got {args!r}")
            args = dict(args)
            load_plugins(args.get("plugins") or [])  # they may register the aggregator named
            keys = [f.key for f in SPEC_FIELDS if f.name != "aggregator"]
            unknown = sorted(set(args) - set(keys))
            if unknown:
                raise SpecError(f"unknown keys {unknown}; valid keys: {keys}")
            objectives = args.get("objectives")
            if not isinstance(objectives, list) or not objectives:
                raise SpecError(
                    'needs "objectives": a non-empty list of the names your reward function reports as '
                    f'extra_logs["{objective_key("<name>")}"], e.g. {{"objectives": ["format", "length"]}}; '
                    f"got {objectives!r}"
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
                failure_policy=args.get("failure_policy", "stop"),
                weights_log=args.get("weights_log"),
                plugins=tuple(args.get("plugins") or ()),
            )
        except SpecError as err:
            where = f' "{FIELD[err.field].key}"' if err.field else ""
            raise SpecError(f"{ARGS_FLAG}{where}: {err}", err.field) from None
        except ValueError as err:
            raise SpecError(f"{ARGS_FLAG}: {err}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
