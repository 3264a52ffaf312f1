"""The example launch scripts parse with OpenRLHF's real parser plus the plugin's flags (``--runtime.check_flags``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _support import REPO, clean_env

SCRIPTS = sorted((REPO / "examples/scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True)


def check(script: str, *extra: str, **env: str) -> subprocess.CompletedProcess:
    env = clean_env(LAUNCH=sys.executable, PYTHON=sys.executable, **env)
    return subprocess.run(
        ["bash", script, "--runtime.check_flags", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "script, aggregator",
    [
        ("examples/scripts/train_maestro_grpo_qwen3_8b.sh", "maestro"),
        ("examples/scripts/train_static_weights_grpo_qwen3_8b.sh", "sum"),
        ("examples/scripts/train_grpo_tiny_cpu.sh", "maestro"),
        ("examples/scripts/train_maestro_nover_qwen3_8b.sh", "maestro"),
    ],
)
def test_launch_scripts_pass_openrlhfs_parser_and_the_plugins_checks(script, aggregator):
    proc = check(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"flags OK: --reward.aggregator {aggregator}" in proc.stdout


def test_a_bad_flag_fails_before_anything_starts():
    proc = check("examples/scripts/train_grpo_tiny_cpu.sh", "--reward.weights", "1,2")
    assert proc.returncode == 2
    assert "--reward.weights: weights must be 3 finite numbers, one per objective" in proc.stderr
    assert "Started a local Ray" not in proc.stderr + proc.stdout
