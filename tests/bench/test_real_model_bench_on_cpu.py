"""The real-model benchmark's pieces that need no training run: prompt families, held-out metrics, the join of
the weights log with the families, the settings check and the report (on hand-made run records; the real runs
take ~6 minutes each and are the benchmark itself, not a test)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import bench_real_model as bench
import pytest
import real_model_report
import real_model_task as task
import torch
from _support import REPO, clean_env

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
    assert task.train_prompts(task.MAX_TRAIN_PROMPTS)[:32] == train  # more steps keep the first 32 prompts
    with pytest.raises(ValueError, match="need 21 creative ones; there are 20"):
        task.train_prompts(task.MAX_TRAIN_PROMPTS + 2)


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


# -- issue 22: the target rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "label", "category", "value"),
    [
        ("3 + 4 = 7 apples. Answer: 7", "7", "reasoning", 1.0),
        ("There are 7 apples, not 8.", "7", "reasoning", 0.0),  # the held-out rule: the last number
        ("the red sun sets slowly", "x", "creative", 1.0),  # 5 words, 4 bigrams, all distinct
        ("a b a b a b", "x", "creative", 0.4),  # bigrams ab ba ab ba ab: 2 distinct of 5
        ("ok", "x", "creative", 0.0),  # 1 word: below the band of 3 to 40
        ("word " * 41, "x", "creative", 0.0),  # 41 words: above it
    ],
)
def test_the_target_is_the_heldout_measure_on_one_response(response, label, category, value) -> None:
    assert task.target_value(response, label, category) == pytest.approx(value)


def test_a_target_for_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="got 'poetry'"):
        task.target_value("Answer: 7", "7", "poetry")


def test_the_labelled_quarter_is_fixed_a_quarter_of_each_family_and_the_same_in_shorter_runs() -> None:
    train = task.train_prompts(task.MAX_TRAIN_PROMPTS)
    labelled = task.labelled_train_prompts()
    assert len(train) == 40 and len(labelled) == 10
    for family in ("reasoning", "creative"):  # the 1st, 5th, 9th and 13th prompt of each family
        assert [r for r in labelled if r["category"] == family] == [r for r in train if r["category"] == family][::4]
    assert labelled == task.labelled_train_prompts(40)  # no draw: the same prompts on every call and machine
    assert task.labelled_train_prompts(8) == labelled[:2]  # a run of 2 steps labels the first of the same set
    assert [task.target_labelled(i) for i in range(10)] == [True, True] + [False] * 6 + [True, True]
    # the reward file finds a labelled prompt by its input inside the templated prompt: no input may be inside
    # another, and inputs are unique
    inputs = [r["input"] for r in train]
    assert len(set(inputs)) == 40
    assert not [(a, b) for a in inputs for b in inputs if a != b and a in b]


def _target_reward():
    spec = importlib.util.spec_from_file_location("target_reward", bench.TARGET_REWARD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chat(text: str) -> str:
    """A ChatML prompt like SmolLM2's template (the reward file sees the templated prompt)."""
    system = "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    return f"{system}<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def test_the_reward_file_reports_the_target_on_labelled_prompts_and_nan_elsewhere() -> None:
    reward = _target_reward()
    train = task.train_prompts(32)
    reasoning, creative, unlabelled = train[0], train[1], train[2]  # positions 0, 1 labelled; 2 not
    prompts = [_chat(r["input"]) for r in (reasoning, reasoning, creative, unlabelled)]
    responses = [f"So it is {reasoning['label']}. Answer: {reasoning['label']}", "Answer: 0", "a b a b a b", "x y z"]
    labels = [reasoning["label"], reasoning["label"], creative["label"], unlabelled["label"]]
    queries = [p + r + "<|im_end|>" for p, r in zip(prompts, responses, strict=True)]
    out = reward.reward_func(queries, prompts, labels)
    values = out["extra_logs"]["obj/task"]
    assert values[:3] == [1.0, 0.0, pytest.approx(0.4)] and math.isnan(values[3])
    assert out["extra_logs"]["obj/format"][0] == 1.0  # the demo reward's objectives are kept
    one = reward.reward_func(queries[:1], prompts[:1], labels[:1])  # one response: floats, as OpenRLHF sends
    assert one["extra_logs"]["obj/task"] == 1.0 and isinstance(one["extra_logs"]["obj/format"], float)


def _command(method: str, seed: int = 1) -> tuple[dict, list[str]]:
    args = bench.parse_args(["--comparison", "target", "--steps", "2"])
    return bench.run_command(args, method, seed, Path("train.jsonl"), Path("out"))


def _has(flags: list[str], *pair: str) -> bool:
    return any(flags[i : i + len(pair)] == list(pair) for i in range(len(flags)))


def test_the_target_comparison_runs_its_four_rows_in_a_workdir_of_its_own() -> None:
    args = bench.parse_args(["--comparison", "target"])
    assert args.methods == ["maestro-target", "sum-target", "maestro", "sum"]
    assert args.workdir != bench.parse_args([]).workdir
    assert bench.parse_args([]).methods == ["maestro", "gdpo", "sum", "random", "maestro-raw"]


def test_each_target_row_builds_its_flags_and_reward_file(monkeypatch) -> None:
    for name in ("REWARD_FN", "OBJECTIVES"):
        monkeypatch.delenv(name, raising=False)
    env, flags = _command("maestro-target")
    assert env["AGGREGATOR"] == "maestro" and env["REWARD_FN"].endswith("bench/real_model_target_reward.py")
    assert "OBJECTIVES" not in env  # the script's four: the target is kept out of R
    assert _has(flags, "--maestro.meta_reward", "alignment") and _has(flags, "--maestro.target", "task")
    assert _has(flags, "--reward.context", "prompt") and _has(flags, "--maestro.seed", "1")
    assert "--reward.failure_policy" not in flags

    env, flags = _command("sum-target")
    assert env["AGGREGATOR"] == "sum" and env["REWARD_FN"] == str(bench.TARGET_REWARD)
    assert env["OBJECTIVES"] == "format,length,entropy,perplexity,task"
    assert _has(flags, "--reward.failure_policy", "skip_objective")
    assert not [f for f in flags if f.startswith("--maestro.")]

    for method in ("maestro", "sum"):  # the paper's rows: the demo reward, no target, no failure policy
        env, flags = _command(method)
        assert "REWARD_FN" not in env and "OBJECTIVES" not in env and env["AGGREGATOR"] == method
        assert not [f for f in flags if f in ("--maestro.meta_reward", "--reward.failure_policy")]
    assert _command("maestro", seed=2)[1][:2] == ["--train.seed", "2"]


@pytest.mark.parametrize("method", ["maestro-target", "sum-target"])
def test_each_target_rows_command_passes_the_launchers_checks(method, monkeypatch) -> None:
    """The bench's exact script, environment and flags through OpenRLHF's parser and the plugin's checks
    (``--runtime.check_flags``: no Ray, no model): sum accepts skip_objective, maestro the alignment rule."""
    for name in ("REWARD_FN", "OBJECTIVES"):
        monkeypatch.delenv(name, raising=False)
    env, flags = _command(method)
    env = clean_env(**env)  # the bench's environment (it runs sys.executable), less an inherited CPU runtime
    proc = subprocess.run(
        ["bash", str(bench.SCRIPT), *flags, "--runtime.check_flags"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    aggregator, objectives = ("maestro", "format,length,entropy,perplexity")
    if method == "sum-target":
        aggregator, objectives = ("sum", "format,length,entropy,perplexity,task")
    assert f"--reward.aggregator {aggregator}" in proc.stdout
    assert f"--reward.objectives {objectives}" in proc.stdout


def test_the_report_has_the_target_rows_and_every_weight_per_family(tmp_path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()

    def at(perplexity: float) -> dict:
        mean = {"format": 0.1, "length": 0.1, "entropy": 0.8 - perplexity, "perplexity": perplexity}
        return {"mean": mean, "sd": dict.fromkeys(mean, 0.0), "n": 8}

    weights = {"reasoning": {"1": at(0.6), "2": at(0.7)}, "creative": {"1": at(0.2), "2": at(0.3)}}
    for record in (_run("maestro-target", 0, 0.7, 0.5, weights), _run("sum-target", 0, 0.3, 0.9)):
        (runs / f"{record['method']}-seed0.json").write_text(json.dumps(record))
    text = real_model_report.report(tmp_path, bench.COMPARISONS["target"][0])
    assert "| maestro, target meta-reward (alignment) | 1 | 0.700 | 0.500 | 0.600 |" in text
    assert "| sum + the target as an objective | 1 | 0.300 | 0.900 | 0.600 |" in text
    # step 2: reasoning (0.1, 0.1, 0.1, 0.7), creative (0.1, 0.1, 0.5, 0.3); largest gap 0.4 (both)
    row = "| maestro, target meta-reward (alignment) | 0 | 2 |"
    assert f"{row} reasoning | 0.100 | 0.100 | 0.100 | 0.700 | 0.400 |" in text
    assert f"{row} creative | 0.100 | 0.100 | 0.500 | 0.300 |  |" in text


def test_the_report_pairs_the_first_row_with_each_other_by_seed_and_gives_the_target_signal(tmp_path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    scores = {  # (match, distinct) per seed
        "maestro-target": [(0.5, 0.5), (0.6, 0.4), (0.7, 0.9)],
        "sum-target": [(0.4, 0.5), (0.6, 0.6), (0.5, 0.7)],
        "sum": [(0.5, 0.5)],  # seed 0 only: one difference, no interval
    }
    for method, per_seed in scores.items():
        for seed, (match, distinct) in enumerate(per_seed):
            record = _run(method, seed, match, distinct)
            if method == "maestro-target":
                record["objectives_per_step"] |= {
                    "maestro/target_fraction": [0.0, 0.5],
                    "maestro/target_gain": [0.0, 0.02 * (seed + 1)],
                }
            (runs / f"{method}-seed{seed}.json").write_text(json.dumps(record))
    text = real_model_report.report(tmp_path, bench.COMPARISONS["target"][0])
    # match +0.1, 0, +0.2: mean +0.1, sd 0.1, half-width 4.303 * 0.1 / sqrt(3) = 0.248
    assert "| sum + the target as an objective | 0 1 2 | +0.100 [-0.148, +0.348] (+0.100, +0.000, +0.200) |" in text
    # distinct 0, -0.2, +0.2 (half-width 0.497); mean of both +0.05, -0.1, +0.2 (half-width 0.373)
    assert (
        "| +0.000 [-0.497, +0.497] (+0.000, -0.200, +0.200) | +0.050 [-0.323, +0.423] (+0.050, -0.100, +0.200) |"
        in text
    )
    assert "| sum, equal weights | 0 | +0.000 | +0.000 | +0.000 |" in text
    for seed in range(3):  # step 2 alone has a labelled group; its gain is the mean
        row = f"| maestro, target meta-reward (alignment) | {seed} | 1 of 2 | 0.250 | +{0.02 * (seed + 1):.4f} |"
        assert row in text
