"""MAESTRO inside OpenRLHF's real GRPO pipeline on CPU: training, metrics, checkpoint/resume, sum, random, plugins,
an agent.

Every run goes through examples/scripts/train_grpo_tiny_cpu.sh, i.e. the launcher and OpenRLHF's
train_ppo_ray, with nothing mocked; assertions read the TensorBoard events and files the runs wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _support import REPO, log_tail, run_example, state_equal

from openrlhf_maestro.report import latest_run_scalars
from openrlhf_maestro.runtime.cpu_info import cpu_isa

pytestmark = pytest.mark.e2e

OBJECTIVES = ["format", "length", "match"]
MICRO_BATCHES = 4  # 4 prompts x 4 samples per step, --rollout.micro_batch_size 4


def steps_of(scalars: dict, tag: str) -> list[int]:
    return sorted(scalars.get(tag, {}))


@pytest.fixture(scope="module")
def maestro_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """3 steps of MAESTRO, a meta-update every step, a checkpoint at step 2."""
    out = tmp_path_factory.mktemp("maestro-run")
    return run_example(
        out, tiny_model_dir, "--ckpt.save_steps", "2", AGGREGATOR="maestro", STEPS_PROMPTS="12", CKPT=str(out / "ckpt")
    )


@pytest.fixture(scope="module")
def resumed_run(maestro_run: dict, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Resume maestro_run's step-2 checkpoint with 4 steps of data: steps 3 and 4 run, asynchronously
    (``--train.async_enable``: OpenRLHF's TrainingActor holds the experience maker, a generator actor feeds
    it), checkpointing again at step 4."""
    assert maestro_run["returncode"] == 0, log_tail(maestro_run)
    return run_example(
        tmp_path_factory.mktemp("maestro-resumed"),
        tiny_model_dir,
        "--ckpt.load_enable",
        "--train.async_enable",
        "--ckpt.save_steps",
        "2",
        AGGREGATOR="maestro",
        STEPS_PROMPTS="16",
        CKPT=str(maestro_run["out"] / "ckpt"),
    )


def test_maestro_trains_the_actor_and_the_conductor(maestro_run, tiny_model_dir):
    assert maestro_run["returncode"] == 0, log_tail(maestro_run)
    scalars = latest_run_scalars(maestro_run["out"] / "tensorboard")
    expected = ["train/maestro/entropy", "train/maestro/meta_loss", "train/maestro/updates"]
    for name in OBJECTIVES:
        expected += [f"train/reward/{name}", f"train/aggregator/weight/{name}", f"train/aggregator/emphasis/{name}"]
    for tag in expected:
        assert steps_of(scalars, tag) == [1, 2, 3], tag
        assert all(math.isfinite(v) for v in scalars[tag].values()), (tag, scalars[tag])
    assert scalars["train/maestro/updates"] == {1: 1.0, 2: 2.0, 3: 3.0}
    k, responses = len(OBJECTIVES), 16  # 4 prompts x 4 samples per step
    for step in (1, 2, 3):
        for n in OBJECTIVES:  # a share of the 16 drawn actions, and the mean of w(a) = (1 − β)/K + β·e_a, β = 0.5
            share = scalars[f"train/aggregator/emphasis/{n}"][step]
            assert share * responses == pytest.approx(round(share * responses), abs=1e-4), (n, step, share)
            assert scalars[f"train/aggregator/weight/{n}"][step] == pytest.approx(0.5 / k + 0.5 * share, abs=1e-5)
    # Step 1 runs on the zero-initialized (uniform) Conductor: its entropy is log K, and its meta-loss, with
    # log π = −log K for every action and group-centred advantages (mean 0), is −λ_ent · log K (λ_ent = 0.01).
    assert scalars["train/maestro/entropy"][1] == pytest.approx(math.log(k), abs=1e-5)
    assert scalars["train/maestro/meta_loss"][1] == pytest.approx(-0.01 * math.log(k), abs=1e-5)
    # One model forward per actor forward call and micro-batch: h came from the forward that already ran.
    assert set(scalars["train/reward/policy_forwards"].values()) == {float(MICRO_BATCHES)}
    # The actor trained and vLLM holds exactly its weights.
    report = json.loads((maestro_run["out"] / "model/weight_sync_check.json").read_text())
    assert all(e["equal"] for e in report["engines"]), report
    # ... on this CPU's own kernels: the library vLLM loads for its ISA (the GRPO test covers AVX2).
    native = cpu_isa().vllm_kernel_library().split()[0] + ".abi3.so"
    assert all(e["engine_cpu"]["vllm_kernels"] == [native] for e in report["engines"]), report
    # The Conductor's head starts at zero (uniform policy) and took three Adam steps of lr 1e-2 (one meta step
    # per update): Adam moves an entry by at most about lr per step (1.0036·lr over the first three steps with
    # β = (0.9, 0.999)), and the policy it gives is no longer uniform.
    saved = torch.load(maestro_run["out"] / "model/reward_aggregator.pt", weights_only=True)
    assert saved["objectives"] == OBJECTIVES and saved["hidden_size"] == 128 and saved["aggregator"] == "maestro"
    adam = saved["state"]["meta"]["optimizer"]["state"]
    assert adam and all(float(param_state["step"]) == 3.0 for param_state in adam.values()), adam
    head = saved["state"]["conductor"]["head.0.weight"]
    assert head.shape == (k, 128) and 0 < float(head.abs().max()) <= 3 * 1.0037e-2, float(head.abs().max())
    assert all(scalars["train/maestro/entropy"][step] < math.log(k) - 1e-4 for step in (2, 3)), scalars


def test_resume_restores_the_conductor_exactly_and_continues(maestro_run, resumed_run):
    assert resumed_run["returncode"] == 0, log_tail(resumed_run)
    ckpt = maestro_run["out"] / "ckpt"
    restored = torch.load(ckpt / "reward_aggregator_restored.pt", weights_only=True)
    assert restored["global_step"] == 2
    model_states = next((ckpt / "_actor" / "global_step2").glob("*model_states.pt"))
    saved = torch.load(model_states, weights_only=False, map_location="cpu")["reward_aggregator"]
    assert state_equal(restored["state"], saved["state"])
    scalars = latest_run_scalars(resumed_run["out"] / "tensorboard")
    assert steps_of(scalars, "train/maestro/updates") == [3, 4]
    assert scalars["train/maestro/updates"] == {3: 3.0, 4: 4.0}  # the counter continues from the checkpoint
    # The async training actor checkpointed the aggregator too, and wrote it beside the model.
    step4 = next((ckpt / "_actor" / "global_step4").glob("*model_states.pt"))
    saved4 = torch.load(step4, weights_only=False, map_location="cpu")["reward_aggregator"]
    assert saved4["steps"] == 4 and saved4["state"]["meta"] is not None
    standalone = torch.load(resumed_run["out"] / "model/reward_aggregator.pt", weights_only=True)
    assert state_equal(standalone["state"], saved4["state"])


def test_sum_trains_ppo_with_a_critic_on_the_weighted_sum_of_the_objectives(tiny_model_dir, tmp_path_factory):
    """``sum`` under PPO with a critic (``gae``) and one response per prompt: no group anywhere."""
    weights = [0.5, 0.3, 0.2]
    run = run_example(
        tmp_path_factory.mktemp("sum-ppo-run"),
        tiny_model_dir,
        "--algo.advantage.estimator",
        "gae",
        "--critic.num_nodes",
        "1",
        "--critic.num_gpus_per_node",
        "1",
        AGGREGATOR="sum",
        WEIGHTS=",".join(map(str, weights)),
        N_SAMPLES="1",
        STEPS_PROMPTS="8",
        VERIFY_WEIGHT_SYNC="0",
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    assert steps_of(scalars, "train/reward") == [1, 2]
    for step in (1, 2):
        weighted = sum(w * scalars[f"train/reward/{n}"][step] for w, n in zip(weights, OBJECTIVES, strict=True))
        assert scalars["train/reward"][step] == pytest.approx(weighted, abs=1e-5)
        assert math.isfinite(scalars["train/critic_loss"][step])  # the critic trained on the sum's returns
    assert "train/reward/seconds_feedback" not in scalars  # a static sum learns nothing from the advantages


def test_random_emphasis_ablation_runs_with_its_prior_and_saves_its_state(tiny_model_dir, tmp_path_factory):
    run = run_example(
        tmp_path_factory.mktemp("random-run"), tiny_model_dir, AGGREGATOR="random", WEIGHTS="2,1,1", STEPS_PROMPTS="8"
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    # w(a) = 0.5 * (0.5, 0.25, 0.25) + 0.5 * e_a, so the logged mean weight of objective k is
    # 0.5 * prior_k + 0.5 * (share of the 16 responses that drew k): the shares are multiples of 1/16.
    for step in (1, 2):
        weights = [scalars[f"train/aggregator/weight/{n}"][step] for n in OBJECTIVES]
        shares = [(w - 0.5 * p) / 0.5 for w, p in zip(weights, (0.5, 0.25, 0.25), strict=True)]
        assert [s * 16 for s in shares] == pytest.approx([round(s * 16) for s in shares], abs=1e-4), weights
        assert all(s >= -1e-6 for s in shares) and sum(shares) == pytest.approx(1.0, abs=1e-5), shares
        # the emphasis shares random logs, under the same aggregator-neutral names as maestro's
        emphasis = [scalars[f"train/aggregator/emphasis/{n}"][step] for n in OBJECTIVES]
        assert emphasis == pytest.approx(shares, abs=1e-4)
    saved = torch.load(run["out"] / "model/reward_aggregator.pt", weights_only=True)
    assert saved["aggregator"] == "random" and saved["state"]["objectives"] == OBJECTIVES
    assert saved["state"]["rng"].dtype == torch.uint8  # the action generator's state, for an exact resume


def test_a_plugin_aggregator_and_channel_train_with_no_edit_to_the_package(tiny_model_dir, tmp_path_factory):
    """The classes declare needs_hidden, their state and the logits source; the registries and the spec do the rest."""
    plugin = str(Path(__file__).with_name("custom_plugin.py"))
    run = run_example(
        tmp_path_factory.mktemp("plugin-run"),
        tiny_model_dir,
        "--reward.plugins",
        plugin,
        AGGREGATOR="hidden_width",
        OBJECTIVES="format,length,max_prob",
        STEPS_PROMPTS="8",
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    assert scalars["train/custom/hidden_width"] == {1: 128.0, 2: 128.0}  # the tiny model's H
    assert all(v > 0 for v in scalars["train/custom/hidden_norm"].values())
    assert scalars["train/custom/calls"] == {1: 1.0, 2: 2.0}
    assert all(0 < v <= 1 for v in scalars["train/obj/max_prob"].values())  # computed by the plugin's channel
    assert set(scalars["train/reward/policy_forwards"].values()) == {float(MICRO_BATCHES)}  # no extra forward
    for step in (1, 2):  # OpenRLHF logs obj/* as batch means; R is their mean per response
        mean = sum(scalars[f"train/obj/{n}"][step] for n in ("format", "length", "max_prob")) / 3
        assert scalars["train/reward"][step] == pytest.approx(mean, abs=1e-5)
    saved = torch.load(run["out"] / "model/reward_aggregator.pt", weights_only=True)
    assert saved["aggregator"] == "hidden_width" and saved["plugins"] == [plugin]
    assert saved["hidden_size"] == 128 and saved["state"] == {"calls": 2}


def test_an_agent_reports_the_objectives_of_its_last_step_with_dynamic_filtering(tiny_model_dir, tmp_path_factory):
    """OpenRLHF's multi-turn agent API (``--train.agent_func_path``) with MAESTRO: the objectives travel in the
    last step()'s extra_logs (examples/agents/two_turn_agent.py). The random tiny model never stops before the
    length budget, so OpenRLHF ends each episode after the first turn (utils/agent.py 93-95); the objectives
    must then come from that step, which is why the agent reports them at every step."""
    run = run_example(
        tmp_path_factory.mktemp("agent-run"),
        tiny_model_dir,
        "--train.agent_func_path",
        str(REPO / "examples/agents/two_turn_agent.py"),
        # DAPO's dynamic filtering on the aggregator's weights (a range every group passes: 8 prompts, 2 steps)
        "--algo.dynamic_filtering_enable",
        "--algo.dynamic_filtering_range",
        "-10",
        "10",
        "--reward.filter_score",
        "aggregator_weights",
        STEPS_PROMPTS="8",
        VERIFY_WEIGHT_SYNC="0",
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    for name in OBJECTIVES:
        assert sorted(scalars[f"train/reward/{name}"]) == [1, 2], name
        assert sorted(scalars[f"train/aggregator/weight/{name}"]) == [1, 2], name
    assert scalars["train/maestro/updates"] == {1: 1.0, 2: 2.0}
    assert all(v >= 1 for v in scalars["train/agent/turns"].values())  # the agent's own step() ran
    # Every group passed. OpenRLHF logs accepted responses / consumed prompts x 100 (samples_generator.py 122-123),
    # so a full pass reads 100 x the 4 samples per prompt.
    assert scalars["train/dynamic_filtering_pass_rate"] == {1: 400.0, 2: 400.0}
