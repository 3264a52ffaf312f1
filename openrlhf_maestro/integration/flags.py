"""The plugin's flags, added to OpenRLHF's own ``train_ppo_ray`` parser, parsed into an ``AggregatorSpec``.

The flags use OpenRLHF's dotted style, so ``hierarchize`` nests them like its own (``args.reward.aggregator``,
``args.maestro.tau``). The driver parses them into one ``AggregatorSpec`` right after OpenRLHF's parser returns
(``parse_launcher_spec``: the spec's own validation plus the OpenRLHF flags an aggregator depends on,
``openrlhf_problems``, shared with the hook on a patched OpenRLHF) and writes its JSON into the namespace as
``reward.aggregator_args``: every Ray actor rebuilds the spec from that JSON, on both paths.

    --reward.aggregator NAME          a registered aggregator, an entry point, module:Class or file.py:Class
    --reward.objectives A,B           --reward.weights 1,2
    --reward.failure_policy stop|drop_response|skip_objective    --reward.weights_log FILE
    --reward.plugins A.py,pkg.mod     imported first in every process: they register aggregators and channels
    --reward.context response|prompt  where a hidden-state aggregator reads h
    --<aggregator>.<option>           each registered aggregator's own options (the fields of its
                                      ``options_class``: --maestro.tau, --random.beta, --gdpo.eps, a plugin's;
                                      a module:Class aggregator's under its class's own ``name``)
    --perplexity.reasoning_end        --perplexity.reference_template   (the perplexity channel)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from openrlhf_maestro.channels import get_channel
from openrlhf_maestro.method import GROUP_ESTIMATORS, RewardAggregator, available_aggregators, get_aggregator
from openrlhf_maestro.metric_names import objective_key
from openrlhf_maestro.spec import (
    CONTEXTS,
    FAILURE_POLICIES,
    FIELD,
    AggregatorSpec,
    SpecError,
    load_plugins,
)

FILTER_SCORES = ("reward_function", "aggregator_weights")
SPEC_ARGS_DEST = "reward.aggregator_args"  # where the driver writes the spec's JSON (args.reward.aggregator_args)


def _option_type(f: dataclasses.Field) -> Any:
    """An argparse ``type`` for an options dataclass field, from its annotation (a string under
    ``from __future__ import annotations``): ``X | None`` also takes ``none``, ``tuple[T, ...]`` a comma list,
    ``bool`` true/false."""
    text = str(f.type).replace(" ", "")
    optional = "None" in text.split("|") or text.startswith("Optional[")
    text = "|".join(t for t in text.split("|") if t != "None")
    if text.startswith("Optional["):
        text = text.removeprefix("Optional[").removesuffix("]")
    scalars = {"int": int, "float": float, "str": str, "bool": _bool}
    if text.startswith(("tuple[", "Sequence[", "list[")):
        item = scalars.get(text.split("[", 1)[1].split(",")[0].rstrip("]"), str)
        convert = lambda value: tuple(item(x) for x in value.split(",") if x.strip())  # noqa: E731
    else:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        convert = scalars.get(text, type(default) if default is not None else str)
    if not optional:
        return convert
    return lambda value: None if value.lower() == "none" else convert(value)


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() in ("true", "1")


def upstream_hook_installed() -> bool:
    """Whether the installed OpenRLHF carries patches/openrlhf-0.11.2-reward-aggregator.patch, i.e. its CLI defines
    ``--reward.aggregator`` (a file read: no import, so it is safe before the CPU runtime is in place)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("openrlhf")
    locations = list(spec.submodule_search_locations or []) if spec else []
    cli = [Path(loc) / "cli" / "train_ppo_ray.py" for loc in locations]
    return any(path.is_file() and '"--reward.aggregator"' in path.read_text() for path in cli)


def add_plugin_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> bool:
    """Add the plugin's flags (module docstring) to OpenRLHF's parser; returns whether it added them.

    ``argv`` is scanned for ``--reward.plugins`` first, so the aggregators the plugins register have their
    ``--<aggregator>.<option>`` flags too. A patched OpenRLHF defines ``--reward.aggregator`` itself (a file
    defining ``RewardAggregator``, configured by ``--reward.aggregator_args``); then it builds the same
    ``AggregatorHook`` from ``openrlhf_maestro/integration/reward_aggregator.py``, and nothing is added.

    Raises:
        SpecError: a plugin named in ``argv`` does not import.
    """
    if "--reward.aggregator" in parser._option_string_actions:
        return False
    try:
        load_plugins(parse_list(_value_in(argv, "--reward.plugins")))
    except SpecError as err:
        parser.error(f"--reward.plugins: {err}")
    group = parser.add_argument_group("openrlhf-maestro (multi-objective reward aggregation)")
    group.add_argument(
        "--reward.aggregator",
        type=str,
        default=None,
        help=f"scalarize the objectives in the reward function's extra_logs['{objective_key('<name>')}'] before the "
        f"advantage: {', '.join(available_aggregators())}, an entry point of openrlhf_maestro.aggregators, "
        "module:Class or file.py:Class; unset (default) leaves OpenRLHF's training unchanged",
    )
    group.add_argument(
        "--reward.objectives", type=str, default=None, help="comma-separated objective names, e.g. format,length"
    )
    group.add_argument(
        "--reward.weights",
        type=str,
        default=None,
        help="comma-separated weight per objective: static weights for sum/gdpo, the prior w_prior for maestro "
        "and random (default: 1 each for sum/gdpo, uniform for maestro/random)",
    )
    group.add_argument(
        "--reward.plugins",
        type=str,
        default=None,
        help="comma-separated modules (pkg.mod) or files (path.py) to import first, in every process: they "
        "register aggregators (@register_aggregator) and model channels (@register_channel) by name",
    )
    group.add_argument(
        "--reward.failure_policy",
        type=str,
        default="stop",
        choices=FAILURE_POLICIES,
        help="a response whose reward function raised, returned None, or left an objective missing or not finite: "
        "stop (the step fails, naming it), drop_response (zero advantage, counted in reward/dropped_samples), "
        "skip_objective (only the missing objectives are left out of its reward, the other weights "
        "renormalized; counted per objective in reward/skipped/<name>; all missing: zero advantage)",
    )
    group.add_argument(
        "--reward.filter_score",
        type=str,
        default="reward_function",
        choices=FILTER_SCORES,
        help="what --algo.dynamic_filtering_enable averages over a prompt's group and compares with "
        "--algo.dynamic_filtering_range: the reward function's scores (default), or aggregator_weights: "
        "sum_k w_k r_k / sum_k w_k of each response's objectives with --reward.weights (the prior for maestro and "
        "random; 1 each if not given), computed where OpenRLHF filters, before the aggregator runs",
    )
    group.add_argument(
        "--reward.weights_log",
        type=str,
        default=None,
        help="append one JSON line per response and step (step, prompt, weights per objective, emphasis) to this "
        "file, for offline analysis; off by default",
    )
    group.add_argument(
        FIELD["context"].flag,
        type=str,
        default="response",
        choices=CONTEXTS,
        help="an aggregator that reads hidden states (maestro's Conductor) reads h at the response's last token "
        "(default) or the prompt's last token",
    )
    perplexity = get_channel("perplexity").option_defaults
    group.add_argument(
        "--perplexity.reasoning_end",
        type=str,
        default=perplexity["reasoning_end"],
        help="perplexity channel: the reasoning is the response up to and including this marker (default: </think>)",
    )
    group.add_argument(
        "--perplexity.reference_template",
        type=str,
        default=perplexity["reference_template"],
        help="perplexity channel: text after the reasoning; {reference} is the dataset label whose perplexity "
        "is measured (default: NOVER's answer block)",
    )
    for name in available_aggregators():
        add_option_arguments(parser, get_aggregator(name))
    chosen = _value_in(argv, "--reward.aggregator")
    if chosen and chosen not in available_aggregators():  # module:Class or file.py:Class
        try:
            cls = get_aggregator(chosen)
        except ValueError:
            return True  # the spec names the problem and the fix
        if cls.name not in (chosen, *available_aggregators()):  # a name of its own: --<name>.<option> flags
            add_option_arguments(parser, cls)
    return True


def add_option_arguments(parser: argparse.ArgumentParser, cls: type[RewardAggregator]) -> None:
    """``--<name>.<option>`` for each option of the aggregator class (its ``options_class`` fields but the one
    the weights fill), typed and defaulted by the field, the field's docstring as help."""
    if cls.options_class is None or not cls.option_names:
        return
    group = parser.add_argument_group(f"options of the {cls.name} aggregator (--reward.aggregator {cls.name})")
    docs = option_docs(cls.options_class)
    for f in dataclasses.fields(cls.options_class):
        if f.name not in cls.option_names:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group.add_argument(
            f"--{cls.name}.{f.name}",
            type=_option_type(f),
            default=default,
            help=f"{docs.get(f.name, '')} (default: {default!r})",
        )


@functools.cache
def option_docs(options_class: type) -> dict[str, str]:
    """An options dataclass's attribute docstrings (the string literal under each field), read from its source."""
    try:
        tree = ast.parse(inspect.getsource(options_class))
    except (OSError, TypeError):  # defined where no source is kept: no help text
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def parse_list(text: str | None) -> list[str]:
    return [x.strip() for x in text.split(",")] if text else []


def _value_in(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in a raw argument list (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


_MISSING = object()


def flag_value(args: object, dotted: str, default: Any = None) -> Any:
    if hasattr(args, dotted):  # flat argparse namespace
        return getattr(args, dotted)
    node = args
    for part in dotted.split("."):
        if not hasattr(node, part):
            return default
        node = getattr(node, part)
    return node


def spec_from_flags(args: object) -> AggregatorSpec | None:
    """The spec the launcher's flags describe (``args`` flat or nested); None without ``--reward.aggregator``.
    The driver calls it once per run (``parse_launcher_spec``); the actors read the JSON it leaves.

    Raises:
        SpecError: naming the flag and the fix.
    """
    aggregator = flag_value(args, "reward.aggregator")
    if aggregator is None:
        return None
    objectives = parse_list(flag_value(args, "reward.objectives"))
    if not objectives:
        raise SpecError(
            f"--reward.aggregator {aggregator} needs --reward.objectives NAME[,NAME...]: the keys "
            f"{objective_key('<NAME>')} your reward function puts in extra_logs"
        )
    try:  # the plugins may register the aggregator and channels named in the flags
        plugins = load_plugins(parse_list(flag_value(args, "reward.plugins")))
    except SpecError as err:
        raise SpecError(f"--reward.plugins: {err}", "plugins") from None
    perplexity_options = get_channel("perplexity").option_defaults
    weights_text = flag_value(args, "reward.weights")
    weights = None
    if weights_text:
        try:
            weights = tuple(float(w) for w in parse_list(weights_text))
        except ValueError:
            raise SpecError(f"--reward.weights must be comma-separated numbers, got {weights_text!r}") from None
    try:
        cls = get_aggregator(aggregator)
    except ValueError as err:
        raise SpecError(f"--reward.aggregator: {err}") from None
    # The aggregator's options come from its own --<aggregator>.<option> flags only.
    options = {name: flag_value(args, f"{cls.name}.{name}", _MISSING) for name in cls.option_names}
    options = {name: value for name, value in options.items() if value is not _MISSING}
    try:
        return AggregatorSpec(
            aggregator=aggregator,
            objectives=tuple(objectives),
            weights=weights,
            options=options,
            context=flag_value(args, "reward.context", "response"),
            channels={"perplexity": {k: flag_value(args, f"perplexity.{k}") for k in perplexity_options}}
            if "perplexity" in objectives
            else {},
            failure_policy=flag_value(args, "reward.failure_policy", "stop"),
            weights_log=flag_value(args, "reward.weights_log"),
            plugins=plugins,
        )
    except SpecError as err:
        flag = FIELD[err.field].flag.replace("<aggregator>", cls.name) if err.field else FIELD["aggregator"].flag
        raise SpecError(f"{flag}: {err}", err.field) from None


def spec_from_aggregator_args(args: object) -> AggregatorSpec:
    """The spec of a patched OpenRLHF's ``--reward.aggregator_args``: a JSON object with "aggregator" (a registered
    name) and the keys of ``AggregatorSpec.from_aggregator_args``.

    Raises:
        SpecError: naming the flag and the fix.
    """
    text = flag_value(args, "reward.aggregator_args")
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise SpecError(f"--reward.aggregator_args is not valid JSON ({err}): {text!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("aggregator"), str):
        raise SpecError(
            f'--reward.aggregator_args needs "aggregator": one of {available_aggregators()}, e.g. '
            f'{{"aggregator": "maestro", "objectives": ["format", "length"]}}; got {text!r}'
        )
    return AggregatorSpec.from_aggregator_args(data.pop("aggregator"), data)


def openrlhf_problems(spec: AggregatorSpec, args: object) -> list[str]:
    """The OpenRLHF flags the aggregation depends on, checked on either path (launcher or patched OpenRLHF)."""
    problems = []
    if not flag_value(args, "reward.remote_url") and not flag_value(args, "train.agent_func_path"):
        problems.append(
            "--reward.aggregator reads objectives from a reward function or an agent: pass --reward.remote_url "
            f"FILE.py (its reward_func returns extra_logs['{objective_key('<name>')}']) or --train.agent_func_path "
            "AGENT.py (its last step() returns them)"
        )
    for name in spec.model_channels:
        if get_channel(name).source == "reward_model" and not flag_value(args, "reward.model_name_or_path"):
            problems.append(f"objective '{name}' is a reward model's score: pass --reward.model_name_or_path")
    n = flag_value(args, "rollout.n_samples_per_prompt")
    if n is not None and n < 2 and spec.needs_groups:
        problems.append(
            f"--rollout.n_samples_per_prompt {n}: the {spec.aggregator} aggregator reads prompt-group statistics "
            "(a z-score inside the group, or the group-relative meta-reward), so it needs 2 or more samples per "
            "prompt; sum needs no groups"
        )
    estimator = flag_value(args, "algo.advantage.estimator")
    if estimator is not None and estimator not in GROUP_ESTIMATORS and spec.aggregator_class.learns_from_advantages:
        problems.append(
            f"--algo.advantage.estimator {estimator}: the {spec.aggregator} aggregator learns from the "
            "group-relative advantage of its reward (each response against the other responses to its prompt), "
            f"which {estimator} does not compute; use one of {', '.join(GROUP_ESTIMATORS)} (GRPO is group_norm), "
            "or a static aggregator (sum, gdpo), which runs with any estimator"
        )
    if flag_value(args, "reward.filter_score", "reward_function") != "reward_function" and not flag_value(
        args, "algo.dynamic_filtering_enable"
    ):
        problems.append(
            "--reward.filter_score only changes what --algo.dynamic_filtering_enable filters on; add that flag "
            "or drop --reward.filter_score"
        )
    if flag_value(args, "ckpt.disable_ds") and spec.aggregator_class.has_state():
        problems.append(
            f"--ckpt.disable_ds drops the checkpoint's client_states, where the {spec.aggregator} aggregator's "
            "state is saved; remove it (the aggregator would restart from scratch on resume)"
        )
    return problems


def openrlhf_notes(spec: AggregatorSpec, args: object) -> list[str]:
    """What a valid combination means when it is not the aggregator's method as its authors define it."""
    notes = []
    defining = spec.aggregator_class.defining_estimator
    estimator = flag_value(args, "algo.advantage.estimator")
    if defining is not None and estimator is not None and estimator != defining:
        notes.append(
            f"--reward.aggregator {spec.aggregator} with --algo.advantage.estimator {estimator}: the estimator "
            f"applies to the aggregator's reward R; the {spec.aggregator} advantage as its authors define it is "
            f"--algo.advantage.estimator {defining}"
        )
    return notes


def filter_weights(spec: AggregatorSpec, args: object) -> list[float] | None:
    """The weights of the function objectives for ``--reward.filter_score aggregator_weights``, else None."""
    if flag_value(args, "reward.filter_score", "reward_function") != "aggregator_weights":
        return None
    weights = dict(zip(spec.objectives, spec.weights or [1.0] * len(spec.objectives), strict=True))
    return [weights[name] for name in spec.function_objectives]


class LauncherSpec:
    """The spec the driver built from the launcher's flags, once per run, as OpenRLHF's parser returned
    (``parse_launcher_spec``); None on a patched OpenRLHF (its hook builds its own in each actor) or without
    ``--reward.aggregator``. The driver's later steps (``TrainerLauncher``, ``--runtime.check_flags``) reuse it."""

    current: ClassVar[AggregatorSpec | None] = None


def reward_model_channels(spec: AggregatorSpec | None) -> list[str]:
    """The objectives the launcher's reward model serves (channels whose source is ``reward_model``); empty
    without a spec."""
    return [n for n in spec.model_channels if spec.channel(n).source == "reward_model"] if spec else []


def reward_model_started(args: object, spec: AggregatorSpec | None) -> bool:
    """Whether a run starts a ``RewardModelActor`` group: OpenRLHF does without a reward function or agent
    (cli/train_ppo_ray.py 131); beside one, the launcher does for a reward-model channel of its ``spec``
    (``trainer.TrainerLauncher``), and the patched CLI (no launcher spec) whenever ``--reward.aggregator`` and
    ``--reward.model_name_or_path`` are both given."""
    if not flag_value(args, "reward.remote_url") and not flag_value(args, "train.agent_func_path"):
        return True
    if spec is not None:
        return bool(reward_model_channels(spec))
    return bool(flag_value(args, "reward.aggregator") and flag_value(args, "reward.model_name_or_path"))


def parse_launcher_spec(args: argparse.Namespace) -> tuple[AggregatorSpec | None, list[str]]:
    """The spec of the launcher's flags and the problems found (empty = fine), on the flat namespace OpenRLHF's
    parser returned, before any model or Ray actor starts. The one ``spec_from_flags`` call of a run; its JSON
    goes into ``args`` as ``reward.aggregator_args`` for the actors (``hierarchize`` nests it)."""
    if flag_value(args, "reward.aggregator") is None:
        stray = [f for f in ("--reward.objectives", "--reward.weights") if flag_value(args, f.removeprefix("--"))]
        if stray:
            return None, [
                f"{', '.join(stray)} given without --reward.aggregator; add --reward.aggregator "
                f"{{{','.join(available_aggregators())}}}"
            ]
        return None, []
    try:
        spec = spec_from_flags(args)
    except SpecError as err:
        return None, [str(err)]
    setattr(args, SPEC_ARGS_DEST, json.dumps(spec.to_json()))
    return spec, other_aggregator_options(spec, args) + openrlhf_problems(spec, args)


def other_aggregator_options(spec: AggregatorSpec, args: object) -> list[str]:
    """``--<other>.<option>`` flags set away from their default: options of an aggregator this run does not use,
    which it would ignore (e.g. ``--maestro.seed`` with ``--reward.aggregator random``, which reads
    ``--random.seed``)."""
    stray = []
    for name in available_aggregators():
        cls = get_aggregator(name)
        if name in (spec.aggregator, spec.aggregator_class.name) or cls.options_class is None:
            continue
        defaults = cls.options_class()
        for option in cls.option_names:
            value = flag_value(args, f"{name}.{option}", _MISSING)
            if value is not _MISSING and value != getattr(defaults, option):
                stray.append(f"--{name}.{option}")
    if not stray:
        return []
    own = [f"--{spec.aggregator_class.name}.{o}" for o in spec.aggregator_class.option_names]
    return [
        f"{', '.join(stray)} set, but --reward.aggregator is {spec.aggregator}, which does not read them; its "
        f"options are {', '.join(own) or 'none'}"
    ]


def validate(args: argparse.Namespace) -> list[str]:
    """``parse_launcher_spec``'s problems alone (empty = fine)."""
    return parse_launcher_spec(args)[1]
