"""`make_reward_func`: the exact returned dict, batching, and every error path naming the objective."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from openrlhf_maestro.rewards import ObjectiveError, format_reward, make_reward_func

PROMPT = "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
RESPONSE = "<think>t</think><answer>yes</answer>"
QUERY = PROMPT + RESPONSE + "<|im_end|>"


def call(fn, *, query: str = QUERY, prompt: str = PROMPT, label: str = "yes") -> dict:
    return fn([query], [prompt], [label])


def test_single_response_returns_exactly_the_documented_dict() -> None:
    seen = []

    def mine(response: str, label: str) -> float:
        seen.append((response, label))
        return 0.25

    fn = make_reward_func({"format": lambda r, label: format_reward(r), "zero": lambda r, label: 0, "mine": mine})
    out = call(fn)
    assert out == {
        "rewards": pytest.approx((1.0 + 0.0 + 0.25) / 3),
        "scores": pytest.approx((1.0 + 0.0 + 0.25) / 3),
        "extra_logs": {"obj/format": 1.0, "obj/zero": 0.0, "obj/mine": 0.25},
    }
    assert list(out) == ["rewards", "scores", "extra_logs"] and list(out["extra_logs"]) == [
        "obj/format",
        "obj/zero",
        "obj/mine",
    ]
    assert all(type(v) is float for v in [out["rewards"], out["scores"], *out["extra_logs"].values()])
    assert seen == [(RESPONSE, "yes")]  # the objective sees the response without prompt or end marker
    assert fn.objective_names == ("format", "zero", "mine")


def test_constant_objectives_mean() -> None:
    out = call(make_reward_func({"a": lambda r, label: 1.0, "b": lambda r, label: 0.0}))
    assert out["rewards"] == out["scores"] == 0.5


def test_numpy_and_0d_tensor_values_become_python_floats() -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    fn = make_reward_func(
        {
            "np": lambda r, label: np.float32(0.5),
            "t": lambda r, label: torch.tensor(2.0),
            "q": lambda r, label: Fraction(1, 4),
        }
    )
    logs = call(fn)["extra_logs"]
    assert logs == {"obj/np": 0.5, "obj/t": 2.0, "obj/q": 0.25}
    assert all(type(v) is float for v in logs.values())


def test_batches_return_lists() -> None:
    fn = make_reward_func({"len": lambda r, label: float(len(r)), "lab": lambda r, label: float(label)})
    out = fn([PROMPT + "ab", PROMPT + "abcd<|im_end|>"], [PROMPT, PROMPT], ["1", "3"], extra="ignored")
    assert out == {
        "rewards": [1.5, 3.5],
        "scores": [1.5, 3.5],
        "extra_logs": {"obj/len": [2.0, 4.0], "obj/lab": [1.0, 3.0]},
    }


@pytest.mark.parametrize(
    "queries, prompts, labels", [([], [], []), ([QUERY], [PROMPT, PROMPT], ["a"]), ([QUERY], [PROMPT], [])]
)
def test_batch_length_mismatch(queries: list, prompts: list, labels: list) -> None:
    fn = make_reward_func({"a": lambda r, label: 1.0})
    with pytest.raises(ValueError, match="equal, non-zero numbers of queries, prompts and labels"):
        fn(queries, prompts, labels)


def test_raising_objective_is_reraised_with_its_name_and_the_response() -> None:
    def broken(response: str, label: str) -> float:
        raise KeyError("missing")

    fn = make_reward_func({"ok": lambda r, label: 1.0, "broken": broken})
    with pytest.raises(
        ObjectiveError, match=r"objective 'broken' raised KeyError: 'missing' \(response starts '<think>t"
    ) as info:
        call(fn)
    assert isinstance(info.value.__cause__, KeyError)


def test_long_response_is_cut_in_the_message() -> None:
    fn = make_reward_func({"boom": lambda r, label: 1 / 0})
    with pytest.raises(ObjectiveError, match=r"ZeroDivisionError.*'x{80}…'\)$"):
        call(fn, query=PROMPT + "x" * 500)


@pytest.mark.parametrize(
    "value, match",
    [
        (None, r"objective 'bad' returned None \(NoneType\); expected a real number"),
        (math.nan, r"objective 'bad' returned a non-finite value nan"),
        (math.inf, r"objective 'bad' returned a non-finite value inf"),
        (-math.inf, r"objective 'bad' returned a non-finite value -inf"),
        ("0.5", r"objective 'bad' returned '0.5' \(str\); expected a real number"),
        (True, r"objective 'bad' returned a bool \(True\); return float\(...\)"),
        ([1.0], r"objective 'bad' returned \[1.0\] \(list\)"),
        (1 + 2j, r"objective 'bad' returned \(1\+2j\) \(complex\)"),
    ],
)
def test_bad_return_values(value: object, match: str) -> None:
    fn = make_reward_func({"bad": lambda r, label: value})
    with pytest.raises(ValueError, match=match):
        call(fn)


def test_bad_tensor_return_values() -> None:
    torch = pytest.importorskip("torch")
    for value, match in [
        (torch.tensor([1.0, 2.0]), r"objective 'bad' returned tensor\(\[1\., 2\.\]\) \(Tensor\); expected a real"),
        (torch.tensor(float("nan")), r"non-finite value tensor\(nan\)"),
        (torch.tensor(True), r"returned a bool"),
    ]:
        with pytest.raises(ValueError, match=match):
            call(make_reward_func({"bad": lambda r, label, v=value: v}))


@pytest.mark.parametrize(
    "objectives, match",
    [
        ({}, "objectives must be a non-empty mapping"),
        ([("a", lambda r, label: 1.0)], "objectives must be a non-empty mapping"),
        ({"": lambda r, label: 1.0}, r"objective names must be non-empty Python identifiers .* got ''"),
        ({"a/b": lambda r, label: 1.0}, r"got 'a/b'"),
        ({"my-obj": lambda r, label: 1.0}, r"got 'my-obj'"),
        ({3: lambda r, label: 1.0}, r"got 3"),
        ({"a": 1.0}, r"objective 'a' must be callable"),
    ],
)
def test_build_time_validation(objectives: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_reward_func(objectives)


def test_custom_split_and_snapshot() -> None:
    objectives = {"n": lambda r, label: float(len(r))}
    fn = make_reward_func(objectives, split=lambda query, prompt: query.upper())
    objectives["later"] = lambda r, label: 0.0  # editing the dict afterwards changes nothing
    assert call(fn, query="abc", prompt="zzz") == {"rewards": 3.0, "scores": 3.0, "extra_logs": {"obj/n": 3.0}}
    with pytest.raises(ValueError, match="split must be callable"):
        make_reward_func(objectives, split="none")


def test_rewards_and_data_import_neither_torch_nor_openrlhf() -> None:
    code = (
        "import sys, openrlhf_maestro.rewards, openrlhf_maestro.data.nover; "
        "bad = [m for m in ('torch', 'openrlhf', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
