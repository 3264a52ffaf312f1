"""Tables and figures of the real-model benchmark (``bench/bench_real_model.py``) from its finished runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

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
}


def load(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(workdir) / "runs").glob("*.json"))]


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


def report(workdir: Path, methods: list[str]) -> str:
    runs = load(workdir)
    text = "## Held-out comparison\n\n" + heldout_table(runs, methods) + "\n"
    (Path(workdir) / "summary.md").write_text(text)
    return text
