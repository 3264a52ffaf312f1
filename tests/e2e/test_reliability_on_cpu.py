"""Reliability on the real pipeline: a run killed with SIGKILL after a checkpoint resumes exactly.

Slow (two runs, one of them killed): marked ``slow`` and run by ``make test-slow``, not by ``make test``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from _support import REPO, clean_env, log_tail, run_example, state_equal

from openrlhf_maestro.report import latest_run_scalars

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries ``marker`` (the killed run's Ray and vLLM processes inherit it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_all(marker: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while (pids := _processes_with(marker)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(1)
    assert not _processes_with(marker), "processes of the killed run survived"


def test_sigkill_after_a_checkpoint_then_resume_restores_the_conductor(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    marker = f"MAESTRO_TEST_RUN={uuid.uuid4().hex}"
    key, value = marker.split("=")
    env = clean_env(
        MODEL=str(tiny_model_dir),
        OUT=str(tmp_path / "killed"),
        CKPT=str(ckpt),
        AGGREGATOR="maestro",
        STEPS_PROMPTS="24",
        PYTHON=sys.executable,
        **{key: value},
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    (tmp_path / "killed").mkdir()
    latest = ckpt / "_actor" / "latest"
    with (tmp_path / "killed" / "run.log").open("w") as log:
        proc = subprocess.Popen(
            ["bash", "examples/scripts/train_grpo_tiny_cpu.sh", "--ckpt.save_steps", "2"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 900
            while not (latest.is_file() and latest.read_text().strip() == "global_step2"):
                assert proc.poll() is None, "the run ended before its step-2 checkpoint"
                assert time.time() < deadline, "no step-2 checkpoint within 15 minutes"
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGKILL)  # mid-run, without any chance to clean up
            proc.wait()
        finally:
            _kill_all(marker)

    resumed = run_example(
        tmp_path / "resumed",
        tiny_model_dir,
        "--ckpt.load_enable",
        AGGREGATOR="maestro",
        STEPS_PROMPTS="16",
        CKPT=str(ckpt),
    )
    assert resumed["returncode"] == 0, log_tail(resumed)
    restored = torch.load(ckpt / "reward_aggregator_restored.pt", weights_only=True)
    step = restored["global_step"]
    assert step >= 2 and step % 2 == 0  # the last complete checkpoint before the kill
    model_states = next((ckpt / "_actor" / f"global_step{step}").glob("*model_states.pt"))
    saved = torch.load(model_states, weights_only=False, map_location="cpu")["reward_aggregator"]["state"]
    assert state_equal(restored["state"], saved)
    scalars = latest_run_scalars(resumed["out"] / "tensorboard")
    steps = sorted(scalars["train/maestro/updates"])
    assert steps[0] == step + 1 and scalars["train/maestro/updates"][step + 1] == step + 1
