"""Tables and figures of the real-model benchmark (``bench/bench_real_model.py``) from its finished runs.

(a) the Conductor's expected weights E[w | h] per prompt family and step, per seed (table + figure);
(b) held-out task metrics per method, mean ± sd over seeds (table + figure);
and each training objective per step, mean over seeds, per method (figure).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path

from learning_report import paired_interval

from openrlhf_maestro.metric_names import TARGET_FRACTION, TARGET_GAIN, objective_key, train_tag
from openrlhf_maestro.report import read_rows

METRICS = (
    ("reasoning/reference_match", "reasoning reference match"),
    ("creative/distinct2_in_band", "creative distinct-2 in band"),
    ("reasoning/words", "reasoning words"),
    ("creative/words", "creative words"),
)
LABELS = {
    "base": "initial model (step 0)",
    "maestro": "maestro",
    "gdpo": "gdpo (reinforce_baseline)",
    "sum": "sum, equal weights",
    "random": "random emphasis",
    "maestro-raw": "maestro, normalization none",
    "maestro-target": "maestro, target meta-reward (alignment)",
    "sum-target": "sum + the target as an objective",
}
FAMILIES = ("reasoning", "creative")
OBJECTIVES = ("format", "length", "entropy", "perplexity")
CONDUCTOR_METHODS = ("maestro", "maestro-raw", "maestro-target")  # their weights log has the Conductor's E[w | h]
FIGURES = ("real_model_conductor_weights.png", "real_model_heldout.png", "real_model_objectives.png")


def family_of(inputs: dict[str, str], templated_prompt: str) -> str:
    """The family of the dataset input found inside a chat-templated prompt (ValueError if none)."""
    for text, family in inputs.items():
        if text in templated_prompt:
            return family
    raise ValueError(f"a weights-log prompt matches no training input: {templated_prompt[-120:]!r}")


def family_weights(log: Path, inputs: dict[str, str]) -> dict[str, dict[str, dict]]:
    """{family: {step: {"mean": {objective: mean E[w | h]}, "sd": {objective: sd}, "n": responses}}} from a
    ``--reward.weights_log`` (its ``expected`` field), joined with the training prompts by input text."""
    values: dict[str, dict[int, list[dict[str, float]]]] = {}
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        family = family_of(inputs, record["prompt"])
        values.setdefault(family, {}).setdefault(int(record["step"]), []).append(record["expected"])
    out: dict[str, dict[str, dict]] = {}
    for family, steps in values.items():
        out[family] = {}
        for step, rows in sorted(steps.items()):
            names = list(rows[0])
            out[family][str(step)] = {
                "mean": {n: statistics.mean(r[n] for r in rows) for n in names},
                "sd": {n: statistics.pstdev(r[n] for r in rows) for n in names},
                "n": len(rows),
            }
    return out


def load(workdir: Path) -> list[dict]:
    """The finished runs; a Conductor run's per-family weights are read again from its weights log when it is
    there (the log is the source; the record keeps a copy)."""
    workdir = Path(workdir)
    train = workdir / "data" / "train.jsonl"
    runs = []
    for path in sorted((workdir / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        log = workdir / "runs" / f"{run['method']}-seed{run['seed']}" / "weights.jsonl"
        if run["method"] in CONDUCTOR_METHODS and log.is_file() and train.is_file():
            inputs = {r["input"]: r["category"] for r in read_rows(train, ("input", "category"))}
            run["weights_per_family"] = family_weights(log, inputs)
        runs.append(run)
    return runs


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def heldout_table(runs: list[dict], methods: list[str]) -> str:
    """(b): one row per method, mean ± sd over seeds of each held-out metric, and the mean of the two scores."""
    head = ["method", "seeds", *(label for _, label in METRICS[:2]), "mean of both", *(lb for _, lb in METRICS[2:])]
    head += ["KL at the last step"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in ["base", *methods]:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        both = [(r[METRICS[0][0]] + r[METRICS[1][0]]) / 2 for r in rs]
        cells = [LABELS[method], str(len(rs)) if method != "base" else "–"]
        cells += [mean_sd([r[key] for r in rs]) for key, _ in METRICS[:2]] + [mean_sd(both)]
        cells += [mean_sd([r[key] for r in rs]) for key, _ in METRICS[2:]]
        cells.append(mean_sd([r["kl_per_step"][-1] for r in rs]) if method != "base" else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _both(run: dict) -> float:
    return (run[METRICS[0][0]] + run[METRICS[1][0]]) / 2


def paired_table(runs: list[dict], methods: list[str]) -> str:
    """The comparison's first row minus each other row, paired by seed, for the two held-out scores and their mean:
    the mean difference, its 95 % Student t interval over the seeds, and each seed's difference."""
    first = methods[0]
    ours = {r["seed"]: r for r in runs if r["method"] == first}
    head = ["baseline", "seeds", METRICS[0][1], METRICS[1][1], "mean of both"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in methods[1:]:
        theirs = {r["seed"]: r for r in runs if r["method"] == method}
        common = sorted(set(ours) & set(theirs))
        if not common:
            continue
        cells = [LABELS[method], " ".join(map(str, common))]
        for score in (lambda r: r[METRICS[0][0]], lambda r: r[METRICS[1][0]], _both):
            diffs = [score(ours[s]) - score(theirs[s]) for s in common]
            mean, lo, hi = paired_interval(diffs)
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] ({per_seed})" if len(diffs) > 1 else f"{mean:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def target_signal_table(runs: list[dict]) -> str:
    """Per run that logged the target meta-reward's figures: the steps whose batch held a labelled group (the only
    steps with a Conductor update), the mean share of labelled groups, and the mean target gain over those steps."""
    head = ["method", "seed", "steps with a labelled group", "labelled groups per step (mean)", "target gain (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in sorted(runs, key=lambda r: (r["method"], r["seed"])):
        per_step = run.get("objectives_per_step", {})  # keyed by the metric names without train/
        if TARGET_FRACTION not in per_step:
            continue
        fractions = per_step[TARGET_FRACTION]
        labelled = [i for i, f in enumerate(fractions) if f > 0]
        gains = [per_step[TARGET_GAIN][i] for i in labelled if TARGET_GAIN in per_step]
        cells = [LABELS[run["method"]], str(run["seed"]), f"{len(labelled)} of {len(fractions)}"]
        cells += [f"{statistics.mean(fractions):.3f}", f"{statistics.mean(gains):+.4f}" if gains else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def common_last_step(run: dict) -> str:
    """The last step whose batch held prompts of both families (OpenRLHF shuffles the prompts)."""
    steps = [set(run["weights_per_family"][f]) for f in FAMILIES]
    return max(steps[0] & steps[1], key=int)


def separation(run: dict, objective: str, step: str, sign: int) -> tuple[float, float, float, float]:
    """(reasoning mean, creative mean, gap, d) of E[w_objective | h] at ``step``: gap = sign · (creative −
    reasoning), so that a positive gap is the paper's direction; d = gap / the pooled within-family sd
    (Cohen's d; ±inf when both families are constant and differ)."""
    rea, cre = (run["weights_per_family"][f][step] for f in FAMILIES)
    gap = sign * (cre["mean"][objective] - rea["mean"][objective])
    pooled = ((rea["sd"][objective] ** 2 + cre["sd"][objective] ** 2) / 2) ** 0.5
    d = gap / pooled if pooled > 0 else (0.0 if gap == 0 else float("inf") * (1 if gap > 0 else -1))
    return rea["mean"][objective], cre["mean"][objective], gap, d


MIN_GAP, MIN_D = 0.05, 1.0  # a separation: a weight difference one can see, beyond the spread within a family
PAPER = (("entropy", +1), ("perplexity", -1))  # entropy higher on creative, perplexity higher on reasoning


def pattern_table(runs: list[dict]) -> str:
    """(a): per Conductor run, mean E[w | h] per family for entropy and perplexity at the last step with both
    families, each gap taken in the paper's direction (entropy: creative − reasoning; perplexity: reasoning −
    creative) and its d. An objective follows the paper when gap >= MIN_GAP and d >= MIN_D."""
    head = ["method", "seed", "step"]
    for objective, _ in PAPER:
        head += [f"{objective}: reasoning", "creative", "gap", "d"]
    head.append(f"follows the paper (gap ≥ {MIN_GAP}, d ≥ {MIN_D:g})")
    head.append("largest absolute gap at any step (entropy, perplexity)")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in sorted((r for r in runs if r.get("weights_per_family")), key=lambda r: (r["method"], r["seed"])):
        step = common_last_step(run)
        cells, follows = [LABELS[run["method"]], str(run["seed"]), step], []
        for objective, sign in PAPER:
            rea, cre, gap, d = separation(run, objective, step, sign)
            cells += [f"{rea:.3f}", f"{cre:.3f}", f"{gap:+.3f}", f"{d:+.2f}"]
            if gap >= MIN_GAP and d >= MIN_D:
                follows.append(objective)
        cells.append(" and ".join(follows) or "neither")
        both = sorted(
            set(run["weights_per_family"]["reasoning"]) & set(run["weights_per_family"]["creative"]), key=int
        )
        largest = [max(abs(separation(run, o, s, 1)[2]) for s in both) for o, _ in PAPER]
        cells.append(", ".join(f"{g:.3f}" for g in largest))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def family_weights_table(runs: list[dict], methods: list[str]) -> str:
    """Per Conductor run of ``methods``: mean E[w_k | h] of every objective per family at the last step whose batch
    held both families, and the largest |creative − reasoning| gap over the objectives at that step."""
    head = ["method", "seed", "step", "family", *OBJECTIVES, "largest gap between the families"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    chosen = [r for r in runs if r["method"] in methods and r.get("weights_per_family")]
    for run in sorted(chosen, key=lambda r: (methods.index(r["method"]), r["seed"])):
        step = common_last_step(run)
        means = {f: run["weights_per_family"][f][step]["mean"] for f in FAMILIES}
        gap = max(abs(means["creative"][o] - means["reasoning"][o]) for o in OBJECTIVES)
        for family in FAMILIES:
            cells = [LABELS[run["method"]], str(run["seed"]), step, family]
            cells += [f"{means[family][o]:.3f}" for o in OBJECTIVES]
            cells.append(f"{gap:.3f}" if family == FAMILIES[0] else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answers_section(runs: list[dict], methods: list[str], per_family: int = 2) -> str:
    """The first held-out answers of seed 0 (and of the initial model): greedy reasoning, one creative draw."""
    lines = []
    for method in ["base", *methods]:
        run = next((r for r in runs if r["method"] == method and r["seed"] in (None, 0)), None)
        if run is None:
            continue
        shown = run["answers"]["reasoning"][:per_family] + [a[0] for a in run["answers"]["creative"][:per_family]]
        lines.append(f"- {LABELS[method]}: " + "; ".join(json.dumps(a[:160], ensure_ascii=False) for a in shown))
    return "\n".join(lines)


def plot(runs: list[dict], methods: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    colors = {"reasoning": "tab:blue", "creative": "tab:orange"}
    conductor = [m for m in methods if any(r["method"] == m and r.get("weights_per_family") for r in runs)]
    if conductor:  # (a): E[w | h] per family against the step; thin lines single seeds, thick the mean
        fig, axes = plt.subplots(len(conductor), 4, figsize=(16, 3.6 * len(conductor)), squeeze=False)
        for row, method in enumerate(conductor):
            rs = [r for r in runs if r["method"] == method]
            for col, objective in enumerate(OBJECTIVES):
                ax = axes[row][col]
                for family in FAMILIES:
                    by_step: dict[int, list[float]] = {}
                    for r in rs:
                        steps = r["weights_per_family"][family]
                        xs = sorted(int(s) for s in steps)
                        ys = [steps[str(s)]["mean"][objective] for s in xs]
                        for x, y in zip(xs, ys, strict=True):
                            by_step.setdefault(x, []).append(y)
                        ax.plot(xs, ys, color=colors[family], alpha=0.35, linewidth=1)
                    xs = sorted(by_step)
                    ax.plot(xs, [statistics.mean(by_step[x]) for x in xs], color=colors[family], linewidth=2.5,
                            label=family)  # fmt: skip
                ax.set(xlabel="GRPO step", ylabel="mean E[w | h]")
                ax.set_title(textwrap.fill(f"{LABELS[method]}: {objective}", 40), fontsize=9)  # long labels wrap
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / FIGURES[0])
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)

    trained = [m for m in methods if any(r["method"] == m for r in runs)]
    base = next((r for r in runs if r["method"] == "base"), None)
    if trained:  # (b): held-out metrics, a dot per seed, a bar for the mean
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, (key, label) in zip(axes, METRICS[:2], strict=True):
            for i, method in enumerate(trained):
                values = [r[key] for r in runs if r["method"] == method]
                ax.bar(i, statistics.mean(values), color="lightgray")
                ax.plot([i] * len(values), values, "o", color="black", markersize=4)
            if base is not None:
                ax.axhline(base[key], color="tab:red", linestyle="--", label="initial model")
                ax.legend(fontsize=8)
            ax.set_xticks(range(len(trained)), [LABELS[m] for m in trained], rotation=20, ha="right", fontsize=8)
            ax.set(title=f"held-out {label}", ylabel=label)
        fig.tight_layout()
        paths.append(out_dir / FIGURES[1])
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)

        # Training objectives and the KL, mean over seeds. `perplexity` is a rank within each group of 4, so its
        # batch mean is 0.5 at every step: the KL takes its panel.
        panels = [(train_tag(objective_key(o)), lambda r, o=o: r["objectives_per_step"][o]) for o in OBJECTIVES[:3]]
        panels.append(("train/kl", lambda r: r["kl_per_step"]))
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
        for ax, (title, values) in zip(axes, panels, strict=True):
            for method in trained:
                curves = [values(r) for r in runs if r["method"] == method]
                mean = [statistics.mean(c[i] for c in curves) for i in range(min(map(len, curves)))]
                ax.plot(range(1, len(mean) + 1), mean, marker="o", markersize=3, label=LABELS[method])
            ax.set(title=title, xlabel="GRPO step", ylabel="batch mean (mean over seeds)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / FIGURES[2])
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def report(workdir: Path, methods: list[str]) -> str:
    """Write WORKDIR/summary.md, summary.json and the figures; return the summary's text."""
    workdir = Path(workdir)
    runs = load(workdir)
    machine = workdir / "machine.json"
    trained = [r for r in runs if r["method"] != "base"]
    text = "## (b) Held-out comparison\n\n" + heldout_table(runs, methods) + "\n"
    paired = paired_table(runs, methods)
    if paired:
        text += f"\nPaired by seed, {LABELS[methods[0]]} minus each row (95 % t interval; per seed):\n\n{paired}\n"
    signal = target_signal_table(runs)
    if signal:
        text += "\nThe target meta-reward's signal per run (only labelled groups update the Conductor):\n\n"
        text += signal + "\n"
    if any(r.get("weights_per_family") for r in runs):
        text += "\n## (a) The Conductor's weights per family at the last step\n\n" + pattern_table(runs) + "\n"
        text += "\nEvery objective's weight per family:\n\n" + family_weights_table(runs, methods) + "\n"
    text += "\n## Held-out answers (seed 0)\n\n" + answers_section(runs, methods) + "\n"
    if trained:
        train_s = [r["train_s"] for r in trained]
        text += (
            f"\n{len(trained)} training runs: {statistics.mean(train_s):.0f} s each on average "
            f"({min(train_s):.0f} to {max(train_s):.0f} s), {sum(train_s) + sum(r['eval_s'] for r in runs):.0f} s "
            "in all with scoring\n"
        )
    if machine.is_file():
        text += f"machine: {json.loads(machine.read_text())['cpu']}\n"
    for path in plot(runs, methods, workdir):
        text += f"figure: {path}\n"
    (workdir / "summary.md").write_text(text)
    summary = {
        "heldout": {m: {k: [r[k] for r in runs if r["method"] == m] for k, _ in METRICS} for m in ["base", *methods]},
        "conductor_weights_per_family": {
            f"{r['method']}-seed{r['seed']}": r["weights_per_family"] for r in runs if r.get("weights_per_family")
        },
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return text
