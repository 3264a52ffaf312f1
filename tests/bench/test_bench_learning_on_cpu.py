"""bench/bench_learning.py end to end at toy size: runs, resume, report, plots, grid selection, the val-selected
prior, flag errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bench_learning
import learning_report
import pytest
from _support import REPO

SMALL = [
    "--steps",
    "2",
    "--eval-every",
    "1",
    "--eval-samples",
    "1",
    "--prompts-per-step",
    "4",
    "--samples",
    "2",
    "--max-new-tokens",
    "6",
    "--pretrain-steps",
    "3",
    "--pretrain-lines",
    "200",
]


def run_bench(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/bench_learning.py", "--workdir", str(workdir), *SMALL, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


METHODS = ["maestro", "random", "sum:1,1,1", "maestro-prior"]  # maestro-prior: the grid at seed 0, then 2 runs
GRID_RUNS = {(learning_report.canonical(w), 0) for w in learning_report.GRID}


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("bench-learning")
    proc = run_bench(workdir, "--seeds", "0", "1", "--methods", *METHODS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc


def test_every_run_is_written_with_its_history(small_bench) -> None:
    workdir, _ = small_bench
    runs = learning_report.load_runs(workdir)
    best = learning_report.best_grid(runs, 0)
    prior_runs = {(learning_report.maestro_prior(best), s) for s in (0, 1)}
    assert set(runs) == {(m, s) for m in ("maestro", "random", "sum:1,1,1") for s in (0, 1)} | GRID_RUNS | prior_runs
    rec = runs[("maestro", 0)]
    assert [h["step"] for h in rec["history"]] == [0, 1, 2]
    assert {"echo/metric", "story/metric", "echo/words", "story/words", "score"} <= set(rec["history"][-1])
    assert [e["step"] for e in rec["train"]] == [1, 2] and rec["train"][-1]["maestro/updates"] == 2.0
    for family in ("echo", "story"):  # the Conductor's weights per family are logged, and sum to one
        total = sum(rec["train"][-1][f"{family}/weight/{k}"] for k in ("match", "variety", "length"))
        assert total == pytest.approx(1.0, abs=1e-5)
    # Every method starts from the same pre-trained policy and is scored on the same draws at step 0.
    assert runs[("sum:1,1,1", 1)]["history"][0] == rec["history"][0]


def test_report_table_and_plots(small_bench) -> None:
    workdir, proc = small_bench
    table = (workdir / "summary.md").read_text()
    summary = json.loads((workdir / "summary.json").read_text())
    for label in (
        "pre-trained policy (step 0)",
        "| maestro | 2 |",
        "| random emphasis | 2 |",
        "| sum, equal weights | 2 |",
        f"| maestro, val-selected prior ({summary['best_grid'][4:]}) | 2 |",
    ):
        assert label in table, table
    assert "| gdpo |" not in table  # not run, not reported
    assert "| sum, best grid weights" not in table  # the grid ran for maestro-prior; `best` was not asked for
    assert table.strip() in proc.stdout
    assert summary["methods"]["maestro"]["seeds"] == [0, 1] and len(summary["methods"]["maestro"]["score"]) == 2
    for png in ("learning_curves.png", "conductor_weights.png"):
        assert (workdir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_skips_finished_runs_and_a_deleted_run_is_reproduced_exactly(small_bench) -> None:
    workdir, _ = small_bench
    target = workdir / "runs" / "maestro-seed1.json"
    before = json.loads(target.read_text())
    target.unlink()
    proc = run_bench(workdir, "--seeds", "0", "1", "--methods", *METHODS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 6 runs + the 10-point grid at seed 0 (sum:1,1,1 seed 0 is one of them), then maestro-prior's 2.
    assert "14 of 15 runs already finished; running 1" in proc.stdout
    assert "2 of 2 runs already finished; running 0" in proc.stdout
    assert "pre-trained policy: reusing" in proc.stdout
    after = json.loads(target.read_text())
    assert after["history"] == before["history"] and after["train"] == before["train"]


def test_a_rerun_with_other_settings_refuses_to_mix_runs(small_bench) -> None:
    workdir, _ = small_bench
    before = sorted(p.stat().st_mtime for p in (workdir / "runs").iterdir())
    proc = run_bench(workdir, "--seeds", "0", "--methods", "maestro", "--lr", "1e-3")
    assert proc.returncode != 0
    assert "maestro-seed0.json ran with other settings (saved, now): {'lr': (0.0005, 0.001)}" in proc.stderr
    assert sorted(p.stat().st_mtime for p in (workdir / "runs").iterdir()) == before  # nothing overwritten
    proc = run_bench(workdir, "--seeds", "0", "--methods", "maestro", "--pretrain-steps", "4")
    assert proc.returncode != 0 and "pre-trained with --pretrain-steps 3 --pretrain-lines 200, not 4" in proc.stderr


def test_maestro_prior_runs_on_every_seed_with_the_val_selected_grid_weights(small_bench) -> None:
    workdir, proc = small_bench
    runs = learning_report.load_runs(workdir)
    best = learning_report.best_grid(runs, 0)
    assert f"best grid weights on the val topics (seed 0): {best}" in proc.stdout
    weights = [float(w) for w in best.removeprefix("sum:").split(",")]
    for seed in (0, 1):
        rec = runs[(f"maestro-prior:{best[4:]}", seed)]
        assert Path(rec["spec"]["out"]).name == f"maestro-prior-{best[4:].replace(',', '')}-seed{seed}.json"
        # What the Conductor ran with: the grid's winner as w_prior, everything else as plain maestro.
        assert rec["maestro_config"]["prior"] == weights
        plain = runs[("maestro", seed)]["maestro_config"]
        assert plain["prior"] is None and {**rec["maestro_config"], "prior": None} == plain
        # w(a) = (1 − β)·w_prior + β·e_a: every logged mean weight is at least (1 − β) times the normalized prior.
        floor = [(1 - plain["beta"]) * w / sum(weights) for w in weights]
        for entry in rec["train"]:
            for family in ("echo", "story"):
                logged = [entry[f"{family}/weight/{k}"] for k in ("match", "variety", "length")]
                assert all(w >= f - 1e-6 for w, f in zip(logged, floor, strict=True)), (logged, floor)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["best_grid"] == best and summary["methods"]["maestro-prior"]["seeds"] == [0, 1]


def test_best_grid_is_chosen_on_val_not_test() -> None:
    def rec(val: float, test: float) -> dict:
        return {"val": {"score": val}, "history": [{"score": test}]}

    runs = {("sum:1,0,0", 0): rec(0.2, 0.9), ("sum:1,1,1", 0): rec(0.5, 0.1), ("sum:2,1,0", 0): rec(0.4, 0.8)}
    runs[("sum:2,1,0", 1)] = rec(0.9, 0.9)  # another seed does not take part
    assert learning_report.best_grid(runs, 0) == "sum:1,1,1"
    assert learning_report.canonical((3, 0, 0)) == "sum:1,0,0" and learning_report.canonical((2, 1, 0)) == "sum:2,1,0"
    assert len({learning_report.canonical(w) for w in learning_report.GRID}) == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "ppo"], "--methods: unknown ['ppo']"),
        (["--samples", "1"], "--samples must be >= 2"),
        (["--prompts-per-step", "5"], "--prompts-per-step must be even"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_flags_fail_before_any_work(args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        bench_learning.parse_args(args)
    assert message in capsys.readouterr().err
