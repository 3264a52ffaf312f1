"""The real-model benchmark's pieces that need no training run: prompt families, held-out metrics, the join of
the weights log with the families, the settings check and the report (on hand-made run records; the real runs
take ~6 minutes each and are the benchmark itself, not a test)."""

from __future__ import annotations

import json

import bench_real_model as bench
import pytest
import real_model_report
import real_model_task as task
import torch

from openrlhf_maestro.integration.hook import append_weights_log


def test_prompt_families_are_balanced_fixed_and_disjoint_from_the_heldout_ones() -> None:
    train = task.train_prompts(32)
    assert [r["category"] for r in train[:4]] == ["reasoning", "creative", "reasoning", "creative"]
    assert sum(r["category"] == "creative" for r in train) == 16
    assert task.train_prompts(32) == train  # fixed seeds: the same file on every machine
    heldout = task.heldout_prompts()
    assert {r["category"] for r in heldout} == {"reasoning", "creative"}
    assert not {r["input"] for r in train} & {r["input"] for r in heldout}
    for row in train + heldout:
        if row["category"] == "reasoning":
            assert row["input"].endswith(task.REASONING_END) and int(row["label"]) > 0
        else:
            assert row["input"].endswith('".') and row["label"]
    with pytest.raises(ValueError, match="need 20 creative ones; there are 16"):
        task.train_prompts(40)


@pytest.mark.parametrize(
    ("response", "label", "match"),
    [
        ("3 + 4 = 7 apples. Answer: 7", "7", 1.0),
        ("Answer: 1,200", "1200", 1.0),
        ("Answer: 12.0", "12", 1.0),
        ("There are 7 apples, not 8.", "7", 0.0),  # the last number counts
        ("Seven.", "7", 0.0),
    ],
)
def test_reference_match_reads_the_last_number(response: str, label: str, match: float) -> None:
    assert task.reference_match(response, label) == match


def test_distinct_in_band_scores_varied_answers_of_a_sensible_length() -> None:
    varied = ["the red sun sets slowly", "a quiet wind over hills"]
    assert task.distinct_in_band(varied) == 1.0
    assert task.distinct_in_band(["a b a b a b", "a b a b a b"]) == pytest.approx(2 / 10)
    assert task.distinct_in_band([*varied, "ok", "word " * 50]) == pytest.approx(0.5)  # half out of the band
    assert task.distinct_in_band(["ok"]) == 0.0
    with pytest.raises(ValueError):
        task.distinct_in_band([])


def test_weights_per_family_joins_the_real_weights_log_by_prompt(tmp_path) -> None:
    log = tmp_path / "weights.jsonl"
    objectives = list(bench.OBJECTIVES)
    rows = task.train_prompts(4)
    templated = [f"<|user|>{r['input']}<|assistant|>" for r in rows]
    expected = torch.tensor([[0.1, 0.1, 0.2, 0.6], [0.1, 0.1, 0.6, 0.2], [0.3, 0.1, 0.2, 0.4], [0.1, 0.1, 0.4, 0.4]])
    append_weights_log(str(log), 1, objectives, templated, torch.full((4, 4), 0.25), expected)
    append_weights_log(str(log), 2, objectives, templated[:2], torch.full((2, 4), 0.25), expected[:2])
    inputs = {r["input"]: r["category"] for r in rows}
    got = real_model_report.family_weights(log, inputs)
    assert got["reasoning"]["1"]["mean"]["perplexity"] == pytest.approx(0.5)  # rows 0 and 2
    assert got["reasoning"]["1"]["sd"]["perplexity"] == pytest.approx(0.1)
    assert got["creative"]["1"]["mean"]["entropy"] == pytest.approx(0.5)  # rows 1 and 3
    assert got["creative"]["2"]["mean"] == pytest.approx(dict(zip(objectives, [0.1, 0.1, 0.6, 0.2], strict=True)))
    assert got["creative"]["2"]["sd"] == dict.fromkeys(objectives, 0.0) and got["creative"]["2"]["n"] == 1
    with pytest.raises(ValueError, match="matches no training input"):
        real_model_report.family_weights(log, {"another prompt": "creative"})


def _run(method: str, seed: int | None, match: float, distinct: float, weights: dict | None = None) -> dict:
    answers = {"reasoning": ["Answer: 7", "Answer: 9"], "creative": [["a b c", "d e f"], ["g h i", "j k l"]]}
    record = {
        "method": method,
        "seed": seed,
        "settings": {"steps": 2, "eval_samples": 2, "max_new_tokens": 8},
        "reasoning/reference_match": match,
        "creative/distinct2_in_band": distinct,
        "reasoning/words": 2.0,
        "creative/words": 3.0,
        "answers": answers,
        "eval_s": 1.0,
    }
    if method != "base":
        record |= {
            "objectives_per_step": {o: [0.1, 0.2] for o in bench.OBJECTIVES},
            "kl_per_step": [0.0, 0.01],
            "train_s": 100.0,
            "weights_per_family": weights,
        }
    return record


def test_report_tables_figures_and_the_papers_pattern(tmp_path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()

    def at(entropy: float, perplexity: float, sd: float = 0.1) -> dict:
        mean = {"format": 0.2, "length": 0.2, "entropy": entropy, "perplexity": perplexity}
        return {"mean": mean, "sd": dict.fromkeys(mean, sd), "n": 8}

    paper = {  # creative leans to entropy, reasoning to perplexity; step 3 has reasoning prompts only
        "reasoning": {"1": at(0.3, 0.3), "2": at(0.2, 0.4), "3": at(0.1, 0.5)},
        "creative": {"1": at(0.3, 0.3), "2": at(0.4, 0.2)},
    }
    reversed_ = {"reasoning": paper["creative"], "creative": paper["reasoning"]}
    records = [
        _run("base", None, 0.5, 0.7),
        _run("maestro", 0, 0.6, 0.8, paper),
        _run("maestro", 1, 0.4, 0.6, reversed_),
        _run("sum", 0, 0.5, 0.5),
    ]
    for r in records:
        (runs / f"{r['method']}-seed{r['seed']}.json").write_text(json.dumps(r))
    text = real_model_report.report(tmp_path, list(bench.METHODS))
    assert "| maestro | 2 | 0.500 ± 0.141 | 0.700 ± 0.141 | 0.600 ± 0.141 |" in text
    assert "| initial model (step 0) | – | 0.500 | 0.700 | 0.600 |" in text
    row = "| maestro | 0 | 2 | 0.200 | 0.400 | +0.200 | +2.00 | 0.400 | 0.200 | +0.200 | +2.00 |"
    assert row + " entropy and perplexity | 0.200, 0.200 |" in text
    reversed_row = "| maestro | 1 | 2 | 0.400 | 0.200 | -0.200 | -2.00 | 0.200 | 0.400 | -0.200 | -2.00 |"
    assert reversed_row + " neither | 0.200, 0.200 |" in text
    assert "gdpo" not in text.split("## (a)")[0]  # no row for a method without runs
    for name in real_model_report.FIGURES:
        assert (tmp_path / name).stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["heldout"]["maestro"]["reasoning/reference_match"] == [0.6, 0.4]


def test_a_separation_needs_a_visible_gap_beyond_the_spread_within_a_family() -> None:
    def run(gap: float, sd: float) -> dict:
        def at(entropy: float) -> dict:
            return {"mean": {"entropy": entropy, "perplexity": 0.2}, "sd": {"entropy": sd, "perplexity": sd}, "n": 8}

        return {"method": "maestro", "seed": 0, "weights_per_family": {"reasoning": {"1": at(0.3)},
                                                                      "creative": {"1": at(0.3 + gap)}}}  # fmt: skip

    def verdict(r: dict) -> str:
        return real_model_report.pattern_table([r]).splitlines()[-1].rsplit("|", 3)[1].strip()

    assert verdict(run(0.10, 0.05)) == "entropy"  # gap 0.10, d 2
    assert verdict(run(0.01, 0.001)) == "neither"  # d 10, but a gap nobody would see
    assert verdict(run(0.10, 0.20)) == "neither"  # gap inside the spread (d 0.5)
    assert verdict(run(-0.10, 0.05)) == "neither"  # the other direction


def test_a_finished_run_with_other_settings_is_refused(tmp_path) -> None:
    path = tmp_path / "maestro-seed0.json"
    path.write_text(json.dumps(_run("maestro", 0, 0.5, 0.5)))
    bench.check_settings(path, bench.parse_args(["--steps", "2", "--eval-samples", "2", "--max-new-tokens", "8"]))
    with pytest.raises(SystemExit, match="made with other settings"):
        bench.check_settings(path, bench.parse_args(["--steps", "8"]))
