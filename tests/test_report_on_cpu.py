"""The run report: per-step table from TensorBoard events, weights per prompt category, the weights plot."""

from __future__ import annotations

import json

import pytest
from torch.utils.tensorboard import SummaryWriter

from openrlhf_maestro.report import category_table, latest_run_scalars, plot_weights, summary, weights_by_category


@pytest.fixture()
def run_dir(tmp_path):
    writer = SummaryWriter(tmp_path / "tensorboard" / "run")
    for step in (1, 2, 3):
        writer.add_scalar("train/timing/step_total", 2.0 * step, step)
        writer.add_scalar("train/reward", 0.1 * step, step)
        writer.add_scalar("train/maestro/weight/format", 0.5 - 0.1 * step, step)
        writer.add_scalar("train/maestro/weight/length", 0.5 + 0.1 * step, step)
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
    with pytest.raises(ValueError, match="--reward.aggregator maestro"):
        plot_weights({"train/reward": {1: 0.0}}, tmp_path / "x.png")
