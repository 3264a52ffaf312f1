"""Table and plots of the learning benchmark, from the per-run JSON files that ``bench_learning.py`` writes.

report(workdir, methods, seeds) -> str     the markdown table; also writes summary.md, summary.json,
                                           learning_curves.png and conductor_weights.png into workdir
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import learning_task as task

GRID = [(a, b, 3 - a - b) for a in range(4) for b in range(4 - a)]  # the simplex in steps of 1/3
LABELS = {
    "maestro": "maestro",
    "maestro-prompt": "maestro, prompt context",
    "maestro-prior": "maestro, val-selected prior",
    "sum:1,1,1": "sum, equal weights",
    "best": "sum, best grid weights",
    "gdpo": "gdpo",
    "random": "random emphasis",
    "sum:1,0,0": "match only",
    "sum:0,1,0": "variety only",
    "sum:0,0,1": "length only",
}
COLUMNS = [
    ("echo/metric", "echo exact match"),
    ("story/metric", "story variety score"),
    ("score", "mean of both"),
    ("echo/words", "echo words"),
    ("story/words", "story words"),
]


def canonical(weights: tuple[int, ...]) -> str:
    """sum:a,b,c with the common factor removed (group_norm makes 3,0,0 and 1,0,0 the same run)."""
    g = math.gcd(*weights)
    return "sum:" + ",".join(str(w // g) for w in weights)


def maestro_prior(best: str) -> str:
    """The maestro-prior run whose w_prior is the grid point `best` (sum:a,b,c -> maestro-prior:a,b,c)."""
    return "maestro-prior:" + best.removeprefix("sum:")


def load_runs(workdir: Path) -> dict[tuple[str, int], dict]:
    """(method, seed) -> the run's record, for every finished run under workdir/runs."""
    runs = {}
    for f in sorted((Path(workdir) / "runs").glob("*.json")):
        rec = json.loads(f.read_text())
        runs[(rec["spec"]["method"], rec["spec"]["seed"])] = rec
    return runs


def grid_val_scores(runs: dict[tuple[str, int], dict], seed: int) -> dict[str, float]:
    """sum:a,b,c -> the run's score on the `val` topics at `seed`, for every finished grid point."""
    return {canonical(w): runs[(canonical(w), seed)]["val"]["score"] for w in GRID if (canonical(w), seed) in runs}


def best_grid(runs: dict[tuple[str, int], dict], seed: int) -> str | None:
    """The grid point with the highest score on the `val` topics at `seed` (the choice never sees `test`)."""
    scored = grid_val_scores(runs, seed)
    return max(scored, key=scored.__getitem__) if scored else None


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _run_method(method: str, best: str | None) -> str | None:
    """The RunSpec.method behind a LABELS key: `best` and `maestro-prior` depend on the grid's winner."""
    if method == "best":
        return best
    if method == "maestro-prior":
        return None if best is None else maestro_prior(best)
    return method


def _label(method: str, best: str | None) -> str:
    """LABELS[method], with the grid weights for the methods that use them, e.g. `sum, best grid weights (2,1,0)`."""
    return LABELS[method] + (f" ({best[4:]})" if method in ("best", "maestro-prior") and best else "")


def _method_runs(runs: dict, method: str, seeds: list[int], best: str | None) -> list[dict]:
    spec = _run_method(method, best)
    return [runs[(spec, s)] for s in seeds if spec is not None and (spec, s) in runs]


def report(workdir: Path, methods: list[str], seeds: list[int]) -> str:
    """Markdown table (final test metrics, mean ± sample sd over seeds); writes the summary files and plots."""
    workdir = Path(workdir)
    runs = load_runs(workdir)
    if not runs:
        raise SystemExit(f"no finished runs under {workdir / 'runs'}; run bench/bench_learning.py first")
    best = best_grid(runs, seeds[0])
    rows, summary = [], {"best_grid": best, "seeds": seeds, "methods": {}}
    start = next(iter(runs.values()))["history"][0]  # the same policy and draws in every run (a test checks it)
    rows.append(("pre-trained policy (step 0)", "–", {k: [start[k]] for k, _ in COLUMNS}))
    for method in methods:
        chosen = _method_runs(runs, method, seeds, best)
        if not chosen:
            continue
        label = _label(method, best)
        finals = [r["history"][-1] for r in chosen]
        values = {k: [h[k] for h in finals] for k, _ in COLUMNS}
        rows.append((label, len(chosen), values))
        summary["methods"][method] = {"label": label, "seeds": [r["spec"]["seed"] for r in chosen], **values}
    steps = {r["history"][-1]["step"] for r in runs.values()}
    header = "| method | seeds | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [
        f"Held-out `test` topics after {'/'.join(map(str, sorted(steps)))} GRPO steps: mean ± sd over seeds.",
        "",
        header,
        "|" + " --- |" * (len(COLUMNS) + 2),
    ]
    for label, n, values in rows:
        lines.append(f"| {label} | {n} | " + " | ".join(_mean_sd(values[k]) for k, _ in COLUMNS) + " |")
    if best is not None:
        val = {
            canonical(w): runs[(canonical(w), seeds[0])]["val"]["score"]
            for w in GRID
            if (canonical(w), seeds[0]) in runs
        }
        ranked = ", ".join(f"{k[4:]}: {v:.3f}" for k, v in sorted(val.items(), key=lambda kv: -kv[1]))
        lines += ["", f"Grid (match, variety, length), `val` score at seed {seeds[0]}: {ranked}."]
        summary["grid_val_scores"] = val
    for method in ("maestro", "maestro-prior", "best", "sum:1,1,1"):
        chosen = _method_runs(runs, method, seeds, best)
        if method in methods and chosen:
            shown = "; ".join(f"`{k}` → `{v.strip()}`" for k, v in chosen[0]["history"][-1]["examples"].items())
            lines += ["", f"{LABELS[method]}, seed {chosen[0]['spec']['seed']}, final responses: {shown}"]
    text = "\n".join(lines)
    (workdir / "summary.md").write_text(text + "\n")
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_learning_curves(runs, methods, seeds, best, workdir / "learning_curves.png")
    plot_conductor_weights(runs, seeds, best, workdir / "conductor_weights.png")
    return text + f"\n\nwrote {workdir / 'summary.md'}, learning_curves.png, conductor_weights.png"


def plot_learning_curves(runs: dict, methods: list[str], seeds: list[int], best: str | None, path: Path) -> None:
    """Per-family metric and word count against the step: mean over seeds, min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("echo/metric", "echo: exact match"),
        ("story/metric", "story: variety score"),
        ("echo/words", "echo: words per response"),
        ("story/words", "story: words per response"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for method in methods:
        chosen = _method_runs(runs, method, seeds, best)
        if not chosen:
            continue
        steps = [h["step"] for h in chosen[0]["history"]]
        style = {"linewidth": 2.5} if method == "maestro" else {"linewidth": 1.2}
        for ax, (key, title) in zip(axes.flat, panels, strict=True):
            series = [[h[key] for h in r["history"]] for r in chosen]
            mean = [statistics.fmean(col) for col in zip(*series, strict=True)]
            line = ax.plot(steps, mean, label=LABELS[method], **style)[0]
            if len(series) > 1:
                lo = [min(col) for col in zip(*series, strict=True)]
                hi = [max(col) for col in zip(*series, strict=True)]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.12)
            ax.set_title(title)
    for ax in axes[1]:
        ax.set_xlabel("GRPO step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Held-out test topics, mean over seeds {seeds} (band: min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def plot_conductor_weights(runs: dict, seeds: list[int], best: str | None, path: Path, window: int = 5) -> None:
    """The Conductor's mean weight per objective on each family's responses against the step.

    One row per MAESTRO variant that ran; thick: mean over seeds, thin: each seed; moving average of `window`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [m for m in ("maestro", "maestro-prompt", "maestro-prior") if _method_runs(runs, m, seeds, best)]
    if not variants:
        return
    fig, axes = plt.subplots(len(variants), len(task.FAMILIES), figsize=(11, 3.6 * len(variants)), squeeze=False)
    for row, method in zip(axes, variants, strict=True):
        chosen = _method_runs(runs, method, seeds, best)
        for ax, family in zip(row, task.FAMILIES, strict=True):
            steps = [e["step"] for e in chosen[0]["train"]]
            for k, color in zip(task.OBJECTIVES, ("C0", "C1", "C2"), strict=True):
                per_seed = [_smooth([e[f"{family}/weight/{k}"] for e in r["train"]], window) for r in chosen]
                for series in per_seed:
                    ax.plot(steps, series, color=color, linewidth=0.6, alpha=0.35)
                mean = [statistics.fmean(col) for col in zip(*per_seed, strict=True)]
                ax.plot(steps, mean, color=color, linewidth=2.2, label=k)
            ax.axhline(1 / len(task.OBJECTIVES), color="grey", linestyle=":", linewidth=1, label="uniform")
            ax.set_title(f"{_label(method, best)}: {family} prompts")
            ax.set_xlabel("GRPO step")
        row[0].set_ylabel(f"mean weight (moving average of {window})")
    axes[0, 0].legend()
    fig.suptitle(f"The Conductor's weight per objective on each family's responses (thick: mean of seeds {seeds})")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _smooth(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


# ---- the target comparison (issue 22): the alignment meta-reward against information-matched baselines ----------
TARGET_LRS = (1e-3, 1e-2, 1e-1)
"""maestro-target's Conductor lr candidates, each run at the first seed and chosen on `val` (as the grid is)."""
TARGET_WEIGHTS = (1, 3, 9)
"""sum-target's target weight candidates, next to the val-selected grid weights (which sum to 3)."""
TARGET_LABELS = {
    "maestro-target": "maestro, alignment meta-reward with the target",
    "best": "(1) sum, val-selected grid weights",
    "sum-target": "(2) sum + the target as a 4th objective",
    "family": "(3) sum, val-selected grid weights per family",
    "maestro": "(4) maestro, the paper's meta-reward",
    "random": "(5) random emphasis",
}
# Two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..12 (standard tables).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
T975.update({11: 2.201, 12: 2.179})


def best_by_val(runs: dict, candidates: list[str], seed: int, key: str = "score") -> str | None:
    """The candidate method whose run at `seed` has the highest `val` `key` (ties: the first in order)."""
    scored = [(runs[(m, seed)]["val"][key], -i, m) for i, m in enumerate(candidates) if (m, seed) in runs]
    return max(scored)[2] if scored else None


def target_choices(runs: dict, seed: int) -> dict[str, str | None]:
    """The val-selected RunSpec.method behind each TARGET_LABELS key (None where its selection runs are missing)."""
    grid = [canonical(w) for w in GRID]
    best = best_by_val(runs, grid, seed)
    echo, story = best_by_val(runs, grid, seed, "echo/metric"), best_by_val(runs, grid, seed, "story/metric")
    chosen = {
        "best": best,
        "family": None if echo is None or story is None else f"family:{echo[4:]}+{story[4:]}",
        "maestro-target": best_by_val(runs, [f"maestro-target:{lr:g}" for lr in TARGET_LRS], seed),
        "sum-target": None,
        "maestro": "maestro",
        "random": "random",
    }
    if best is not None:
        chosen["sum-target"] = best_by_val(runs, sum_target_candidates(best), seed)
    return chosen


def sum_target_candidates(best: str) -> list[str]:
    """sum-target:a,b,c,t for the grid winner sum:a,b,c and every t in TARGET_WEIGHTS."""
    return [f"sum-target:{best[4:]},{t}" for t in TARGET_WEIGHTS]


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided 95 % Student t interval of the mean of paired differences."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = T975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def _train_weights(rec: dict, family: str, last: int = 10) -> list[float]:
    """The mean weight per objective on the family's training responses over the last `last` steps."""
    tail = rec["train"][-last:]
    return [statistics.fmean(e[f"{family}/weight/{k}"] for e in tail) for k in task.OBJECTIVES]


def target_report(workdir: Path, seeds: list[int]) -> str:
    """The issue-22 comparison: per-family test metrics, paired differences against (1) and (2), Conductor weights.

    Writes workdir/target_summary.md and target_summary.json.
    """
    workdir = Path(workdir)
    runs = load_runs(workdir)
    chosen = target_choices(runs, seeds[0])
    per_method = {k: [runs[(m, s)] for s in seeds if m and (m, s) in runs] for k, m in chosen.items()}
    cols = [("echo/metric", "echo exact match"), ("story/metric", "story variety score"), ("score", "mean of both")]
    lines = [
        f"Held-out `test` topics after {runs[next(iter(runs))]['history'][-1]['step']} GRPO steps, "
        f"seeds {seeds}: mean ± sd over seeds.",
        "",
        "| method | run | seeds | " + " | ".join(name for _, name in cols) + " |",
        "|" + " --- |" * (len(cols) + 3),
    ]
    summary: dict = {"seeds": seeds, "chosen": chosen, "methods": {}, "paired": {}}
    for key, label in TARGET_LABELS.items():
        recs = per_method[key]
        if not recs:
            continue
        values = {k: [r["history"][-1][k] for r in recs] for k, _ in cols}
        lines.append(
            f"| {label} | `{chosen[key]}` | {len(recs)} | " + " | ".join(_mean_sd(values[k]) for k, _ in cols) + " |"
        )
        summary["methods"][key] = {"method": chosen[key], "seeds": [r["spec"]["seed"] for r in recs], **values}
    ours = {r["spec"]["seed"]: r["history"][-1] for r in per_method["maestro-target"]}
    lines += ["", "Paired by seed, maestro with the target minus the baseline (95 % t interval over the seeds):", ""]
    lines += ["| baseline | seeds | " + " | ".join(name for _, name in cols) + " |", "|" + " --- |" * (len(cols) + 2)]
    for key in ("best", "sum-target", "family", "maestro", "random"):
        theirs = {r["spec"]["seed"]: r["history"][-1] for r in per_method[key]}
        common = sorted(set(ours) & set(theirs))
        if not common:
            continue
        cells, summary["paired"][key] = [], {"seeds": common}
        for k, _ in cols:
            mean, lo, hi = paired_interval([ours[s][k] - theirs[s][k] for s in common])
            cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
            summary["paired"][key][k] = [mean, lo, hi]
        lines.append(f"| {TARGET_LABELS[key]} | {len(common)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The Conductor's weights (match, variety, length) per family, mean over seeds: on the training responses "
        "over the last 10 steps, and (alignment only) E_π[w] on the held-out `test` prompts at the end:",
        "",
        "| method | family | training, last 10 steps | `test` prompts, E_π[w] |",
        "| --- | --- | --- | --- |",
    ]
    fmt = lambda ws: "(" + ", ".join(f"{w:.2f}" for w in ws) + ")"  # noqa: E731
    for key in ("maestro-target", "maestro", "random"):
        recs = per_method[key]
        if not recs:
            continue
        for family in task.FAMILIES:
            train_w = [statistics.fmean(c) for c in zip(*[_train_weights(r, family) for r in recs], strict=True)]
            test = [r["test_conductor_weights"][family] for r in recs if "test_conductor_weights" in r]
            test_w = fmt([statistics.fmean(c) for c in zip(*test, strict=True)]) if test else "–"
            lines.append(f"| {TARGET_LABELS[key]} | {family} | {fmt(train_w)} | {test_w} |")
            summary["methods"][key][f"{family}/train_weights"] = train_w
    sel = [f"Selections at seed {seeds[0]} on `val`: " + ", ".join(f"{k}: `{v}`" for k, v in chosen.items()) + "."]
    for label, cands in (
        ("maestro-target lr", [f"maestro-target:{lr:g}" for lr in TARGET_LRS]),
        ("sum-target weight", sum_target_candidates(chosen["best"]) if chosen["best"] else []),
    ):
        val = [f"{m.split(':')[1]}: {runs[(m, seeds[0])]['val']['score']:.3f}" for m in cands if (m, seeds[0]) in runs]
        sel.append(f"{label}, `val` score: " + ", ".join(val) + ".")
    lines += ["", *sel]
    text = "\n".join(lines)
    (workdir / "target_summary.md").write_text(text + "\n")
    (workdir / "target_summary.json").write_text(json.dumps(summary, indent=1))
    return text
