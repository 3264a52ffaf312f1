"""The plugin's flags, added to OpenRLHF's own ``train_ppo_ray`` parser, and their validation.

The flags use OpenRLHF's dotted style, so ``hierarchize`` nests them like its own (``args.reward.aggregator``,
``args.maestro.tau``) and they reach every Ray actor inside the pickled strategy. Validation runs right
after parsing, before Ray or any model starts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
from collections.abc import Sequence

from openrlhf_maestro.method import MaestroConfig, available_aggregators

# OpenRLHF estimators whose advantage is relative to the prompt's group: the Conductor's meta-reward.
GROUP_RELATIVE_ESTIMATORS = ("group_norm", "dr_grpo", "rloo", "reinforce_baseline")
CONTEXTS = ("response", "prompt")

# MaestroConfig fields exposed as --maestro.<name>; `prior` comes from --reward.weights instead.
_CONFIG_FIELDS = [f for f in dataclasses.fields(MaestroConfig) if f.name != "prior"]


def _field_type(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.name == "grad_clip":
        return lambda text: None if text.lower() == "none" else float(text)
    if f.name == "hidden_sizes":
        return lambda text: tuple(int(x) for x in text.split(",") if x.strip())
    return type(default)


def upstream_hook_installed() -> bool:
    """Whether the installed OpenRLHF carries patches/openrlhf-0.11.2-reward-aggregator.patch (a file check: no
    import, so it is safe before the CPU runtime is in place)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("openrlhf")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(loc) / "trainer" / "reward_aggregator.py").is_file() for loc in locations)


def add_maestro_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--reward.aggregator``, ``--reward.objectives``, ``--reward.weights`` and ``--maestro.*``.

    A patched OpenRLHF defines ``--reward.aggregator`` itself (configured by ``--reward.aggregator_args``); then
    its own hook runs the aggregators through entry points, and the launcher adds nothing.
    """
    if "--reward.aggregator" in parser._option_string_actions:
        return
    group = parser.add_argument_group("openrlhf-maestro (multi-objective reward aggregation)")
    group.add_argument(
        "--reward.aggregator",
        type=str,
        default=None,
        choices=available_aggregators(),
        help="scalarize the objectives in the reward function's extra_logs['obj/<name>'] before the group "
        "normalization; unset (default) leaves OpenRLHF's training unchanged",
    )
    group.add_argument(
        "--reward.objectives", type=str, default=None, help="comma-separated objective names, e.g. format,length"
    )
    group.add_argument(
        "--reward.weights",
        type=str,
        default=None,
        help="comma-separated weight per objective: static weights for sum/gdpo, the prior w_prior for maestro "
        "(default: 1 each for sum/gdpo, uniform for maestro)",
    )
    group.add_argument(
        "--maestro.context",
        type=str,
        default="response",
        choices=CONTEXTS,
        help="Conductor input: the hidden state at the response's last token (default) or the prompt's last token",
    )
    group.add_argument(
        "--maestro.weights_log",
        type=str,
        default=None,
        help="append one JSON line per response and step (step, prompt, weights per objective, emphasis) to this "
        "file, for offline analysis; off by default",
    )
    group.add_argument(
        "--maestro.drop_invalid_samples",
        action="store_true",
        default=False,
        help="give responses whose reward function raised or returned None/NaN/a missing objective zero "
        "advantage and count them (maestro/dropped_samples) instead of stopping the run",
    )
    group.add_argument(
        "--maestro.reasoning_end",
        type=str,
        default="</think>",
        help="perplexity channel: the reasoning is the response up to and including this marker (default: </think>)",
    )
    group.add_argument(
        "--maestro.reference_template",
        type=str,
        default="\n\n<answer>\n{reference}\n</answer>",
        help="perplexity channel: text after the reasoning; {reference} is the dataset label whose perplexity "
        "is measured (default: NOVER's answer block)",
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


def maestro_config_from(args: argparse.Namespace | object, prior: Sequence[float] | None) -> MaestroConfig:
    """The MaestroConfig the flags describe (``args`` flat or nested)."""
    values = {f.name: _get(args, f"maestro.{f.name}") for f in _CONFIG_FIELDS}
    return MaestroConfig(prior=tuple(prior) if prior is not None else None, **values)


def _get(args: object, dotted: str):
    if hasattr(args, dotted):  # flat argparse namespace
        return getattr(args, dotted)
    node = args
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(args: argparse.Namespace) -> list[str]:
    """Check the plugin's flags against each other and OpenRLHF's; returns the list of problems (empty = fine).

    Called on the flat namespace right after parsing, before any model or Ray actor starts.
    """
    if not hasattr(args, "maestro.tau"):  # a patched OpenRLHF parsed its own --reward.aggregator: its hook validates
        return []
    aggregator = _get(args, "reward.aggregator")
    objectives = parse_list(_get(args, "reward.objectives"))
    weights_text = _get(args, "reward.weights")
    if aggregator is None:
        stray = [f for f, v in (("--reward.objectives", objectives), ("--reward.weights", weights_text)) if v]
        return (
            [
                f"{', '.join(stray)} given without --reward.aggregator; add --reward.aggregator "
                f"{{{','.join(available_aggregators())}}}"
            ]
            if stray
            else []
        )

    problems = []
    if not objectives:
        problems.append(
            f"--reward.aggregator {aggregator} needs --reward.objectives NAME[,NAME...]: the keys "
            "obj/<NAME> your reward function puts in extra_logs"
        )
    duplicated = sorted({o for o in objectives if objectives.count(o) > 1})
    if duplicated:
        problems.append(f"--reward.objectives names {duplicated} more than once")
    if any(not o or "/" in o for o in objectives):
        problems.append(f"--reward.objectives has an empty name or one containing '/': {objectives}")
    if weights_text:
        try:
            weights = [float(w) for w in parse_list(weights_text)]
        except ValueError:
            problems.append(f"--reward.weights must be comma-separated numbers, got {weights_text!r}")
        else:
            if len(weights) != len(objectives):
                problems.append(
                    f"--reward.weights has {len(weights)} values for {len(objectives)} objectives "
                    f"{objectives}; give one weight per objective"
                )
            elif aggregator in ("maestro", "random") and (any(w < 0 for w in weights) or sum(weights) <= 0):
                problems.append(
                    f"--reward.weights is {aggregator}'s prior: non-negative with a positive sum, got {weights}"
                )
    if not _get(args, "reward.remote_url"):
        problems.append(
            "--reward.aggregator reads objectives from a reward function: pass --reward.remote_url "
            "FILE.py (its reward_func returns extra_logs['obj/<name>'])"
        )
    if "preference" in objectives and not _get(args, "reward.model_name_or_path"):
        problems.append("objective 'preference' is a reward model's score: pass --reward.model_name_or_path")
    if "{reference}" not in _get(args, "maestro.reference_template"):
        problems.append("--maestro.reference_template must contain {reference}")
    n = _get(args, "rollout.n_samples_per_prompt")
    if n < 2:
        problems.append(
            f"--rollout.n_samples_per_prompt {n}: an aggregator needs groups of at least 2 samples per "
            "prompt (the normalization and the Conductor's meta-reward are relative to the group)"
        )
    estimator = _get(args, "algo.advantage.estimator")
    if estimator not in GROUP_RELATIVE_ESTIMATORS:
        problems.append(
            f"--algo.advantage.estimator {estimator} is not group-relative; use one of "
            f"{', '.join(GROUP_RELATIVE_ESTIMATORS)} (GRPO is group_norm)"
        )
    if _get(args, "train.async_enable"):
        problems.append(
            "--train.async_enable is not supported with --reward.aggregator yet: the async trainer "
            "keeps its experience maker in another actor (ppo_trainer_async.py); run synchronously"
        )
    if _get(args, "ds.packing_samples") or _get(args, "ds.ring_attn_size") > 1:
        problems.append(
            "--ds.packing_samples / --ds.ring_attn_size > 1 are not supported with --reward.aggregator "
            "yet: hidden states of packed sequences need per-sample offsets; remove them"
        )
    if _get(args, "ckpt.disable_ds") and aggregator == "maestro":
        problems.append(
            "--ckpt.disable_ds drops the checkpoint's client_states, where the Conductor's state is "
            "saved; remove it (the Conductor would restart from scratch on resume)"
        )
    if _get(args, "train.agent_func_path"):
        problems.append(
            "--train.agent_func_path is not supported with --reward.aggregator: objectives are read "
            "from a reward function file's extra_logs (--reward.remote_url FILE.py)"
        )
    if aggregator in ("maestro", "random") and not problems:
        try:
            maestro_config_from(args, [float(w) for w in parse_list(weights_text)] or None)
        except (ValueError, TypeError) as err:
            problems.append(f"--maestro.*: {err}")
    return problems
