"""The alignment meta-reward inside OpenRLHF's real GRPO pipeline on CPU (examples/scripts/train_grpo_tiny_cpu.sh,
the launcher and train_ppo_ray, nothing mocked): a target reported on the arithmetic prompts only trains the
Conductor, and is kept out of the objectives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _support import log_tail, run_example

from openrlhf_maestro.report import latest_run_scalars

pytestmark = pytest.mark.e2e


def test_a_target_on_some_prompts_trains_the_conductor(tiny_model_dir, tmp_path_factory):
    run = run_example(
        tmp_path_factory.mktemp("target-run"),
        tiny_model_dir,
        *("--maestro.meta_reward", "alignment", "--maestro.target", "judge", "--reward.context", "prompt"),
        AGGREGATOR="maestro",
        REWARD_FN=str(Path(__file__).with_name("judge_reward.py")),
        STEPS_PROMPTS="8",
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    fractions = scalars["train/maestro/target_fraction"]
    assert set(fractions) == {1, 2} and all(0.0 <= f <= 1.0 for f in fractions.values()), fractions
    saved = torch.load(run["out"] / "model/reward_aggregator.pt", weights_only=True)
    state = saved["state"]
    assert state["config"]["meta_reward"] == "alignment" and state["config"]["target"] == "judge"
    assert state["objectives"] == ["format", "length", "match"]  # the target is not an objective
    # A meta-update ran on every step with a labelled group (2+ judge values in a group), and none otherwise.
    labelled_steps = sum(f > 0 for f in fractions.values())
    assert state["meta"]["updates"] == labelled_steps, (fractions, state["meta"]["updates"])
    # The judge is obj/length: on the arithmetic (labelled) prompts format and match are 0 for the tiny model, so
    # Â(a) ∝ the length z-score for every a and G(a) = Σ_j Â_ij u_ij > 0 on every labelled group. (With a
    # single varying objective every emphasis gives the same Â, so G does not tell them apart: no test of the
    # Conductor's direction here; the unit tests do that.)
    for step, fraction in fractions.items():
        if fraction > 0:
            assert scalars["train/maestro/target_gain"][step] > 0, scalars["train/maestro/target_gain"]
    # The target is logged over the responses that report it (a word-count score in [0, 1]), never as a NaN mean.
    assert "train/obj/judge" not in scalars and "train/obj/length" in scalars
    judged = scalars["train/reward/judge"]
    assert set(judged) == {s for s, f in fractions.items() if f > 0}, (judged, fractions)
    assert all(0.0 <= v <= 1.0 for v in judged.values()), judged
