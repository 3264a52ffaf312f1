"""The plugin's flags, added to OpenRLHF's own ``train_ppo_ray`` parser, parsed into an ``AggregatorSpec``.

The flags use OpenRLHF's dotted style, so ``hierarchize`` nests them like its own (``args.reward.aggregator``,
``args.maestro.tau``) and they reach every Ray actor inside the pickled strategy. ``validate`` runs right
after parsing, before Ray or any model starts: the spec's own validation plus the OpenRLHF flags an
aggregator depends on (``openrlhf_problems``, shared with the hook on a patched OpenRLHF).

    --reward.aggregator NAME          a registered aggregator, an entry point, module:Class or file.py:Class
    --reward.objectives A,B           --reward.weights 1,2
    --reward.failure_policy stop|drop_response|skip_objective    --reward.weights_log FILE
    --reward.plugins A.py,pkg.mod     imported first in every process: they register aggregators and channels
    --maestro.<option>                the Conductor's options (MaestroConfig); `random` reads beta,
                                      normalization, norm_eps and seed, which it shares by design
    --maestro.context response|prompt where a hidden-state aggregator reads h
    --perplexity.reasoning_end        --perplexity.reference_template   (the perplexity channel)

Older spellings (``--reward.drop_invalid_samples`` and ``--maestro.drop_invalid_samples``: ``--reward.failure_policy
drop_response``; ``--maestro.weights_log``, ``--maestro.reasoning_end``, ``--maestro.reference_template``) still work
for one release and print which flag replaces them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import sys
from typing import Any

from openrlhf_maestro.channels import get_channel
from openrlhf_maestro.method import GROUP_ESTIMATORS, MaestroConfig, available_aggregators, get_aggregator
from openrlhf_maestro.spec import CONTEXTS, FAILURE_POLICIES, AggregatorSpec, SpecError, load_plugins

# MaestroConfig fields exposed as --maestro.<name>; `prior` comes from --reward.weights instead.
_CONFIG_FIELDS = [f for f in dataclasses.fields(MaestroConfig) if f.name != "prior"]
FILTER_SCORES = ("reward_function", "aggregator_weights")
# old flag -> new flag; the old one keeps working for one release.
DEPRECATED_FLAGS = {
    "--maestro.drop_invalid_samples": "--reward.failure_policy drop_response",
    "--reward.drop_invalid_samples": "--reward.failure_policy drop_response",
    "--maestro.weights_log": "--reward.weights_log",
    "--maestro.reasoning_end": "--perplexity.reasoning_end",
    "--maestro.reference_template": "--perplexity.reference_template",
}


def _field_type(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.name == "grad_clip":
        return lambda text: None if text.lower() == "none" else float(text)
    if f.name == "hidden_sizes":
        return lambda text: tuple(int(x) for x in text.split(",") if x.strip())
    if default is None:  # an optional name (target): type(None) would refuse every value
        return str
    return type(default)


def upstream_hook_installed() -> bool:
    """Whether the installed OpenRLHF carries patches/openrlhf-0.11.2-reward-aggregator.patch, i.e. its CLI defines
    ``--reward.aggregator`` (a file read: no import, so it is safe before the CPU runtime is in place)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("openrlhf")
    locations = list(spec.submodule_search_locations or []) if spec else []
    cli = [Path(loc) / "cli" / "train_ppo_ray.py" for loc in locations]
    return any(path.is_file() and '"--reward.aggregator"' in path.read_text() for path in cli)


class _Deprecated(argparse.Action):
    """An older spelling: stores into the new flag's destination and says which flag replaces it."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs) -> None:
        # "--new.flag VALUE": a switch that stores VALUE; "--new.flag": takes the value it is given
        self.new_flag, _, self.stored = new_flag.partition(" ")
        self.message = new_flag
        super().__init__(option_strings, dest, nargs=0 if self.stored else None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"[openrlhf-maestro] {option_string} is deprecated and will be removed in the next release; "
            f"use {self.message}",
            file=sys.stderr,
            flush=True,
        )
        setattr(namespace, self.dest, self.stored or values)


def add_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the plugin's flags (module docstring) to OpenRLHF's parser.

    A patched OpenRLHF defines ``--reward.aggregator`` itself (a file defining ``RewardAggregator``, configured by
    ``--reward.aggregator_args``); then it builds the same ``AggregatorHook`` from
    ``openrlhf_maestro/integration/reward_aggregator.py``, and the launcher adds nothing.
    """
    if "--reward.aggregator" in parser._option_string_actions:
        return
    group = parser.add_argument_group("openrlhf-maestro (multi-objective reward aggregation)")
    group.add_argument(
        "--reward.aggregator",
        type=str,
        default=None,
        help="scalarize the objectives in the reward function's extra_logs['obj/<name>'] before the advantage: "
        f"{', '.join(available_aggregators())}, an entry point of openrlhf_maestro.aggregators, module:Class or "
        "file.py:Class; unset (default) leaves OpenRLHF's training unchanged",
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
        "--maestro.context",
        type=str,
        default="response",
        choices=CONTEXTS,
        help="Conductor input: the hidden state at the response's last token (default) or the prompt's last token",
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
    for old, new in DEPRECATED_FLAGS.items():
        group.add_argument(
            old,
            dest=new.split()[0].removeprefix("--"),
            action=_Deprecated,
            new_flag=new,
            default=argparse.SUPPRESS,
            help=f"deprecated: use {new}",
        )
    defaults = MaestroConfig()
    for f in _CONFIG_FIELDS:
        doc = _field_docs().get(f.name, "")
        group.add_argument(
            f"--maestro.{f.name}",
            type=_field_type(f),
            default=getattr(defaults, f.name),
            help=f"{doc} (default: {getattr(defaults, f.name)!r})",
        )


@functools.cache
def _field_docs() -> dict[str, str]:
    """MaestroConfig's attribute docstrings (the string literal under each field), read from its source."""
    from openrlhf_maestro.method import config as config_module

    tree = ast.parse(inspect.getsource(config_module.MaestroConfig))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def parse_list(text: str | None) -> list[str]:
    return [x.strip() for x in text.split(",")] if text else []


_MISSING = object()
# AggregatorSpec field -> the flag that sets it, so a spec error names the flag to fix.
FLAG_OF_FIELD = {
    "aggregator": "--reward.aggregator",
    "objectives": "--reward.objectives",
    "weights": "--reward.weights",
    "options": "--maestro.*",
    "context": "--maestro.context",
    "channels": "--perplexity.*",
    "failure_policy": "--reward.failure_policy",
    "plugins": "--reward.plugins",
}


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

    Raises:
        SpecError: naming the flag and the fix.
    """
    aggregator = flag_value(args, "reward.aggregator")
    if aggregator is None:
        return None
    objectives = parse_list(flag_value(args, "reward.objectives"))
    if not objectives:
        raise SpecError(
            f"--reward.aggregator {aggregator} needs --reward.objectives NAME[,NAME...]: the keys obj/<NAME> your "
            "reward function puts in extra_logs"
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
    # The options an aggregator reads come from the --maestro.<option> flags that exist (the CLI's only ones).
    options = {name: flag_value(args, f"maestro.{name}", _MISSING) for name in cls.option_names}
    options = {name: value for name, value in options.items() if value is not _MISSING}
    try:
        return AggregatorSpec(
            aggregator=aggregator,
            objectives=tuple(objectives),
            weights=weights,
            options=options,
            context=flag_value(args, "maestro.context", "response"),
            channels={"perplexity": {k: flag_value(args, f"perplexity.{k}") for k in perplexity_options}}
            if "perplexity" in objectives
            else {},
            failure_policy=flag_value(args, "reward.failure_policy", "stop"),
            weights_log=flag_value(args, "reward.weights_log"),
            plugins=plugins,
        )
    except SpecError as err:
        raise SpecError(f"{FLAG_OF_FIELD.get(err.field, '--reward.aggregator')}: {err}", err.field) from None


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
            "FILE.py (its reward_func returns extra_logs['obj/<name>']) or --train.agent_func_path AGENT.py "
            "(its last step() returns them)"
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


def launcher_flags_present(args: object) -> bool:
    """Whether these arguments came through the launcher's flags (not a patched OpenRLHF's own hook flags)."""
    return flag_value(args, "maestro.tau") is not None


def reward_model_channels(args: object) -> list[str]:
    """The objectives the launcher's reward model serves (channels whose source is ``reward_model``); empty
    without the launcher's ``--reward.aggregator``."""
    spec = spec_from_flags(args) if launcher_flags_present(args) else None
    return [n for n in spec.model_channels if spec.channel(n).source == "reward_model"] if spec else []


def reward_model_started(args: object) -> bool:
    """Whether a run starts a ``RewardModelActor`` group: OpenRLHF does without a reward function or agent
    (cli/train_ppo_ray.py 131); beside one, the launcher does for a reward-model channel
    (``trainer.TrainerLauncher``) and the patched CLI whenever ``--reward.aggregator`` and
    ``--reward.model_name_or_path`` are both given."""
    if not flag_value(args, "reward.remote_url") and not flag_value(args, "train.agent_func_path"):
        return True
    if launcher_flags_present(args):
        return bool(reward_model_channels(args))
    return bool(flag_value(args, "reward.aggregator") and flag_value(args, "reward.model_name_or_path"))


def validate(args: argparse.Namespace) -> list[str]:
    """Check the plugin's flags against each other and OpenRLHF's; returns the list of problems (empty = fine).

    Called on the flat namespace right after parsing, and again on the nested one OpenRLHF hands to ``train``
    after its own post-parse changes (e.g. dynamic batching switching packing on), before any model or Ray
    actor starts.
    """
    if not launcher_flags_present(args):  # a patched OpenRLHF parsed its own --reward.aggregator: its hook validates
        return []
    if flag_value(args, "reward.aggregator") is None:
        stray = [f for f in ("--reward.objectives", "--reward.weights") if flag_value(args, f.removeprefix("--"))]
        if stray:
            return [
                f"{', '.join(stray)} given without --reward.aggregator; add --reward.aggregator "
                f"{{{','.join(available_aggregators())}}}"
            ]
        return []
    try:
        spec = spec_from_flags(args)
    except SpecError as err:
        return [str(err)]
    return openrlhf_problems(spec, args)
