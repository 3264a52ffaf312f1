"""The run report: per-step table from TensorBoard events, weights per prompt category, the weights plot."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from _support import REPO
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForCausalLM, AutoTokenizer

from openrlhf_maestro.metric_names import objective_key, train_tag, weight_key
from openrlhf_maestro.report import (
    ChatModel,
    category_table,
    compare_models,
    first_per_category,
    latest_run_scalars,
    main,
    plot_weights,
    summary,
    weights_by_category,
)

DEMO_REWARD = REPO / "examples/rewards/demo_reward.py"


@pytest.fixture()
def run_dir(tmp_path):
    writer = SummaryWriter(tmp_path / "tensorboard" / "run")
    for step in (1, 2, 3):
        writer.add_scalar("train/timing/step_total", 2.0 * step, step)
        writer.add_scalar("train/reward", 0.1 * step, step)
        writer.add_scalar(train_tag(weight_key("format")), 0.5 - 0.1 * step, step)
        writer.add_scalar(train_tag(weight_key("length")), 0.5 + 0.1 * step, step)
    writer.close()
    return tmp_path


def test_summary_lists_every_step_and_the_startup_time(run_dir):
    text = summary(run_dir, {"run": 20.0})
    assert "GRPO steps run: 3" in text
    assert "start-up and shutdown 8.0s" in text  # 20 - (2 + 4 + 6)
    assert latest_run_scalars(run_dir / "tensorboard")["train/reward"][2] == pytest.approx(0.2)


def test_weights_by_category_joins_chat_templated_prompts_with_the_dataset(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"input": "What is 2 + 3?", "category": "math"},
                {"input": "Write about snow.", "category": "writing"},
            ]
        )
    )
    log = tmp_path / "weights.jsonl"
    rows = [
        ("<|im_start|>user\nWhat is 2 + 3?<|im_end|>", {"format": 0.6, "length": 0.4}),
        ("<|im_start|>user\nWhat is 2 + 3?<|im_end|>", {"format": 0.2, "length": 0.8}),
        ("<|im_start|>user\nWrite about snow.<|im_end|>", {"format": 0.1, "length": 0.9}),
    ]
    log.write_text("\n".join(json.dumps({"step": 1, "prompt": p, "weights": w}) for p, w in rows))
    objectives, means, counts = weights_by_category(log, data)
    assert objectives == ["format", "length"]
    assert counts == {"math": 2, "writing": 1}
    assert means["math"]["format"] == pytest.approx(0.4) and means["writing"]["length"] == pytest.approx(0.9)
    assert "math" in category_table(objectives, means, counts)

    log.write_text(json.dumps({"step": 1, "prompt": "unknown prompt", "weights": {"format": 1.0}}))
    with pytest.raises(ValueError, match="matches no 'input'"):
        weights_by_category(log, data)


def test_plot_writes_a_png(run_dir, tmp_path):
    scalars = latest_run_scalars(run_dir / "tensorboard")
    png = plot_weights(scalars, tmp_path / "w.png", {"math": {"format": 0.4, "length": 0.6}})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no train/aggregator/weight/.*--reward.aggregator maestro"):
        plot_weights({"train/reward": {1: 0.0}}, tmp_path / "x.png")


@pytest.fixture()
def run_with_objectives(tmp_path):
    writer = SummaryWriter(tmp_path / "tensorboard" / "run")
    for step in (1, 2):
        writer.add_scalar("train/timing/step_total", 10.0, step)
        writer.add_scalar("train/kl", 0.001 * step, step)
        writer.add_scalar(train_tag(objective_key("format")), 0.25 * step, step)
        writer.add_scalar(train_tag(objective_key("perplexity")), 0.5, step)
        writer.add_scalar(train_tag(weight_key("format")), 0.5, step)
    writer.close()
    return tmp_path


def test_summary_prints_each_objective_per_step_and_the_kl(run_with_objectives):
    text = summary(run_with_objectives, {"model_build": 1.0, "run": 50.0})
    table = text.split("objectives per step")[1].splitlines()
    assert table[1].split() == ["step", "format", "perplexity"]
    assert table[2].split() == ["1", "0.250", "0.500"] and table[3].split() == ["2", "0.500", "0.500"]
    assert text.splitlines()[1].split()[:2] == ["step", "step"] and "kl" in text.splitlines()[1].split()
    assert "run 50.0s (start-up and shutdown 30.0s)" in text


HELDOUT = [
    {"input": "What is 2 + 3?", "label": "5", "category": "math"},
    {"input": "Write about snow.", "label": "White and quiet.", "category": "writing"},
    {"input": "What is 4 + 4?", "label": "8", "category": "math"},
    {"input": "Write about rain.", "label": "Soft and grey.", "category": "writing"},
    {"input": "What is 9 - 1?", "label": "8", "category": "math"},
]


@pytest.fixture()
def heldout(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HELDOUT))
    return path


def test_first_per_category_keeps_file_order_within_each_category():
    rows = first_per_category(HELDOUT, "category", 2)
    assert [r["input"] for r in rows] == [
        "What is 2 + 3?",
        "What is 4 + 4?",
        "Write about snow.",
        "Write about rain.",
    ]


def test_compare_models_answers_the_same_prompts_with_both_models(tiny_model_dir, tmp_path, heldout):
    # A "trained" model that differs from the initial one: every weight scaled.
    trained = tmp_path / "trained"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(trained)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(trained)

    same = compare_models(tiny_model_dir, tiny_model_dir, heldout, per_category=1, max_new_tokens=8)
    assert same.count("(the same text)") == 2  # deterministic: the same model gives the same greedy answer
    assert "[math] What is 2 + 3? (reference: 5)" in same and "[writing] Write about snow." in same
    assert "4 + 4" not in same

    text = compare_models(tiny_model_dir, trained, heldout, per_category=2, max_new_tokens=8, reward_file=DEMO_REWARD)
    befores = [line for line in text.splitlines() if line.startswith("  before ")]
    afters = [line for line in text.splitlines() if line.startswith("  after ")]
    assert len(befores) == len(afters) == 4
    assert all(re.search(r"format=\d\.\d\d length=-?\d\.\d\d match=\d\.\d\d", line) for line in befores)
    assert any("(the same text)" not in line for line in afters)


def test_chat_model_samples_per_prompt_reproducibly_from_its_seed(tiny_model_dir):
    chat = ChatModel(tiny_model_dir)
    prompts = ["What is 2 + 3?", "Write about snow."]
    texts, greedy = chat.generate(prompts, 6)
    assert len(greedy) == 2 and all(t.endswith("assistant\n") for t in texts)
    _, drawn = chat.generate(prompts, 6, samples=3, temperature=1.0, seed=5)
    _, again = chat.generate(prompts, 6, samples=3, temperature=1.0, seed=5)
    _, other = chat.generate(prompts, 6, samples=3, temperature=1.0, seed=6)
    assert len(drawn) == 6 and drawn == again and drawn != other
    assert chat.generate(prompts, 6)[1] == greedy  # sampling left greedy decoding as it was
    with pytest.raises(ValueError, match="samples=3 needs a temperature"):
        chat.generate(prompts, 6, samples=3)


def test_main_prints_the_comparison_and_the_wall_time_last(run_with_objectives, tiny_model_dir, heldout, capsys):
    shutil.copytree(tiny_model_dir, run_with_objectives / "model")
    args = [str(run_with_objectives), "--compare-models", str(tiny_model_dir), "--prompts", str(heldout)]
    args += ["--per-category", "1", "--max-new-tokens", "4", "--timing", "setup=300", "--timing", "run=50"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        out.index("objectives per step")
        < out.index("responses before and after training")
        < out.index("stage timings: setup 300.0s, run 50.0s (start-up and shutdown 30.0s), report ")
    )
    wall = float(re.search(r"wall time after setup: ([\d.]+)s", out).group(1))
    assert 50 < wall < 50 + 300  # the run plus the report's own time, not the setup
    with pytest.raises(SystemExit):
        main([str(run_with_objectives), "--compare-models", str(tiny_model_dir)])  # --prompts is required with it
