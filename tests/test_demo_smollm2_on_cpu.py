"""`make demo`'s pieces that need no pipeline run: its prompts, its reward file, the flags its launch script passes."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from _support import REPO, clean_env
from test_example_scripts_on_cpu import check

from openrlhf_maestro.report import load_reward_func

PROMPTS = REPO / "examples/data/demo_real_prompts.jsonl"
HELDOUT = REPO / "examples/data/demo_real_heldout.jsonl"
REWARD = REPO / "examples/rewards/demo_real_reward.py"
STEPS = int(re.search(r"^STEPS=(\d+)", (REPO / "examples/scripts/demo_cpu.sh").read_text(), re.M).group(1))


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_prompts_are_distinct_labelled_and_enough_for_the_demos_steps():
    train, heldout = rows(PROMPTS), rows(HELDOUT)
    assert len(train) >= 4 * STEPS  # --data.max_samples = 4 prompts per step
    inputs = [r["input"] for r in train + heldout]
    assert len(set(inputs)) == len(inputs)  # held-out prompts are not trained on
    # report.weights_by_category finds a prompt's category by substring: no input may contain another
    assert not [(a, b) for a in inputs for b in inputs if a != b and a in b]
    for r in train + heldout:
        assert r["category"] in ("math", "writing") and r["label"].strip(), r
        if r["category"] == "math":
            assert re.fullmatch(r"\d+", r["label"]), r
    # both categories in the rows the demo trains on, and in the held-out rows
    assert {r["category"] for r in train[: 4 * STEPS]} == {r["category"] for r in heldout} == {"math", "writing"}


def chat(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "response, fmt",
    [
        ("Tom has 3 + 4 = 7 apples. Answer: 7", 1.0),
        ("3 + 4 = 7.\nAnswer: 7\n", 1.0),
        ("Answer: 7\n\nMore questions: how many pears?", 0.5),  # the answer is not the ending
        ("So, answer: 12.", 0.5),
        ("The answer is 12", 0.5),
        ("Answer:  \n", 0.5),  # nothing after the marker
        ("Seven apples.", 0.0),
    ],
)
def test_format_rewards_an_answer_line_at_the_end(response, fmt):
    logs = load_reward_func(REWARD)([chat("q") + response + "<|im_end|>"], [chat("q")], ["7"])["extra_logs"]
    assert logs["obj/format"] == fmt


def test_length_is_free_up_to_20_words_then_falls_to_0_at_40():
    reward_func = load_reward_func(REWARD)

    def length(words: int) -> float:
        return reward_func([chat("q") + "w " * words], [chat("q")], ["7"])["extra_logs"]["obj/length"]

    assert length(5) == length(20) == 1.0
    assert length(30) == pytest.approx(0.5) and length(40) == length(64) == 0.0


def launch_args(script: str, tmp_path, **env: str) -> list[str]:
    """The arguments the script hands to the launcher, captured by a stand-in for PYTHON."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    fake.chmod(0o755)
    proc = subprocess.run(
        ["bash", script], cwd=REPO, env=clean_env(PYTHON=str(fake), **env), capture_output=True, check=True
    )
    return proc.stdout.decode().split("\0")[:-1]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_smollm2_script_is_the_tiny_script_with_a_real_models_settings(tmp_path):
    args = launch_args("examples/scripts/train_grpo_smollm2_cpu.sh", tmp_path)
    assert args[:2] == ["-m", "openrlhf_maestro.cli.train_ppo_ray"]
    expected = {
        "--actor.model_name_or_path": "outputs/smollm2",
        "--data.prompt_dataset": "examples/data/demo_real_prompts.jsonl",
        "--reward.remote_url": "examples/rewards/demo_real_reward.py",
        "--reward.objectives": "format,length,entropy,perplexity",
        "--perplexity.reference_template": "\nAnswer: {reference}",
        "--actor.adam.lr": "3e-5",
        "--maestro.lr": "2e-3",
        "--rollout.max_new_tokens": "64",
        "--rollout.temperature": "0.7",
        "--data.max_samples": "32",
        "--algo.kl.init_coef": "0.01",
    }
    assert {k: flag(args, k) for k in expected} == expected
    assert "--runtime.verify_weight_sync" in args  # vLLM checked against the saved actor after training
    # the environment still overrides
    args = launch_args("examples/scripts/train_grpo_smollm2_cpu.sh", tmp_path, LR="1e-6")
    assert flag(args, "--actor.adam.lr") == "1e-6"


def test_the_tiny_scripts_defaults_are_unchanged(tmp_path):
    args = launch_args("examples/scripts/train_grpo_tiny_cpu.sh", tmp_path)
    expected = {
        "--actor.model_name_or_path": "outputs/tiny-model",
        "--reward.objectives": "format,length,match",
        "--actor.adam.lr": "1e-3",
        "--maestro.lr": "1e-2",
        "--rollout.max_new_tokens": "32",
        "--rollout.temperature": "1.0",
        "--data.max_len": "256",
        "--data.max_samples": "8",
    }
    assert {k: flag(args, k) for k in expected} == expected
    assert "--runtime.verify_weight_sync" in args and "--perplexity.reference_template" not in args


def test_the_smollm2_script_passes_openrlhfs_parser_and_the_plugins_checks():
    proc = check("examples/scripts/train_grpo_smollm2_cpu.sh")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flags OK: --reward.aggregator maestro, --reward.objectives format,length,entropy,perplexity" in proc.stdout
