"""Summarize a finished run from the TensorBoard events OpenRLHF wrote (``--logger.tensorboard_dir``).

    python -m openrlhf_maestro.report RUN_DIR [--timing NAME=SECONDS ...]

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
        out.append(f"vLLM weights after the last sync {'equal' if ok else 'DIFFER from'} the saved actor ({check})")
    out.append(f"outputs: model {run / 'model'}, TensorBoard {run / 'tensorboard'}")
    return "\n".join(out)


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
    args = parser.parse_args(argv)
    print(summary(args.run_dir, dict(args.timing)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
