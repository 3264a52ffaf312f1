"""bench/bench_probe_memory.py and bench/gpu_check/gpu_check.py in cheap configurations (real subprocesses, the
real launcher forward; small vocabularies and lengths so each takes well under a minute of the 2 CPUs)."""

from __future__ import annotations

import json
import subprocess
import sys

import bench_probe_memory as bench
from _support import REPO


def test_ratios_divide_each_case_by_its_own_baseline_at_the_same_length():
    results = [
        {"case": "openrlhf", "length": 8, "forward_peak_mib": 100.0},
        {"case": "openrlhf-t0.6", "length": 8, "forward_peak_mib": 200.0},
        {"case": "entropy-t1", "length": 8, "forward_peak_mib": 110.0},
        {"case": "entropy-t0.6", "length": 8, "forward_peak_mib": 210.0},
        {"case": "maestro-h", "length": 16, "forward_peak_mib": 50.0},  # no baseline at 16: no ratio
    ]
    got = {(r["case"], r["length"]): r["ratio"] for r in bench.ratios(results)}
    assert got[("entropy-t1", 8)] == 1.1 and got[("entropy-t0.6", 8)] == 1.05
    assert got[("openrlhf", 8)] is None and got[("maestro-h", 16)] is None


def test_the_benchmark_measures_every_case_and_prints_the_ratios(tmp_path):
    out = tmp_path / "probe_memory.json"
    cmd = [sys.executable, str(REPO / "bench/bench_probe_memory.py"), "--lengths", "96", "--vocab", "8192"]
    done = subprocess.run([*cmd, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["case"] for r in results] == list(bench.CASES)
    for r in results:
        # row 1 loses a quarter of its 72 response tokens; OpenRLHF holds the bf16 logits and a float32 copy
        assert r["tokens"] == 96 + 96 - 72 // 4 and r["forward_peak_mib"] >= 2 * r["logits_bf16_mib"]
        assert (r["ratio"] is None) == (r["case"] in ("openrlhf", "openrlhf-t0.6"))
    assert "| length | tokens | case |" in done.stdout and "largest ratio" in done.stdout


def test_the_gpu_check_dry_run_passes_every_part_on_the_cpu(tmp_path):
    cmd = [sys.executable, str(REPO / "bench/gpu_check/gpu_check.py"), "--dry-run", "--lengths", "256"]
    done = subprocess.run([*cmd, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for part in ("exactness", "zero3_exactness"):
        assert report[part]["ok"] and report[part]["lm_head_calls"] == [1, 1], report[part]
        assert report[part]["padded_vs_model"]["hidden"] == 0.0 and report[part]["outputs_cpu_float32"]
    for part in ("memory", "zero3_memory"):
        assert [r["case"] for r in report[part]] == list(bench.CASES) and all(r["length"] == 256 for r in report[part])
    assert "all checks: PASS" in (tmp_path / "gpu_check.md").read_text()
