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


# The flags of OpenRLHF's own GRPO-style example scripts (examples/scripts/ of OpenRLHF at v0.11.x) that touch
# the plugin: placement, batching, packing, estimator, filtering, agents, async. Listed by hand from each script.
COMMON = ["--actor.model_name_or_path", "m", "--data.prompt_dataset", "d", "--ds.param_dtype", "bf16"]
OPENRLHF_GRPO_SCRIPTS = {
    "train_dapo_ray_hybrid_engine.sh": [
        *("--actor.num_gpus_per_node", "8", "--ref.num_gpus_per_node", "8", "--vllm.num_engines", "4"),
        *("--vllm.tensor_parallel_size", "2", "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep"),
        *("--algo.advantage.estimator", "group_norm", "--algo.dynamic_filtering_enable"),
        *("--algo.dynamic_filtering_range", "0", "1", "--rollout.n_samples_per_prompt", "8"),
        *("--train.batch_size", "128", "--rollout.batch_size", "128", "--ds.packing_samples"),
        *("--reward.remote_url", "reward_func.py"),
    ],
    "train_prorlv2_math_hybrid_engine.sh": [
        *("--actor.num_gpus_per_node", "8", "--ref.num_gpus_per_node", "8", "--vllm.num_engines", "8"),
        *("--train.colocate_all", "--algo.advantage.estimator", "reinforce_baseline"),
        *("--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "0", "1"),
        *("--rollout.n_samples_per_prompt", "16", "--train.batch_size", "1024", "--rollout.batch_size", "512"),
        *("--train.dynamic_batch_enable", "--train.max_tokens_per_gpu", "32768", "--ds.packing_samples"),
        *("--reward.remote_url", "reward_func.py"),
    ],
    "train_vlm_math_hybrid_engine.sh": [
        *("--actor.num_gpus_per_node", "4", "--ref.num_gpus_per_node", "4", "--vllm.num_engines", "4"),
        *("--train.colocate_all", "--algo.advantage.estimator", "reinforce_baseline"),
        *("--rollout.n_samples_per_prompt", "8", "--train.batch_size", "1024", "--rollout.batch_size", "128"),
        *("--ds.attn_implementation", "eager", "--reward.remote_url", "reward_func.py"),
    ],
    "train_reinforce_baseline_hybrid_engine.sh": [
        *("--actor.num_gpus_per_node", "4", "--ref.num_gpus_per_node", "4", "--vllm.num_engines", "2"),
        *("--vllm.tensor_parallel_size", "2", "--train.colocate_all", "--train.agent_func_path", "agent.py"),
        *("--reward.remote_url", "reward_func.py", "--ds.packing_samples", "--train.dynamic_batch_enable"),
        *("--train.max_tokens_per_gpu", "16192", "--rollout.max_tokens_per_gpu", "32768"),
        *("--ds.ring_attn_size", "2", "--ds.ring_attn_head_stride", "2"),
        *("--algo.advantage.estimator", "reinforce_baseline", "--rollout.n_samples_per_prompt", "8"),
        *("--rollout.batch_size", "128", "--train.batch_size", "1024", "--algo.dynamic_filtering_enable"),
    ],
    "train_reinforce_baseline_ray_agent_async.sh": [
        *("--actor.num_gpus_per_node", "4", "--ref.num_gpus_per_node", "4", "--vllm.num_engines", "2"),
        *("--vllm.tensor_parallel_size", "2", "--train.colocate_all", "--train.agent_func_path", "agent.py"),
        *("--reward.remote_url", "reward_func.py", "--ds.packing_samples", "--train.dynamic_batch_enable"),
        *("--train.async_enable", "--train.partial_rollout_enable", "--ds.ring_attn_size", "2"),
        *("--algo.advantage.estimator", "reinforce_baseline", "--rollout.n_samples_per_prompt", "8"),
        *("--rollout.batch_size", "128", "--train.batch_size", "1024", "--algo.dynamic_filtering_enable"),
    ],
}


@pytest.mark.parametrize("script", sorted(OPENRLHF_GRPO_SCRIPTS))
@pytest.mark.parametrize("aggregator", ["maestro", "gdpo"])
def test_openrlhfs_own_grpo_flag_sets_pass_with_the_plugins_flags(script, aggregator):
    flags = [*COMMON, *OPENRLHF_GRPO_SCRIPTS[script]]
    plugin = ["--reward.aggregator", aggregator, "--reward.objectives", "format,length,entropy"]
    proc = subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.cli.train_ppo_ray", "--runtime.check_flags", *flags, *plugin],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = proc.stderr.split("error:", 1)[-1] if proc.returncode else ""  # argparse's usage lists every flag
    for word in ("packing", "ring_attn", "dynamic_batch"):  # never a reason to refuse
        assert f"--ds.{word}" not in message and f"--train.{word}" not in message, message
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--ds.packing_samples True" in proc.stdout or "packing" not in " ".join(flags)
    estimator = flags[flags.index("--algo.advantage.estimator") + 1]
    note = "the gdpo advantage as its authors define it is --algo.advantage.estimator reinforce_baseline"
    assert (note in proc.stderr) == (aggregator == "gdpo" and estimator != "reinforce_baseline"), proc.stderr


def test_the_checks_see_the_flags_as_openrlhf_leaves_them():
    """Dynamic batching alone: OpenRLHF switches packing on after parsing (cli/train_ppo_ray.py 691-694); the
    checks and the printed settings are those of the arguments ``train`` receives."""
    proc = check("examples/scripts/train_grpo_tiny_cpu.sh", "--train.dynamic_batch_enable")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--ds.packing_samples True" in proc.stdout
