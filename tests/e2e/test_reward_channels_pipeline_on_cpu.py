"""The paper's five objectives (two text rewards, three model channels) on NOVER data, and reward-function
failures, on OpenRLHF's real pipeline (CPU)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import REPO, SHARED, log_tail, run_example

from openrlhf_maestro.report import latest_run_scalars

pytestmark = pytest.mark.e2e

FIVE = ["format", "length", "entropy", "perplexity", "preference"]


@pytest.fixture(scope="module")
def nover(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """NOVER sample rows as OpenRLHF prompts, and a tiny actor and reward model whose tokenizer has seen them."""
    sample = SHARED / "data/nover-sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} is not available")
    root = tmp_path_factory.mktemp("nover")

    def run(*args: str) -> None:
        subprocess.run([sys.executable, "-m", *args], check=True, cwd=REPO, capture_output=True, text=True)

    run("openrlhf_maestro.data.nover", str(sample), str(root / "data"))
    corpus = ["--corpus", str(root / "data/train.jsonl")]
    run("openrlhf_maestro.tiny_model", str(root / "actor"), *corpus)
    run("openrlhf_maestro.tiny_model", str(root / "rm"), "--kind", "reward", *corpus)
    return {"data": root / "data/train.jsonl", "actor": root / "actor", "rm": root / "rm"}


def test_five_objectives_with_a_reward_model_beside_the_reward_function(nover, tmp_path_factory):
    """All five on the launcher's path, every model colocated (``--train.colocate_all``, as all five of OpenRLHF's
    GRPO-style scripts run): the reward model joins the placement group OpenRLHF shares among its models."""
    run = run_example(
        tmp_path_factory.mktemp("five-channels"),
        nover["actor"],
        "--train.colocate_all",
        "--data.max_len",
        "1024",
        "--reward.model_name_or_path",
        str(nover["rm"]),
        "--reward.num_nodes",
        "1",
        "--reward.num_gpus_per_node",
        "1",
        DATA=str(nover["data"]),
        REWARD_FN="examples/rewards/nover_text_reward.py",
        OBJECTIVES=",".join(FIVE),
        STEPS_PROMPTS="8",
    )
    assert run["returncode"] == 0, log_tail(run)
    assert "reward model for the reward_model channel: placement group" in run["log"].read_text(errors="replace")
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    for name in FIVE:
        for tag in (f"train/reward/{name}", f"train/aggregator/weight/{name}"):
            assert sorted(scalars[tag]) == [1, 2], tag
            assert all(math.isfinite(v) for v in scalars[tag].values()), (tag, scalars[tag])
    # entropy is in nats, at most log(vocab); perplexity is a within-group rank in [0, 1] with mean 0.5
    assert all(0 < v < math.log(2048) for v in scalars["train/reward/entropy"].values())
    assert all(v == pytest.approx(0.5) for v in scalars["train/reward/perplexity"].values())
    assert all(v > 1 for v in scalars["train/model_channel/perplexity/mean"].values())
    assert all(v > 0 for v in scalars["train/model_channel/perplexity/seconds"].values())  # its cost is reported
    assert set(scalars["train/reward/policy_forwards"].values()) == {4.0}  # entropy costs no extra forward


DEMO_ROWS = (REPO / "examples/data/demo_prompts.jsonl").read_text().splitlines()
MATH_ROWS = [row for row in DEMO_ROWS if '"math"' in row]
WRITING_ROWS = [row for row in DEMO_ROWS if '"math"' not in row]


def run_on_rows(out: Path, model: Path, rows: list[str], reward_file: str, *extra_args: str, **env: str) -> dict:
    """The example run on exactly `rows` (one pass over them) with the reward file tests/e2e/<reward_file>."""
    (out / "data.jsonl").write_text("\n".join(rows) + "\n")
    return run_example(
        out,
        model,
        *extra_args,
        DATA=str(out / "data.jsonl"),
        REWARD_FN=str(REPO / "tests/e2e" / reward_file),
        STEPS_PROMPTS=str(len(rows)),
        **env,
    )


def assert_stopped_before_step_1(run: dict, message: str) -> None:
    log = run["log"].read_text(errors="replace")
    assert run["returncode"] != 0
    assert message in log
    assert "--reward.failure_policy drop_response" in log  # the error names the ways out
    assert "skip_objective" in log
    assert "Global step 1" not in log


def test_a_raising_reward_function_stops_the_step_by_default(tiny_model_dir, tmp_path_factory):
    # Every arithmetic prompt makes the reward file raise.
    run = run_on_rows(tmp_path_factory.mktemp("raising"), tiny_model_dir, MATH_ROWS[:4], "raising_reward.py")
    assert_stopped_before_step_1(run, "the reward function raised or returned no 'rewards'")


def test_dropping_invalid_samples_is_opt_in_and_counted(tiny_model_dir, tmp_path_factory):
    run = run_example(
        tmp_path_factory.mktemp("dropping"),
        tiny_model_dir,
        "--reward.failure_policy",
        "drop_response",
        REWARD_FN=str(REPO / "tests/e2e/raising_reward.py"),
        STEPS_PROMPTS="8",
    )
    assert run["returncode"] == 0, log_tail(run)
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    dropped = scalars["train/reward/dropped_samples"]
    assert sorted(dropped) == [1, 2]
    assert sum(dropped.values()) > 0  # the demo data mixes arithmetic (raising) and writing prompts
    assert all(math.isfinite(v) for v in scalars["train/reward/match"].values())


def _parity(rows: list[str], parity: int) -> list[str]:
    return [row for row in rows if int(json.loads(row)["label"]) % 2 == parity]


@pytest.mark.parametrize("policy", ["drop_response", "skip_objective"])
def test_nan_and_wrong_type_objectives_are_dropped_or_skipped_and_counted(policy, tiny_model_dir, tmp_path_factory):
    # Two steps of 4 prompts; in each, one even-label (NaN match) and one odd-label (string length) arithmetic
    # prompt: 4 samples each, so 8 responses with a bad match and 8 with a bad length over the two steps.
    even, odd = _parity(MATH_ROWS, 0), _parity(MATH_ROWS, 1)
    rows = [even[0], odd[0], *WRITING_ROWS[:2], even[1], odd[1], *WRITING_ROWS[2:4]]
    out = tmp_path_factory.mktemp(f"bad-values-{policy}")
    # With DAPO's dynamic filtering on the reward function's own scores (the default), on a range all pass.
    filtering = ("--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "-10", "10")
    # OpenRLHF's own advantages of every response, per step (tests/e2e/recording_advantages.py).
    record = out / "record"
    record.mkdir()
    recording = ("--reward.plugins", str(REPO / "tests/e2e/recording_advantages.py"))
    run = run_on_rows(
        out,
        tiny_model_dir,
        rows,
        "bad_values_reward.py",
        "--reward.failure_policy",
        policy,
        *filtering,
        *recording,
        MAESTRO_RECORD_DIR=str(record),
    )
    assert run["returncode"] == 0, log_tail(run)
    responses = [row for step in (1, 2) for row in torch.load(record / f"advantages{step}.pt", weights_only=True)]
    assert len(responses) == 32 and all(bool(torch.isfinite(r["advantages"]).all()) for r in responses)
    arithmetic = [r for r in responses if "What is" in r["prompt"]]  # every one has a bad match or length
    assert len(arithmetic) == 16
    scalars = latest_run_scalars(run["out"] / "tensorboard")
    dropped = sum(scalars["train/reward/dropped_samples"].values())
    if policy == "drop_response":  # the whole response: zero advantage, at every token, in OpenRLHF's own tensors
        assert dropped == 16 and not any(tag.startswith("train/reward/skipped/") for tag in scalars)
        assert all(r["advantages"].abs().max() == 0 for r in arithmetic), [r["advantages"] for r in arithmetic]
        assert any(r["advantages"].abs().max() > 0.1 for r in responses if "What is" not in r["prompt"])
    else:  # only the bad objective, counted per objective; no response dropped whole
        assert dropped == 0
        skipped = {n: sum(scalars[f"train/reward/skipped/{n}"].values()) for n in ("format", "length", "match")}
        assert skipped == {"format": 0, "length": 8, "match": 8}, skipped
    # reward/invalid: the share of a step's 16 responses whose reward-function output failed whole (OpenRLHF's
    # batch mean of the per-sample flag): under drop_response each is one dropped response of that step (which
    # prompts a step draws depends on the sampler); under skip_objective a bad objective fails only itself.
    invalid = scalars["train/reward/invalid"]
    if policy == "drop_response":
        assert {s: v * 16 for s, v in invalid.items()} == scalars["train/reward/dropped_samples"], invalid
        assert sum(invalid.values()) == 1.0, invalid  # 16 of 32 responses
    else:
        assert invalid == {1: 0.0, 2: 0.0}, invalid
    for tag in ("train/reward/match", "train/reward/length", "train/aggregator/weight/match", "train/reward"):
        assert all(math.isfinite(v) for v in scalars[tag].values()), (tag, scalars[tag])
    # accepted responses / consumed prompts x 100 (OpenRLHF's figure): every group of 4 passed
    assert scalars["train/dynamic_filtering_pass_rate"] == {1: 400.0, 2: 400.0}
