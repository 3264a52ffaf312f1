"""Write ``docs/reference.md``: the launcher's flags, the plugin's flags and the logged metrics, read from the
parsers and from ``openrlhf_maestro.metric_names``, so the reference says what the code does.

    python -m openrlhf_maestro.cli.reference > docs/reference.md

``tests/test_reference_on_cpu.py`` fails when the file differs from this output. The flags come from the
argparse actions themselves (option strings, defaults, choices, help), group by group, whatever groups the
parsers define: nothing here lists a flag.
"""

from __future__ import annotations

import argparse
import sys

from openrlhf_maestro.cli.train_ppo_ray import build_launcher_parser
from openrlhf_maestro.integration.flags import add_plugin_arguments
from openrlhf_maestro.metric_names import METRICS, RESERVED_OBJECTIVES, TRAIN_PREFIX, objective_key, reward_key

COMMAND = "python -m openrlhf_maestro.cli.reference > docs/reference.md"

HEADER = f"""# Reference

Generated from the parsers and `openrlhf_maestro/metric_names.py` by `{COMMAND}`;
do not edit it by hand (`tests/test_reference_on_cpu.py` fails when it drifts).

## Glossary

- **objective**: one entry of a response's reward vector (r_1, ..., r_K), named in `--reward.objectives`. The
  reward function reports it as `extra_logs["{objective_key("<name>")}"]`, or a model channel computes it.
- **text reward**: an objective computed from the response text alone, inside the reward function
  (`openrlhf_maestro.rewards`: `format_reward`, `length_reward`, `token_f1`, put together by `make_reward_func`).
- **model channel**: an objective the plugin computes from the models' outputs (`openrlhf_maestro/channels.py`:
  `entropy`, `perplexity`, `preference`, or one a plugin registers). It is named in `--reward.objectives` like
  any objective; the reward function must not report it.
- **aggregator**: turns each response's K objectives into one reward R before the advantage (`sum`, `gdpo`,
  `maestro`, `random`, or one a plugin registers).
- **Conductor**: `maestro`'s learned policy π_φ(a | h) that draws each response's emphasis.
- **emphasis**: the objective an action a weights up: w(a) = (1 − β)·w_prior + β·e_a.
"""


def _cell(text: object) -> str:
    """One markdown table cell: on one line, pipes escaped, and outside `code` ``<`` and ``>`` as entities (a
    bare ``<name>`` would be taken for an HTML tag and vanish)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _code(value: object) -> str:
    """``value`` as inline code; a string that whitespace would blur (empty, newlines) as its repr."""
    if isinstance(value, str) and (not value or value != " ".join(value.split())):
        value = repr(value)
    return f"`{value}`"


def _takes(action: argparse.Action) -> str:
    """What the flag takes: nothing (a switch), one of its choices, or a value of its type."""
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        return " \\| ".join(_code(c) for c in action.choices)
    kind = action.type
    return kind.__name__ if kind in (int, float, str) else "value"


def _default(action: argparse.Action) -> str:
    if action.default is argparse.SUPPRESS:
        return "unset"
    if action.nargs == 0:
        return "off" if action.default in (False, None) else _code(action.default)
    return "unset" if action.default is None else _code(action.default)


def flag_tables(parser: argparse.ArgumentParser) -> str:
    """One table per argument group of ``parser`` that holds a flag (help excluded), headed by its title."""
    formatter = parser._get_formatter()
    parts = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines = [f"### {group.title}", ""]
        if group.description:
            lines += [group.description, ""]
        lines += ["| flag | takes | default | meaning |", "| --- | --- | --- | --- |"]
        for action in actions:
            flags = ", ".join(f"`{s}`" for s in action.option_strings)
            meaning = formatter._expand_help(action) if action.help else ""
            lines.append(f"| {flags} | {_takes(action)} | {_default(action)} | {_cell(meaning)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plugin_parser() -> argparse.ArgumentParser:
    """A fresh parser with only the plugin's flags, as ``add_plugin_arguments`` adds them to OpenRLHF's."""
    parser = argparse.ArgumentParser(prog="openrlhf.cli.train_ppo_ray", add_help=False)
    add_plugin_arguments(parser)
    return parser


def metric_table() -> str:
    lines = ["| key | logged by | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{m.key}` | {_cell(m.logged_by)} | {_cell(m.meaning)} |" for m in METRICS]
    return "\n".join(lines)


def reference() -> str:
    """The whole ``docs/reference.md``."""
    reserved = ", ".join(f"`{name}`" for name in RESERVED_OBJECTIVES)
    sections = [
        HEADER,
        "## Launcher flags\n\n`python -m openrlhf_maestro.cli.train_ppo_ray` consumes these; every other flag goes "
        "to OpenRLHF's `train_ppo_ray` unchanged.",
        flag_tables(build_launcher_parser()),
        "## Plugin flags\n\nThe launcher adds these to OpenRLHF's own `train_ppo_ray` parser, so they nest like "
        "OpenRLHF's (`args.reward.aggregator`) and show in its `--help`.",
        flag_tables(plugin_parser()),
        "## Logged metrics\n\n"
        f"OpenRLHF logs each key below as `{TRAIN_PREFIX}<key>` (TensorBoard, wandb), as the batch mean over the "
        "step's responses. `<objective>` and `<channel>` stand for a name. An objective may not be named "
        f"{reserved}: its `{reward_key('<objective>')}` would collide with the plugin's own keys, and the run "
        "refuses it before it starts.",
        metric_table(),
    ]
    return "\n\n".join(s.strip("\n") for s in sections) + "\n"


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
