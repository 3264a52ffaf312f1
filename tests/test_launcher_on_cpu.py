"""The launcher: off means OpenRLHF's CLI with the same flags; --runtime cpu adds only what CPU needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _support import REPO, clean_env

from openrlhf_maestro.cli import train_ppo_ray as launcher
from openrlhf_maestro.runtime import import_hooks
from openrlhf_maestro.runtime.cpu_launch import CpuFlagError, apply_cpu_flag_defaults, logical_gpus_needed

USER_FLAGS = ["--actor.model_name_or_path", "m", "--rollout.n_samples_per_prompt", "4", "--ds.zero_stage", "2"]


def test_gpu_runtime_passes_every_flag_unchanged_and_patches_nothing(monkeypatch):
    seen = {}
    monkeypatch.setattr(launcher, "run_openrlhf", lambda argv: seen.setdefault("argv", argv))
    monkeypatch.delenv("OPENRLHF_CPU_RUNTIME", raising=False)
    hooks_before = import_hooks.registered()
    assert launcher.main(USER_FLAGS) == 0
    assert seen["argv"] == USER_FLAGS
    assert import_hooks.registered() == hooks_before
    import os

    assert "OPENRLHF_CPU_RUNTIME" not in os.environ


def test_cpu_defaults_are_added_only_when_absent():
    argv, notes = apply_cpu_flag_defaults(USER_FLAGS + ["--ds.attn_implementation", "eager"])
    assert argv[: len(USER_FLAGS)] == USER_FLAGS
    assert argv.count("--ds.attn_implementation") == 1 and "eager" in argv
    assert ["--vllm.sync_backend", "gloo"] == argv[argv.index("--vllm.sync_backend") :][:2]
    assert "--vllm.enforce_eager" in argv
    assert notes == ["--vllm.sync_backend gloo", "--vllm.enforce_eager"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ds.attn_implementation", "flash_attention_2"], "--ds.attn_implementation flash_attention_2 cannot run"),
        (["--vllm.sync_backend=nccl"], "--vllm.sync_backend nccl cannot run with --runtime cpu; use one of: gloo"),
        (["--ds.ring_attn_size", "2"], "--ds.ring_attn_size 2 cannot run with --runtime cpu: ring attention"),
        (["--ds.adam_offload"], "--ds.adam_offload is not supported with --runtime cpu: DeepSpeedCPUAdam is a C"),
        (["--vllm.sync_with_ray"], "--vllm.sync_with_ray is not supported with --runtime cpu: ray.util.collective"),
    ],
)
def test_flags_that_cannot_run_on_cpu_are_refused_by_name(flags, message):
    with pytest.raises(CpuFlagError, match=message):
        apply_cpu_flag_defaults(USER_FLAGS + flags)


def test_logical_gpus_follow_the_placement_flags():
    grpo = [
        "--actor.num_gpus_per_node",
        "1",
        "--ref.num_gpus_per_node",
        "1",
        "--vllm.num_engines",
        "2",
        "--algo.advantage.estimator",
        "group_norm",
        "--reward.remote_url",
        "r.py",
    ]
    assert logical_gpus_needed(grpo) == 4
    assert logical_gpus_needed(grpo + ["--algo.kl.init_coef", "0"]) == 3
    # A later flag overrides an earlier one, as in argparse (a script's extra flags): gae brings a critic.
    ppo = grpo + ["--algo.advantage.estimator", "gae", "--critic.num_gpus_per_node", "1"]
    assert logical_gpus_needed(ppo) == 5


@pytest.mark.parametrize("runtime", [["--runtime", "cpu"], []], ids=["cpu", "gpu-path"])
def test_help_lists_launcher_and_openrlhf_flags(runtime):
    """``--help`` answers with the launcher's, OpenRLHF's and every aggregator's option flags, also on the GPU path
    on a machine without flash-attn (as the CPU machines are: OpenRLHF's CLI imports it at module level)."""
    proc = subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.cli.train_ppo_ray", *runtime, "--help"],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--runtime {gpu,cpu}" in proc.stdout
    assert "--actor.model_name_or_path" in proc.stdout  # OpenRLHF's own parser answered too
    assert "--maestro.tau" in proc.stdout and "--random.beta" in proc.stdout


def test_verify_weight_sync_runs_on_the_gpu_path_and_cpu_isa_still_needs_the_cpu_runtime(monkeypatch, capsys):
    """Without --runtime cpu the flag is accepted: the run starts, the engines are captured, and verify() runs
    against --ckpt.output_dir with the initial model; a miss exits 3. OpenRLHF's run, its parser and the vLLM
    engines are stood in for: they need GPUs (the check itself is weight_sync_check's, tested below and end to
    end on the CPU runtime)."""
    import argparse
    import contextlib

    from openrlhf_maestro.runtime import weight_sync_check

    args = argparse.Namespace(
        **{"ckpt.output_dir": "/out/model", "actor.model_name_or_path": "m", "vllm.enable_sleep": False}
    )
    calls = []

    @contextlib.contextmanager
    def installed(run):  # what integration.launch's patches record once OpenRLHF's CLI runs
        assert run.capture_engines
        run.args = args
        run.engines.append("engine")
        yield run

    monkeypatch.setattr(launcher, "installed", installed)
    monkeypatch.setattr(launcher, "run_openrlhf", lambda argv: calls.append(argv))
    monkeypatch.setattr(weight_sync_check, "verify", lambda *a, **kw: calls.append((a, kw)) or False)
    assert launcher.main(["--runtime.verify_weight_sync", *USER_FLAGS]) == 3
    (engines, model_dir, report), kwargs = calls[1]
    assert calls[0] == USER_FLAGS and engines == ["engine"] and kwargs == {"initial_dir": "m"}
    assert str(model_dir) == "/out/model" and str(report) == "/out/model/weight_sync_check.json"
    monkeypatch.setattr(launcher, "run_openrlhf", lambda argv: pytest.fail("must not start"))
    assert launcher.main(["--runtime.cpu_isa", "avx2", *USER_FLAGS]) == 2
    assert "only available with --runtime cpu" in capsys.readouterr().err
