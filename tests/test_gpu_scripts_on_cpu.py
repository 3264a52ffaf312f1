"""The GPU example scripts on a CPU-only machine: their placement (``--runtime.check_flags`` runs OpenRLHF's
``train()`` up to the trainer with Ray stood in for) against their ``# placement:`` comment, OpenRLHF's start-up
asserts, the uneven reward-model refusal, and where their outputs go (a stub ``ray`` records the submission)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _support import REPO, clean_env

from openrlhf_maestro.integration.placement import parse_placement

SCRIPTS = REPO / "examples/scripts"
GPU_SCRIPTS = sorted(p for p in SCRIPTS.glob("*.sh") if not p.name.endswith("_cpu.sh"))
BASE = SCRIPTS / "train_maestro_grpo_qwen3_8b.sh"
NOVER = SCRIPTS / "train_maestro_nover_qwen3_8b.sh"
GPUS_PER_NODE = 8  # the scripts' node: `ray start --head --num-gpus 8`


def check(script: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), "--runtime.check_flags", *extra],
        cwd=REPO,
        env=clean_env(LAUNCH=sys.executable),
        capture_output=True,
        text=True,
        timeout=300,
    )


def printed_placement(stdout: str) -> dict[str, set[int]]:
    lines = [line for line in stdout.splitlines() if line.startswith("placement: ")]
    assert len(lines) == 1, stdout[-3000:]
    return parse_placement(lines[0].removeprefix("placement: "))


def commented_placement(script: Path) -> dict[str, set[int]]:
    lines = [line for line in script.read_text().splitlines() if line.startswith("# placement: ")]
    assert len(lines) == 1, f"{script.name} needs one '# placement: role=GPUs ...' comment"
    return parse_placement(lines[0].removeprefix("# placement: "))


def test_the_gpu_scripts_are_the_three_qwen3_scripts():
    assert [p.name for p in GPU_SCRIPTS] == [
        "train_maestro_grpo_qwen3_8b.sh",
        "train_maestro_nover_qwen3_8b.sh",
        "train_static_weights_grpo_qwen3_8b.sh",
    ]


@pytest.mark.parametrize("script", GPU_SCRIPTS, ids=lambda p: p.name)
def test_each_gpu_script_places_what_its_comment_says_on_all_eight_gpus(script):
    proc = check(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    placed = printed_placement(proc.stdout)
    assert placed == commented_placement(script)
    assert set().union(*placed.values()) == set(range(GPUS_PER_NODE))
    assert f"GPUs in use: {GPUS_PER_NODE}" in proc.stdout


def test_the_nover_reward_model_shares_the_policys_placement_group_rank_by_bundle():
    proc = check(NOVER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("reward (the preference channel)"))
    assert "8 ranks, 0.2 GPU each, placement group 0, rank r on bundle r: GPUs 0-7" in line


def test_without_colocation_each_group_reserves_gpus_of_its_own_in_the_order_train_creates_them():
    """OpenRLHF's train() creates the vLLM engines' placement group first, then the actor's, the reference's and
    its own reward model's (cli/train_ppo_ray.py 52-140): 2 GPUs each, in that order, none shared."""
    flags = [
        *("--actor.model_name_or_path", "m", "--reward.model_name_or_path", "rm"),
        *("--actor.num_gpus_per_node", "2", "--ref.num_gpus_per_node", "2", "--reward.num_gpus_per_node", "2"),
        *("--vllm.num_engines", "2", "--rollout.n_samples_per_prompt", "4"),
        *("--algo.advantage.estimator", "group_norm"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.cli.train_ppo_ray", "--runtime.check_flags", *flags],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert printed_placement(proc.stdout) == {"vllm": {0, 1}, "actor": {2, 3}, "ref": {4, 5}, "reward": {6, 7}}
    assert "reward (OpenRLHF's reward): 2 ranks, 1 GPU each, placement group 3, rank r on bundle r" in proc.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (  # cli/train_ppo_ray.py 57-64, inside train(): colocate_all needs actor GPUs == engines x TP
            ["--vllm.num_engines", "3"],
            "actor_num_nodes * actor_num_gpus_per_node must be equal to vllm_num_engines * "
            "vllm_tensor_parallel_size, got 8 and 6",
        ),
        (  # cli/train_ppo_ray.py 43-48, inside train(): colocated actor and reference need the same GPUs
            ["--ref.num_gpus_per_node", "4"],
            "num_nodes and num_gpus_per_node must be the same when colocate actor and ref model.",
        ),
    ],
)
def test_a_placement_assert_inside_openrlhfs_train_fails_check_flags_with_its_message(extra, message):
    proc = check(BASE, *extra)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert f"OpenRLHF refuses these flags at start-up: {message}" in proc.stderr
    assert "placement: " not in proc.stdout


SIX_ACTOR_GPUS = [
    *("--actor.num_gpus_per_node", "6", "--ref.num_gpus_per_node", "6", "--vllm.num_engines", "3"),
    *("--rollout.batch_size", "96", "--train.batch_size", "768"),
]


def test_four_reward_gpus_beside_six_actor_gpus_are_refused_before_anything_starts():
    proc = check(NOVER, *SIX_ACTOR_GPUS, "--reward.num_gpus_per_node", "4")
    assert proc.returncode == 2
    assert "the reward model has 4 ZeRO-3 ranks (4 GPUs) beside the actor's 6 (6 GPUs)" in proc.stderr
    assert "Fix: a reward model rank count that divides 6 (1, 2, 3, 6;" in proc.stderr
    assert "placement: " not in proc.stdout


def test_three_reward_gpus_beside_six_are_accepted_and_sit_on_the_first_three_bundles():
    proc = check(NOVER, *SIX_ACTOR_GPUS, "--reward.num_gpus_per_node", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert printed_placement(proc.stdout) == {
        "vllm": set(range(6)),
        "actor": set(range(6)),
        "ref": set(range(6)),
        "reward": {0, 1, 2},
    }


def test_a_real_run_refuses_the_uneven_layout_before_ray_starts(monkeypatch):
    """The same refusal on the launcher's run path (no --runtime.check_flags): it comes from the hook at the top of
    ``train()``, before ``ray.init`` and before any actor group is created."""
    from openrlhf_maestro.runtime import standin_finder

    standin_finder.install()  # OpenRLHF's CLI imports flash_attn; this CPU machine has none
    import openrlhf.trainer.ray.launcher as launcher_module
    import ray

    from openrlhf_maestro.cli import train_ppo_ray as launcher

    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append("ray.init"))
    monkeypatch.setattr(launcher_module.RayActorGroup, "__init__", lambda *a, **k: started.append("group"))
    flags = [
        *("--actor.model_name_or_path", "m", "--reward.model_name_or_path", "rm", "--ds.zero_stage", "3"),
        *("--actor.num_gpus_per_node", "6", "--ref.num_gpus_per_node", "6", "--reward.num_gpus_per_node", "4"),
        *("--rollout.batch_size", "12", "--rollout.n_samples_per_prompt", "4", "--train.dynamic_batch_enable"),
        *("--algo.advantage.estimator", "group_norm", "--vllm.num_engines", "6"),
    ]
    with pytest.raises(SystemExit) as exc:
        launcher.main(flags)
    assert exc.value.code == 2
    assert started == []


# -- outputs: what the scripts submit to Ray -------------------------------------------------------------------

STUB_RAY = """#!/usr/bin/env bash
# Stands in for Ray's CLI (no Ray cluster and no GPU here): records the arguments of each call, one per line.
n=$(ls "$RAY_STUB_DIR" | wc -l)
printf '%s\\n' "$@" > "$RAY_STUB_DIR/call-$n"
"""


def submit(tmp_path: Path, script: Path, cwd: Path, **env: str) -> list[str]:
    """Run ``script`` as a user would (``ray job submit``), with a stub ``ray`` on PATH; returns its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.mkdir(exist_ok=True)
    (bin_dir / "ray").write_text(STUB_RAY)
    (bin_dir / "ray").chmod(0o755)
    before = set(calls.iterdir())
    full_env = clean_env(RAY_STUB_DIR=str(calls), **env)
    full_env.pop("LAUNCH", None)
    full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env['PATH']}"
    subprocess.run(["bash", str(script)], cwd=cwd, env=full_env, check=True, timeout=60)
    (new,) = set(calls.iterdir()) - before
    return new.read_text().splitlines()


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def runtime_env(args: list[str]) -> dict:
    (text,) = [a.split("=", 1)[1] for a in args if a.startswith("--runtime-env-json=")]
    return json.loads(text)


def uploaded_files(workdir: Path, excludes: list[str]) -> set[str]:
    """The files Ray's own packaging code would upload as the job's working_dir with these excludes (.gitignore
    not consulted, so the excludes alone must keep the outputs out)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files: set[str] = set()
    _dir_travel(
        workdir,
        [_get_excludes(workdir, excludes)],
        lambda p: files.add(str(p.relative_to(workdir))) if p.is_file() else None,
        include_gitignore=False,
    )
    return files


@pytest.mark.parametrize("script", [BASE, NOVER], ids=lambda p: p.name)
def test_outputs_are_absolute_from_the_launch_directory_and_not_uploaded(tmp_path, script):
    args = submit(tmp_path, script, cwd=REPO)
    assert args[:2] == ["job", "submit"]
    save = Path(value(args, "--ckpt.output_dir"))
    assert save.is_absolute() and save.parent == REPO / "checkpoint"
    assert value(args, "--ckpt.path") == f"{save}/ckpt" and "--ckpt.load_enable" in args
    assert value(args, "--logger.tensorboard_dir") == f"{save}/tensorboard"
    assert value(args, "--reward.weights_log") == f"{save}/maestro_weights.jsonl"
    env = runtime_env(args)
    assert env["working_dir"] == str(REPO)
    # Ray's packaging, given these excludes, leaves a checkpoint in SAVE out of the upload and keeps the code.
    work = tmp_path / "work"
    for rel in ("openrlhf_maestro/x.py", f"{save.relative_to(REPO)}/ckpt/global_step20/shard.pt", "outputs/a"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text("x")
    assert uploaded_files(work, env["excludes"]) == {"openrlhf_maestro/x.py"}


def test_two_submissions_resume_from_the_same_checkpoint_folder(tmp_path):
    """``--ckpt.load_enable`` finds the first run's checkpoint only if the second submission names the same folder,
    outside Ray's per-submission copy of the working dir (whose hash changes with any edit to the repository)."""
    first = submit(tmp_path, BASE, cwd=REPO)
    second = submit(tmp_path, BASE, cwd=REPO, RUN_NAME="resumed")
    assert value(first, "--ckpt.path") == value(second, "--ckpt.path")
    assert Path(value(second, "--ckpt.path")).is_absolute()


def test_a_relative_save_resolves_against_the_launch_directory_and_an_absolute_one_is_kept(tmp_path):
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()
    args = submit(tmp_path, BASE, cwd=elsewhere, SAVE="./mine", WORKDIR=str(REPO))
    assert value(args, "--ckpt.path") == f"{elsewhere}/mine/ckpt"
    assert runtime_env(args)["working_dir"] == str(REPO)
    assert not any(re.search("mine", e) for e in runtime_env(args)["excludes"])  # not inside the working dir
    args = submit(tmp_path, BASE, cwd=REPO, SAVE=str(tmp_path / "abs"))
    assert value(args, "--ckpt.output_dir") == str(tmp_path / "abs")


def test_gitignore_lists_the_output_folders():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert {"checkpoint/", "outputs/", "wandb/"} <= set(ignored)
