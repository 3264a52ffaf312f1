"""docs/reference.md is the generator's output, and the generator reads the flags from the parsers themselves."""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys

from _support import REPO, clean_env

from openrlhf_maestro.cli.reference import COMMAND, flag_tables, plugin_parser, reference
from openrlhf_maestro.cli.train_ppo_ray import build_launcher_parser
from openrlhf_maestro.metric_names import METRICS

REFERENCE = REPO / "docs" / "reference.md"


def test_docs_reference_is_what_the_generator_writes():
    # A fresh process: flags whose help lists the registered aggregators must not see what other tests registered.
    result = subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.cli.reference"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    committed = REFERENCE.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True), result.stdout.splitlines(keepends=True), "committed", "generated"
        )
    )
    assert result.stdout == committed, f"docs/reference.md is out of date; regenerate it with\n  {COMMAND}\n{diff}"


def test_every_flag_of_both_parsers_and_every_metric_is_in_the_reference():
    text = reference()
    parsers = (build_launcher_parser(), plugin_parser())
    flags = [
        s for p in parsers for a in p._actions if not isinstance(a, argparse._HelpAction) for s in a.option_strings
    ]
    assert "--runtime" in flags and "--reward.aggregator" in flags
    assert [f for f in flags if f"`{f}`" not in text] == []
    assert [m.key for m in METRICS if f"| `{m.key}` |" not in text] == []


def test_flag_tables_render_each_group_and_what_its_actions_say():
    """A parser the generator has never seen: its groups become headings and each action one row, its cells
    taken from the action (choices, default, help with %(default)s expanded), escaped for a markdown table."""
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--top", type=int, default=3, help="a top-level flag (default: %(default)s)")
    group = parser.add_argument_group("toy aggregator", "its own options")
    group.add_argument("--toy.mode", choices=["a", "b"], default="a", help="a|b, read as <mode>")
    group.add_argument("--toy.switch", action="store_true", help="turn it on")
    group.add_argument("--toy.template", type=str, default="\n<x>\n", help="`<x>` stays code")
    parser.add_argument_group("empty group")
    text = flag_tables(parser)
    assert text.startswith(
        "### options\n"
        "\n"
        "| flag | takes | default | meaning |\n"
        "| --- | --- | --- | --- |\n"
        "| `--top` | int | `3` | a top-level flag (default: 3) |\n\n"
    )
    assert "### toy aggregator\n\nits own options\n\n| flag |" in text
    assert "| `--toy.mode` | `a` \\| `b` | `a` | a\\|b, read as &lt;mode&gt; |" in text
    assert "| `--toy.switch` | switch | off | turn it on |" in text
    assert "| `--toy.template` | str | `'\\n<x>\\n'` | `<x>` stays code |" in text
    assert "empty group" not in text and "-h" not in text
