"""Overhead of MAESTRO against plain GRPO in the real OpenRLHF pipeline (the tiny CPU run, end to end).

    python bench/bench_overhead.py                     # 5 rounds of (maestro, sum, none), 4 GRPO steps each
    python bench/bench_overhead.py --pairs 2 --steps 3 --workdir outputs/bench-overhead-small
    python bench/bench_overhead.py --packing            # every variant with --ds.packing_samples

Every run is ``examples/scripts/train_grpo_tiny_cpu.sh`` (the plugin's launcher with ``--runtime cpu``, which
runs OpenRLHF's own ``train_ppo_ray``) with the same model, data, seed and steps; only ``AGGREGATOR`` changes:
``maestro`` (the Conductor), ``sum`` (static weights through the same plugin path) and ``none`` (the launcher
patches no aggregator: plain OpenRLHF GRPO). The variants are interleaved (maestro, sum, none, maestro, ...)
so that a slow spell of a shared machine hits all three alike.

Per run, from its TensorBoard events: the median over steps >= 2 (step 1 includes vLLM's warm-up) of
``train/timing/step_total`` and ``train/timing/make_experience``, and ``train/reward/policy_forwards`` per
step where logged. Peak memory is the largest sum of RSS over the launched process and every descendant,
sampled every ``--sample-every`` seconds in a thread. Each run gets a unique marker in its environment, which
Ray's workers and vLLM's subprocesses inherit, so the sampler also finds any process of the run that is not a
descendant (and names them) without counting other jobs' Ray processes. Ray's workers outlive the driver by a
few seconds; the next run starts only when none of them is left.

Prints a table per variant and the median paired ratios MAESTRO/sum and MAESTRO/none, checks the target
(MAESTRO/sum whole-step ratio <= 1.03, and MAESTRO's probed policy forwards equal to OpenRLHF's micro-batches:
no extra pass) and writes every run's raw numbers to
``WORKDIR/overhead.json``. ``--report-only`` prints the summary again from that file and the runs' events.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from openrlhf_maestro.metric_names import POLICY_FORWARDS, SECONDS_AGGREGATE, SECONDS_FEEDBACK, train_tag  # noqa: E402
from openrlhf_maestro.report import latest_run_scalars  # noqa: E402

SCRIPT = REPO / "examples" / "scripts" / "train_grpo_tiny_cpu.sh"
CORPUS = REPO / "examples" / "data" / "demo_prompts.jsonl"
VARIANTS = ("maestro", "sum", "none")
MARKER = "MAESTRO_BENCH_RUN"  # environment variable that tags every process of one run
STEP_TAG = "train/timing/step_total"
EXP_TAG = "train/timing/make_experience"
FORWARDS_TAG = train_tag(POLICY_FORWARDS)
AGG_TAGS = (train_tag(SECONDS_AGGREGATE), train_tag(SECONDS_FEEDBACK))
GIB = 2**30


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=5, help="rounds of (maestro, sum, none)")
    p.add_argument("--steps", type=int, default=4, help="GRPO steps per run (STEPS_PROMPTS = steps * rollout batch)")
    p.add_argument("--rollout-batch", type=int, default=4, help="ROLLOUT_BATCH: prompts per GRPO step")
    p.add_argument("--n-samples", type=int, default=4, help="N_SAMPLES: responses per prompt")
    p.add_argument("--workdir", type=Path, default=REPO / "outputs" / "bench-overhead", help="model, runs, JSON")
    p.add_argument("--sample-every", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument("--target", type=float, default=1.03, help="largest acceptable MAESTRO/sum whole-step ratio")
    p.add_argument("--timeout", type=int, default=1500, help="seconds before one run is killed")
    p.add_argument(
        "--packing",
        action="store_true",
        help="every variant packs its samples (--ds.packing_samples), plain OpenRLHF included",
    )
    p.add_argument(
        "--report-only", action="store_true", help="print the summary of WORKDIR/overhead.json, run nothing"
    )
    args = p.parse_args()
    if args.steps < 2:
        p.error(f"--steps {args.steps}: need at least 2, step 1 is excluded as warm-up")
    if args.pairs < 1:
        p.error(f"--pairs {args.pairs}: need at least 1")
    return args


def micro_batch_size() -> int:
    """``--rollout.micro_batch_size`` as the example script sets it (the experience stage's micro-batch)."""
    found = re.search(r"--rollout\.micro_batch_size\s+(\d+)", SCRIPT.read_text())
    if not found:
        raise RuntimeError(f"{SCRIPT} no longer sets --rollout.micro_batch_size; update {Path(__file__).name}")
    return int(found.group(1))


class TreeMemorySampler(threading.Thread):
    """Largest summed RSS of a process tree, plus processes of the run outside the tree (found by ``MARKER``).

    RSS counts shared pages once per process, so the sum over-counts libraries and shared memory mapped by
    several processes; it is the same measure for every variant.
    """

    def __init__(self, pid: int, tag: str, every: float) -> None:
        super().__init__(daemon=True)
        self.root, self.tag, self.every = psutil.Process(pid), tag, every
        self.t0 = self.root.create_time()
        self.stop_event = threading.Event()
        self.peak_tree = self.peak_all = 0
        self.samples = 0
        self.tagged: dict[tuple[int, float], bool] = {}  # (pid, create time) -> carries this run's marker
        self.names_tree: set[str] = set()
        self.names_outside: set[str] = set()  # outside the tree while its raylet was alive
        self.names_orphaned: set[str] = set()  # outside the tree after the raylet had exited (shutdown)

    def _has_marker(self, proc: psutil.Process) -> bool:
        try:
            key = (proc.pid, proc.create_time())
            if key not in self.tagged:
                self.tagged[key] = proc.create_time() >= self.t0 - 1 and proc.environ().get(MARKER) == self.tag
            return self.tagged[key]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    @staticmethod
    def _rss_and_name(proc: psutil.Process) -> tuple[int, str]:
        try:
            cmd = proc.cmdline()
            name = os.path.basename(cmd[0]) if cmd else proc.name()
            return proc.memory_info().rss, name.split()[0] if name else proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return 0, ""

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return
        in_tree = {p.pid for p in tree}
        outside = [p for p in psutil.process_iter() if p.pid not in in_tree and self._has_marker(p)]
        tree_rss, tree_names = 0, set()
        for proc in tree:
            rss, name = self._rss_and_name(proc)
            tree_rss += rss
            tree_names.add(name)
        self.names_tree |= tree_names - {""}
        outside_rss = 0
        for proc in outside:
            rss, name = self._rss_and_name(proc)
            outside_rss += rss
            if name:
                (self.names_outside if "raylet" in tree_names else self.names_orphaned).add(name)
        self.peak_tree = max(self.peak_tree, tree_rss)
        self.peak_all = max(self.peak_all, tree_rss + outside_rss)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.every)

    def reap(self, timeout: float) -> tuple[float, list[str]]:
        """After the launcher exits, wait until no process of this run is left (Ray's workers outlive the driver
        by a few seconds), so the next run starts on a quiet machine; after ``timeout`` s end the rest, by pid.

        Returns:
            seconds waited, names of the processes that had to be ended.
        """
        t0 = time.time()
        while True:
            left = [p for p in psutil.process_iter() if self._has_marker(p) and p.is_running()]
            if not left or time.time() - t0 > timeout:
                break
            time.sleep(self.every)
        names = [self._rss_and_name(p)[1] or str(p.pid) for p in left]
        for proc in left:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(left, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        return time.time() - t0, names


def build_model(workdir: Path) -> Path:
    model = workdir / "tiny-model"
    if (model / "config.json").is_file():
        print(f"tiny model: reusing {model}", flush=True)
        return model
    t0 = time.time()
    cmd = [sys.executable, "-m", "openrlhf_maestro.tiny_model", str(model), "--corpus", str(CORPUS)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"tiny model: built {model} in {time.time() - t0:.1f}s", flush=True)
    return model


def run_once(args: argparse.Namespace, model: Path, variant: str, round_no: int) -> dict:
    """One launch of the example script; returns its raw numbers (``ok`` False when it failed)."""
    out = args.workdir / "runs" / f"{round_no:02d}-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("OPENRLHF_CPU_RUNTIME", "PYTHONPATH")}
    env.update(
        MODEL=str(model),
        OUT=str(out),
        PYTHON=sys.executable,
        AGGREGATOR=variant,
        STEPS_PROMPTS=str(args.steps * args.rollout_batch),
        ROLLOUT_BATCH=str(args.rollout_batch),
        N_SAMPLES=str(args.n_samples),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        VERIFY_WEIGHT_SYNC="0",  # after training: not part of any step, only of the wall time
        **{MARKER: tag},
    )
    t0 = time.time()
    with (out / "run.log").open("w") as log:
        extra = ["--ds.packing_samples"] if args.packing else []
        proc = subprocess.Popen(["bash", str(SCRIPT), *extra], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeMemorySampler(proc.pid, tag, args.sample_every)
        sampler.start()
        try:
            returncode = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
        sampler.stop_event.set()
        sampler.join()
        cleanup_s, ended = sampler.reap(timeout=120)
    record = {
        "variant": variant,
        "round": round_no,
        "out": str(out),
        "returncode": returncode,
        "wall_s": time.time() - t0,
        "peak_rss_tree_gib": sampler.peak_tree / GIB,
        "peak_rss_gib": sampler.peak_all / GIB,
        "memory_samples": sampler.samples,
        "processes_in_tree": sorted(sampler.names_tree),
        "processes_outside_tree": sorted(sampler.names_outside),
        "processes_orphaned_at_shutdown": sorted(sampler.names_orphaned),
        "cleanup_s": cleanup_s,
        "processes_ended_after_cleanup_timeout": ended,
        "joined_existing_ray": "Connecting to existing Ray cluster" in (out / "run.log").read_text(errors="replace"),
        "ok": False,
    }
    if returncode != 0:
        record["error"] = f"exit status {returncode}, see {out / 'run.log'}"
        return record
    return read_tensorboard(record, args.steps)


def read_tensorboard(record: dict, expected_steps: int) -> dict:
    """Fill ``record`` with the run's per-step scalars and their medians over steps >= 2; ``ok`` when complete."""
    try:
        scalars = latest_run_scalars(Path(record["out"]) / "tensorboard")
    except FileNotFoundError as exc:
        record["error"] = str(exc)
        return record
    record["step_total"] = scalars.get(STEP_TAG, {})
    record["make_experience"] = scalars.get(EXP_TAG, {})
    record["policy_forwards"] = scalars.get(FORWARDS_TAG, {})
    record["aggregator_s"] = {  # controller time in the aggregator, per step (sum logs no feedback: it learns none)
        s: scalars[AGG_TAGS[0]][s] + scalars.get(AGG_TAGS[1], {}).get(s, 0.0) for s in scalars.get(AGG_TAGS[0], {})
    }
    steps = sorted(record["step_total"])
    if len(steps) < expected_steps:
        record["error"] = f"logged {len(steps)} steps, expected {expected_steps}"
        return record
    later = [s for s in steps if s >= 2]
    record["median_step_s"] = statistics.median(record["step_total"][s] for s in later)
    record["median_experience_s"] = statistics.median(record["make_experience"][s] for s in later)
    agg = [record["aggregator_s"][s] for s in later if s in record["aggregator_s"]]
    record["median_aggregator_s"] = statistics.median(agg) if agg else None
    forwards = set(record["policy_forwards"].values())
    record["forwards_per_step"] = forwards.pop() if len(forwards) == 1 else (sorted(forwards) or None)
    record["ok"] = True
    return record


def fmt_forwards(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return "/".join(f"{v:g}" for v in value)
    return f"{value:g}"


def summarize(args: argparse.Namespace, runs: list[dict], none_forwards: int) -> dict:
    ok = [r for r in runs if r["ok"]]
    by_variant = {v: [r for r in ok if r["variant"] == v] for v in VARIANTS}
    rows = {}
    print(f"\nper variant (median over runs; each run's value is its median over steps 2..{args.steps}):")
    print(f"{'variant':<8} {'runs':>4} {'step s':>8} {'exp s':>8} {'peak GiB':>9} {'fwd/step':>9}")
    for v, rs in by_variant.items():
        if not rs:
            print(f"{v:<8} {0:>4} {'-':>8} {'-':>8} {'-':>9} {'-':>9}")
            continue
        fwd = {json.dumps(r["forwards_per_step"]) for r in rs}
        logged = json.loads(fwd.pop()) if len(fwd) == 1 else "varies"
        row = {
            "runs": len(rs),
            "median_step_s": statistics.median(r["median_step_s"] for r in rs),
            "median_experience_s": statistics.median(r["median_experience_s"] for r in rs),
            "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in rs),
            "forwards_per_step": logged if logged is not None else none_forwards,
            "forwards_source": "logged" if logged is not None else "micro-batches",
        }
        rows[v] = row
        shown = fmt_forwards(row["forwards_per_step"]) if logged != "varies" else "varies"
        if row["forwards_source"] == "micro-batches":
            shown += "*"
        print(
            f"{v:<8} {len(rs):>4} {row['median_step_s']:>8.3f} {row['median_experience_s']:>8.3f} "
            f"{row['peak_rss_gib']:>9.2f} {shown:>9}"
        )
    if any(row["forwards_source"] == "micro-batches" for row in rows.values()):
        mb = micro_batch_size()
        print(
            f"* logs no policy forwards (only a run whose aggregator reads the policy forward does): OpenRLHF "
            f"runs one actor forward per micro-batch, "
            f"ceil({args.rollout_batch}*{args.n_samples}/{mb}) = {none_forwards} "
            "(OpenRLHF 0.11.2 experience_maker.py 70-76 split the batch, 154-158 dispatch the actor's forward, "
            "launcher.py 92-98 call it once per micro-batch)"
        )

    ratios: dict[str, dict[str, float]] = {}
    keys = (("median_step_s", "whole step"), ("median_experience_s", "experience"), ("peak_rss_gib", "peak memory"))
    print("\nmedian over rounds of the paired ratio (same round):")
    for other in ("sum", "none"):
        pairs = [(m, o) for m in by_variant["maestro"] for o in by_variant[other] if m["round"] == o["round"]]
        if not pairs:
            print(f"MAESTRO/{other}: no complete round")
            continue
        ratios[other] = {key: statistics.median(m[key] / o[key] for m, o in pairs) for key, _ in keys}
        print(
            f"MAESTRO/{other:<4} ({len(pairs)} rounds): "
            + ", ".join(f"{label} {ratios[other][key]:.3f}" for key, label in keys)
        )
        per_round = ", ".join(f"{m['median_step_s'] / o['median_step_s']:.3f}" for m, o in pairs)
        print(f"  whole-step ratio per round: {per_round}")
    for v in ("maestro", "sum"):
        agg = [r["median_aggregator_s"] for r in by_variant[v] if r.get("median_aggregator_s") is not None]
        if agg:
            print(
                f"controller time in the aggregator (reward/seconds_aggregate + seconds_feedback), {v}: "
                f"{1e3 * statistics.median(agg):.1f} ms per step"
            )

    verdict = {"target": args.target, "met": False, "reason": ""}
    if "sum" in ratios and "maestro" in rows and "sum" in rows:
        # MAESTRO's probe counts the forwards lm_head saw; OpenRLHF's own count is one per micro-batch.
        same_forwards = all(m["forwards_per_step"] == none_forwards for m in by_variant["maestro"])
        step_ratio = ratios["sum"]["median_step_s"]
        verdict["met"] = step_ratio <= args.target and same_forwards
        verdict["reason"] = (
            f"whole-step ratio {step_ratio:.3f} {'<=' if step_ratio <= args.target else '>'} {args.target}; "
            f"policy forwards per step {'equal' if same_forwards else 'DIFFER'} "
            f"(maestro {fmt_forwards(rows['maestro']['forwards_per_step'])}, OpenRLHF's micro-batches "
            f"{none_forwards})"
        )
    else:
        verdict["reason"] = "no complete maestro/sum round"
    print(
        f"\ntarget: MAESTRO/sum whole-step ratio <= {args.target} with the same number of policy forwards: "
        f"{'MET' if verdict['met'] else 'NOT MET'} ({verdict['reason']})"
    )

    def names(key: str) -> list[str]:  # "ray::PolicyModelActor.fit" -> "ray::PolicyModelActor"
        return sorted({n.split(".")[0] for r in runs for n in r.get(key, [])})

    outside, orphaned = names("processes_outside_tree"), names("processes_orphaned_at_shutdown")
    ray_in_tree = [n for n in names("processes_in_tree") if n.startswith(("ray::", "VLLM::"))]
    print(
        "memory: while the raylet ran, the launched process's descendants (psutil children(recursive=True)) "
        + (
            "held every process carrying the run's marker"
            if not outside
            else f"missed processes found by the run's marker (added to the peak): {', '.join(outside)}"
        )
        + f"; Ray/vLLM processes seen in the tree: {', '.join(ray_in_tree)}"
    )
    if orphaned:
        print(
            "  at shutdown Ray's workers outlive the raylet and are re-parented to init, so the marker found them "
            f"(counted in the peak while the launcher lived; waited for before the next run): {', '.join(orphaned)}"
        )
    gaps = [r["peak_rss_gib"] - r["peak_rss_tree_gib"] for r in ok]
    differ = [g for g in gaps if g > 0]
    print(
        f"  the peak of the tree alone equals the peak with them in {len(gaps) - len(differ)} of {len(gaps)} runs"
        + (f"; largest difference {max(differ) * 1024:.0f} MiB" if differ else "")
    )
    ended = names("processes_ended_after_cleanup_timeout")
    if ended:
        print(f"  ended after the 120 s cleanup wait: {', '.join(ended)}")
    return {"variants": rows, "ratios": ratios, "verdict": verdict, "processes_outside_tree": outside}


def main() -> int:
    args = parse_args()
    if args.packing and args.workdir == REPO / "outputs" / "bench-overhead":
        args.workdir = REPO / "outputs" / "bench-overhead-packed"
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "overhead.json"
    none_forwards = math.ceil(args.rollout_batch * args.n_samples / micro_batch_size())
    if args.report_only:
        saved = json.loads(path.read_text())
        for run in saved["runs"]:  # the timings again from the run's own TensorBoard events
            if run["returncode"] == 0:
                read_tensorboard(run, args.steps)
        summarize(args, saved["runs"], none_forwards)
        print(f"raw numbers: {path}; elapsed when run {saved['elapsed_s']:.0f}s")
        return 0
    started = time.time()
    model = build_model(args.workdir)
    order = [(r, v) for r in range(1, args.pairs + 1) for v in VARIANTS]
    runs = []
    for i, (round_no, variant) in enumerate(order, start=1):
        print(f"[{i}/{len(order)}] round {round_no} {variant}: running ...", flush=True)
        record = run_once(args, model, variant, round_no)
        runs.append(record)
        if record["ok"]:
            print(
                f"[{i}/{len(order)}] round {round_no} {variant}: wall {record['wall_s']:.0f}s, "
                f"step {record['median_step_s']:.3f}s, exp {record['median_experience_s']:.3f}s, "
                f"peak {record['peak_rss_gib']:.2f} GiB, forwards/step {fmt_forwards(record['forwards_per_step'])}, "
                f"elapsed {time.time() - started:.0f}s",
                flush=True,
            )
        else:
            print(f"[{i}/{len(order)}] round {round_no} {variant}: FAILED ({record['error']})", flush=True)
        if record["joined_existing_ray"]:
            print("  warning: this run joined an existing Ray cluster; its memory figure is not its own", flush=True)
    summary = summarize(args, runs, none_forwards)
    elapsed = time.time() - started
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "micro_batch_size": micro_batch_size(),
        "none_forwards_per_step": none_forwards,
        "elapsed_s": elapsed,
        "runs": runs,
        **summary,
    }
    path.write_text(json.dumps(result, indent=1, default=str))
    failed = [r for r in runs if not r["ok"]]
    print(f"raw numbers: {path}; {len(runs) - len(failed)}/{len(runs)} runs ok; elapsed {elapsed:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
