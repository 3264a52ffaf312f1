"""End to end on OpenRLHF's real pipeline: train_ppo_ray, GRPO, vLLM CPU, DeepSpeed ZeRO-2, weight sync.

Nothing is mocked: the example script runs ``python -m openrlhf_maestro.cli.train_ppo_ray --runtime cpu``
in a subprocess, and the assertions read what the run wrote (TensorBoard events, the saved actor, the
weight-sync report), not its stdout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _support import REPO, run_example
from safetensors.torch import load_file

from openrlhf_maestro.report import latest_run_scalars, summary
from openrlhf_maestro.runtime.kernel_paths import above_avx2

pytestmark = pytest.mark.e2e

STEPS = 2
ROLLOUT_BATCH = 4
N_SAMPLES = 4


@pytest.fixture(scope="module")
def grpo_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Plain OpenRLHF GRPO (no aggregator): the foundation every plugin feature builds on.

    It runs as an AVX2-only machine would (``--runtime.cpu_isa avx2``: vLLM's ``_C_AVX2`` kernels, torch's
    AVX2 dispatch), so a machine with AVX-512 also tests the path of the smaller CPUs; every other
    end-to-end run uses this CPU's own kernels.
    """
    return run_example(
        tmp_path_factory.mktemp("grpo-run"),
        tiny_model_dir,
        "--runtime.cpu_isa",
        "avx2",
        AGGREGATOR="none",
        STEPS_PROMPTS=str(STEPS * ROLLOUT_BATCH),
        ROLLOUT_BATCH=str(ROLLOUT_BATCH),
        N_SAMPLES=str(N_SAMPLES),
    )


def test_run_exits_cleanly(grpo_run, capsys):
    tail = grpo_run["log"].read_text(errors="replace")[-6000:]
    assert grpo_run["returncode"] == 0, tail
    setup = REPO / ".venv/.maestro-setup-seconds"
    timings = {"run": grpo_run["seconds"]}
    if setup.is_file():
        timings = {"setup": float(setup.read_text()), **timings}
    with capsys.disabled():
        print("\n" + summary(grpo_run["out"], timings))


def test_every_step_trained_the_actor(grpo_run):
    scalars = latest_run_scalars(grpo_run["out"] / "tensorboard")
    grad_norms = scalars["train/actor_grad_norm"]
    assert sorted(grad_norms) == list(range(1, STEPS + 1))
    assert all(math.isfinite(g) and g > 0 for g in grad_norms.values()), grad_norms
    # GRPO with the reference model: KL is computed and logged, rewards come from the reward function.
    for tag in (
        "train/kl",
        "train/reward",
        "train/obj/format",
        "train/obj/length",
        "train/obj/match",
        "train/timing/step_total",
        "train/rollout/num_samples",
    ):
        assert sorted(scalars[tag]) == list(range(1, STEPS + 1)), tag
        assert all(math.isfinite(v) for v in scalars[tag].values()), tag
    assert set(scalars["train/rollout/num_samples"].values()) == {float(ROLLOUT_BATCH * N_SAMPLES)}


def test_saved_actor_moved_and_vllm_holds_exactly_its_weights(grpo_run):
    report = json.loads((grpo_run["out"] / "model/weight_sync_check.json").read_text())
    assert report["engines"] and all(e["parameters_equal"] and e["tensors"] > 0 for e in report["engines"]), report


def test_vllm_generates_with_the_synced_weights(grpo_run):
    """vLLM's log-probabilities of a fixed text equal the saved actor's, whichever GEMM path this CPU has.

    On AVX-512 machines vLLM's own oneDNN path would keep computing from the weights packed at load time;
    the second assertion shows the check can tell: the initial model is further away than the tolerance.
    """
    report = json.loads((grpo_run["out"] / "model/weight_sync_check.json").read_text())
    for engine in report["engines"]:
        gen = engine["generation"]
        assert gen["tokens"] >= 8 and gen["mean_abs_diff"] <= gen["tolerance"], gen
        assert gen["discriminates"] and gen["initial_mean_abs_diff"] > 3 * gen["tolerance"], gen
        assert engine["equal"], engine


def test_vllm_ran_avx2_kernels(grpo_run):
    """What the engine ran, read in its worker: vLLM's library and attention ISA, torch's dispatch, oneDNN's
    primitives (an AMX or AVX-512 CPU would show avx512/amx implementations there without the emulation)."""
    for engine in json.loads((grpo_run["out"] / "model/weight_sync_check.json").read_text())["engines"]:
        cpu = engine["engine_cpu"]
        assert cpu["vllm_kernels"] == ["_C_AVX2.abi3.so"] and cpu["torch_capability"] == "AVX2", cpu
        assert cpu["avx512"] is False and cpu["attention_isa"] == ["vec"], cpu
        onednn = cpu["onednn"]["implementations"]
        assert onednn and not any(above_avx2(i) for i in onednn), cpu["onednn"]
    before = load_file(grpo_run["model"] / "model.safetensors")
    after = load_file(grpo_run["out"] / "model/model.safetensors")
    assert before.keys() <= after.keys()  # OpenRLHF also writes the tied lm_head.weight
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, f"only {changed} changed"
