"""examples/rewards/nover_text_reward.py loads the way OpenRLHF loads it and scores NOVER-style responses."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

from openrlhf_maestro.rewards import ObjectiveError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "rewards" / "nover_text_reward.py"
SAMPLE = REPO.parent / "shared" / "data" / "nover-sample"
ENV = ("MAESTRO_THINK_TAG", "MAESTRO_ANSWER_TAG", "MAESTRO_LENGTH_TARGET", "MAESTRO_LENGTH_TOLERANCE")


def chat(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """As openrlhf/utils/agent.py 202–205 does: spec_from_file_location("reward_func", path)."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    spec = importlib.util.spec_from_file_location("reward_func", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores_a_nover_style_response(monkeypatch: pytest.MonkeyPatch) -> None:
    reward_func = load(monkeypatch).reward_func
    prompt = chat("\nQuestion: What is the speed of light in glass?\n\nAnswer the question and return in the format")
    response = "<think>\nn = 1.5, so v = c / n.\n</think>\n\n<answer>\nabout 2 x 10^8 m/s\n</answer>"
    out = reward_func([prompt + response + "<|im_end|>"], [prompt], ["The speed is about 2 x 10^8 m/s."])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert set(out["extra_logs"]) == {"obj/format", "obj/length", "obj/overlap"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in [out["rewards"], *out["extra_logs"].values()])
    logs = out["extra_logs"]
    assert logs["obj/format"] == 1.0 and logs["obj/length"] == 1.0
    assert logs["obj/overlap"] == pytest.approx(2 * 7 / (7 + 10))  # about 2 x 10 8 m s  vs  the speed is + those 7
    assert out["rewards"] == pytest.approx(sum(logs.values()) / 3)

    bare = reward_func([prompt + "just text<|im_end|>"], [prompt], ["text"])["extra_logs"]
    assert bare == {"obj/format": 0.0, "obj/length": 1.0, "obj/overlap": 0.0}  # no answer block, no overlap


def test_empty_label_names_the_missing_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    reward_func = load(monkeypatch).reward_func
    prompt = chat("Q?")
    with pytest.raises(
        ObjectiveError, match=r"objective 'overlap' raised ValueError: empty label: .*--data.label_key"
    ):
        reward_func([prompt + "<think>t</think><answer>a</answer>"], [prompt], [""])


@pytest.mark.skipif(not any(SAMPLE.glob("*.csv")), reason=f"NOVER sample data not found at {SAMPLE}")
def test_answering_the_reference_scores_one_on_every_sample_row(monkeypatch: pytest.MonkeyPatch) -> None:
    reward_func = load(monkeypatch, MAESTRO_LENGTH_TARGET="100000").reward_func
    rows = 0
    for path in sorted(SAMPLE.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                prompt = chat(rec["prompt"])
                response = f"<think>\nreasoning\n</think>\n<answer>\n{rec['reference']}\n</answer>"
                out = reward_func([prompt + response + "<|im_end|>"], [prompt], [rec["reference"]])
                assert out["extra_logs"] == {"obj/format": 1.0, "obj/length": 1.0, "obj/overlap": 1.0}, path
                rows += 1
    assert rows == 6 * 48


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(
        monkeypatch,
        MAESTRO_THINK_TAG="reasoning",
        MAESTRO_ANSWER_TAG="final",
        MAESTRO_LENGTH_TARGET="4",
        MAESTRO_LENGTH_TOLERANCE="2",
    )
    prompt = chat("Q?")
    response = "<reasoning> a b c </reasoning> <final> yes </final>"  # 7 words: 1 over 4 + 2 -> 0
    logs = module.reward_func([prompt + response], [prompt], ["yes"])["extra_logs"]
    assert logs == {"obj/format": 1.0, "obj/length": 0.0, "obj/overlap": 1.0}
    assert module.THINK == ("<reasoning>", "</reasoning>") and module.LENGTH_TOLERANCE == 2.0


@pytest.mark.parametrize(
    "env, match",
    [
        ({"MAESTRO_LENGTH_TARGET": "0"}, r"MAESTRO_LENGTH_TARGET must be a number > 0, got '0'"),
        ({"MAESTRO_LENGTH_TARGET": "many"}, r"MAESTRO_LENGTH_TARGET must be a number > 0, got 'many'"),
        ({"MAESTRO_LENGTH_TOLERANCE": "inf"}, r"MAESTRO_LENGTH_TOLERANCE must be a number > 0, got 'inf'"),
        ({"MAESTRO_ANSWER_TAG": "<answer>"}, r"MAESTRO_ANSWER_TAG must be a bare tag name such as 'answer'"),
        ({"MAESTRO_THINK_TAG": " "}, r"MAESTRO_THINK_TAG must be a bare tag name"),
    ],
)
def test_bad_environment_fails_at_load(monkeypatch: pytest.MonkeyPatch, env: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load(monkeypatch, **env)
