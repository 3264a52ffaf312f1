"""Helpers shared by the tests (importable as ``_support``; pytest.ini puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would switch the CPU runtime on by inheritance."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENRLHF_CPU_RUNTIME", "PYTHONPATH")}
    env.update(extra)
    return env


def run_launcher(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m openrlhf_maestro.cli.train_ppo_ray ARGS` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.cli.train_ppo_ray", *args],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_example(out: Path, model: Path, *extra_args: str, timeout: int = 1500, **env_overrides: str) -> dict:
    """Run examples/scripts/train_grpo_tiny_cpu.sh (the real pipeline) into ``out``; never raises on failure.

    Returns {"out", "returncode", "log", "seconds"}; ``env_overrides`` set the script's variables
    (AGGREGATOR, OBJECTIVES, WEIGHTS, STEPS_PROMPTS, CKPT, ...).
    """
    out.mkdir(parents=True, exist_ok=True)
    env = clean_env(MODEL=str(model), OUT=str(out), PYTHON=sys.executable, **env_overrides)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = out / "run.log"
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(
            ["bash", "examples/scripts/train_grpo_tiny_cpu.sh", *extra_args],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    return {"out": out, "returncode": proc.returncode, "log": log, "seconds": time.time() - t0, "model": model}


def log_tail(run: dict, chars: int = 6000) -> str:
    return run["log"].read_text(errors="replace")[-chars:]


def state_equal(a, b) -> bool:
    """Exact equality of two nested state dicts: tensors with ``torch.equal``, everything else with ``==``."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(state_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b
