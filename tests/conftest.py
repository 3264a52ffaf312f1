"""Shared fixtures. Tests named ``*_on_cpu.py`` run on a CPU-only machine; ``e2e`` ones run the real pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _support import REPO


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny actor built once per session with the same command users run."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openrlhf_maestro.tiny_model",
            str(out),
            "--seed",
            "0",
            "--corpus",
            str(REPO / "examples/data/demo_prompts.jsonl"),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return out


def pytest_report_header(config: pytest.Config) -> str:
    """The CPU's vector ISAs decide which vLLM kernels run, so every test run names them first."""
    from openrlhf_maestro.runtime.cpu_info import cpu_isa

    return f"cpu: {cpu_isa().summary()}"
