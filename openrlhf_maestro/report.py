"""Summarize a finished run from the TensorBoard events OpenRLHF wrote (``--logger.tensorboard_dir``).

    python -m openrlhf_maestro.report RUN_DIR [--timing NAME=SECONDS ...]
        [--weights-log FILE --data PROMPTS.jsonl --category-key KEY] [--plot OUT.png]

``RUN_DIR`` is the run's output folder as laid out by ``examples/scripts/train_grpo_tiny_cpu.sh``:
``tensorboard/`` (events), ``model/`` (the saved actor) and, with ``--runtime.verify_weight_sync``,
``model/weight_sync_check.json``. Prints per-step times and metrics and the stage timings given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# (TensorBoard tag, column header) of the per-step table
STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train/timing/step_total", "step s"),
    ("train/timing/generation", "gen s"),
    ("train/timing/make_experience", "exp s"),
    ("train/timing/ppo_train", "train s"),
    ("train/timing/broadcast", "sync s"),
    ("train/reward", "reward"),
    ("train/actor_grad_norm", "grad norm"),
    ("train/response_length", "resp len"),
)


def find_event_dirs(tensorboard_dir: str | Path) -> list[Path]:
    """Folders under ``tensorboard_dir`` that hold event files, oldest first."""
    dirs = {p.parent for p in Path(tensorboard_dir).rglob("events.out.tfevents.*")}
    return sorted(dirs, key=lambda d: min(p.stat().st_mtime for p in d.glob("events.out.tfevents.*")))


def load_scalars(event_dir: str | Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} for every scalar in one run's event files (the last value wins per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def latest_run_scalars(tensorboard_dir: str | Path) -> dict[str, dict[int, float]]:
    dirs = find_event_dirs(tensorboard_dir)
    if not dirs:
        raise FileNotFoundError(f"no TensorBoard event files under {tensorboard_dir}: did the run reach step 1?")
    return load_scalars(dirs[-1])


def step_table(scalars: dict[str, dict[int, float]]) -> str:
    steps = sorted(scalars.get("train/timing/step_total", {}))
    cols = [(tag, head) for tag, head in STEP_COLUMNS if tag in scalars]
    lines = ["step " + " ".join(f"{head:>10}" for _, head in cols)]
    for step in steps:
        cells = []
        for tag, _ in cols:
            value = scalars[tag].get(step, math.nan)
            cells.append(f"{value:>10.3f}")
        lines.append(f"{step:>4} " + " ".join(cells))
    return "\n".join(lines)


def summary(run_dir: str | Path, timings: dict[str, float] | None = None) -> str:
    run = Path(run_dir)
    scalars = latest_run_scalars(run / "tensorboard")
    step_total = scalars.get("train/timing/step_total", {})
    out = [f"GRPO steps run: {len(step_total)}", step_table(scalars)]
    objectives = sorted(t for t in scalars if t.startswith("train/obj/"))
    if objectives:
        last = max(step_total) if step_total else None
        out.append(
            "objectives at the last step: "
            + ", ".join(f"{t.removeprefix('train/obj/')}={scalars[t].get(last, math.nan):.3f}" for t in objectives)
        )
    if timings:
        if "run" in timings and step_total:
            timings = {**timings, "start-up and shutdown": timings["run"] - sum(step_total.values())}
        out.append("stage timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    check = run / "model" / "weight_sync_check.json"
    if check.is_file():
        engines = json.loads(check.read_text())["engines"]
        ok = all(e["equal"] for e in engines)
        verdict = "match" if ok else "DIFFER from"
        line = f"vLLM after the last sync: weights and log-probabilities {verdict} the saved actor"
        gen = [e["generation"] for e in engines if "generation" in e]
        if gen:
            worst = max(g["max_abs_diff"] for g in gen)
            line += (
                f" (max |Δ log p| {worst:.3g} nats over {gen[0]['tokens']} tokens, tolerance {gen[0]['tolerance']:.3g}"
            )
            initial = [g["initial_max_abs_diff"] for g in gen if g["initial_max_abs_diff"] is not None]
            if initial:
                line += f"; {min(initial):.3g} against the initial model"
            line += ")"
        out.append(f"{line}\n  report: {check}")
    out.append(f"outputs: model {run / 'model'}, TensorBoard {run / 'tensorboard'}")
    return "\n".join(out)


def weights_by_category(
    weights_log: str | Path, data: str | Path, category_key: str = "category", input_key: str = "input"
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, int]]:
    """Mean Conductor weight per objective for each prompt category.

    Joins ``--reward.weights_log`` records (whose ``prompt`` is the chat-templated prompt) with the prompt
    dataset by finding each dataset input inside the record's prompt.

    Returns:
        objectives, {category: {objective: mean weight}}, {category: responses counted}.
    """
    inputs = []
    for line_no, line in enumerate(Path(data).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if category_key not in row or input_key not in row:
                raise ValueError(f"{data}:{line_no} has no '{category_key}' or '{input_key}' field")
            inputs.append((str(row[input_key]), str(row[category_key])))
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    objectives: list[str] = []
    for line_no, line in enumerate(Path(weights_log).read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        objectives = objectives or list(record["weights"])
        category = next((c for text, c in inputs if text in record["prompt"]), None)
        if category is None:
            raise ValueError(f"{weights_log}:{line_no}: its prompt matches no '{input_key}' of {data}")
        acc = sums.setdefault(category, dict.fromkeys(objectives, 0.0))
        for name, w in record["weights"].items():
            acc[name] += w
        counts[category] = counts.get(category, 0) + 1
    means = {c: {n: v / counts[c] for n, v in acc.items()} for c, acc in sorted(sums.items())}
    return objectives, means, counts


def category_table(objectives: list[str], means: dict[str, dict[str, float]], counts: dict[str, int]) -> str:
    lines = [f"{'category':<12} {'responses':>9} " + " ".join(f"{n:>9}" for n in objectives)]
    for category, row in means.items():
        lines.append(f"{category:<12} {counts[category]:>9} " + " ".join(f"{row[n]:>9.3f}" for n in objectives))
    return "\n".join(lines)


def plot_weights(
    scalars: dict[str, dict[int, float]], path: str | Path, by_category: dict[str, dict[str, float]] | None = None
) -> Path:
    """PNG: the mean Conductor weight of each objective against the step (and per category, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = "train/maestro/weight/"
    tags = sorted(t for t in scalars if t.startswith(prefix))
    if not tags:
        raise ValueError("no train/maestro/weight/* scalars in this run: was it run with --reward.aggregator maestro?")
    panels = 2 if by_category else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for tag in tags:
        steps = sorted(scalars[tag])
        ax.plot(steps, [scalars[tag][s] for s in steps], marker="o", label=tag.removeprefix(prefix))
    ax.set(xlabel="GRPO step", ylabel="mean weight", title="Conductor weights per step")
    ax.legend()
    if by_category:
        ax = axes[0][1]
        names = [t.removeprefix(prefix) for t in tags]
        width = 0.8 / max(len(by_category), 1)
        for i, (category, row) in enumerate(by_category.items()):
            ax.bar([j + i * width for j in range(len(names))], [row[n] for n in names], width, label=category)
        ax.set_xticks([j + width * (len(by_category) - 1) / 2 for j in range(len(names))], names)
        ax.set(ylabel="mean weight", title="Conductor weights per prompt category")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _parse_timing(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timing takes NAME=SECONDS, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openrlhf_maestro.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run's output folder (holds tensorboard/ and model/)")
    parser.add_argument("--timing", type=_parse_timing, action="append", default=[], help="NAME=SECONDS, repeatable")
    parser.add_argument("--weights-log", type=Path, help="a --reward.weights_log file of the run")
    parser.add_argument("--data", type=Path, help="the prompt dataset (JSONL) whose categories to group by")
    parser.add_argument("--category-key", default="category", help="category field of --data (default: category)")
    parser.add_argument("--input-key", default="input", help="prompt field of --data (default: input)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the Conductor's weights here")
    args = parser.parse_args(argv)
    if bool(args.weights_log) != bool(args.data):
        parser.error("--weights-log and --data go together")
    print(summary(args.run_dir, dict(args.timing)))
    by_category = None
    if args.weights_log:
        objectives, by_category, counts = weights_by_category(
            args.weights_log, args.data, args.category_key, args.input_key
        )
        print("\nmean Conductor weights per prompt category (all steps):")
        print(category_table(objectives, by_category, counts))
    if args.plot:
        scalars = latest_run_scalars(Path(args.run_dir) / "tensorboard")
        print(f"plot: {plot_weights(scalars, args.plot, by_category)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
