"""Summarize a finished run from the TensorBoard events OpenRLHF wrote (``--logger.tensorboard_dir``).

    python -m openrlhf_maestro.report RUN_DIR [--timing NAME=SECONDS ...]
        [--weights-log FILE --data PROMPTS.jsonl --category-key KEY] [--plot OUT.png]
        [--compare-models INITIAL_DIR --prompts HELDOUT.jsonl [--per-category N] [--reward-file FILE.py]]

``RUN_DIR`` is the run's output folder as laid out by ``examples/scripts/train_grpo_tiny_cpu.sh``:
``tensorboard/`` (events), ``model/`` (the saved actor) and, with ``--runtime.verify_weight_sync``,
``model/weight_sync_check.json``. Prints per-step times and metrics, each objective's mean per step, and
the stage timings given. ``--compare-models`` answers the first N prompts of each category greedily with
the initial model and with the trained one (``RUN_DIR/model``), side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

from openrlhf_maestro.metric_names import AGGREGATOR_WEIGHT_PREFIX, OBJECTIVE_PREFIX, objective_key, train_tag

# (TensorBoard tag, column header) of the per-step table
STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train/timing/step_total", "step s"),
    ("train/timing/generation", "gen s"),
    ("train/timing/make_experience", "exp s"),
    ("train/timing/ppo_train", "train s"),
    ("train/timing/broadcast", "sync s"),
    ("train/reward", "reward"),
    ("train/kl", "kl"),
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


def step_table(scalars: dict[str, dict[int, float]], columns: tuple[tuple[str, str], ...] = STEP_COLUMNS) -> str:
    """One row per step (the steps of ``train/timing/step_total``), one column per tag present."""
    steps = sorted(scalars.get("train/timing/step_total", {}))
    cols = [(tag, head) for tag, head in columns if tag in scalars]
    lines = ["step " + " ".join(f"{head:>10}" for _, head in cols)]
    for step in steps:
        cells = []
        for tag, _ in cols:
            value = scalars[tag].get(step, math.nan)
            cells.append(f"{value:>10.3f}")
        lines.append(f"{step:>4} " + " ".join(cells))
    return "\n".join(lines)


def objective_columns(scalars: dict[str, dict[int, float]]) -> tuple[tuple[str, str], ...]:
    """(tag, name) of every objective the run logged (``train/obj/<name>``: the reward function's and the
    plugin's model channels), sorted by name."""
    prefix = train_tag(OBJECTIVE_PREFIX)
    return tuple((t, t.removeprefix(prefix)) for t in sorted(scalars) if t.startswith(prefix))


def stage_timings(timings: dict[str, float], step_seconds: float | None = None) -> str:
    """``stage timings: NAME 1.0s, ...``; with ``step_seconds`` (the steps' total), the ``run`` stage is followed
    by the part of it spent outside the steps (Ray, vLLM and DeepSpeed start-up, saving, shutdown)."""
    parts = []
    for name, seconds in timings.items():
        parts.append(f"{name} {seconds:.1f}s")
        if name == "run" and step_seconds is not None:
            parts[-1] += f" (start-up and shutdown {seconds - step_seconds:.1f}s)"
    return "stage timings: " + ", ".join(parts)


def summary(run_dir: str | Path, timings: dict[str, float] | None = None) -> str:
    run = Path(run_dir)
    scalars = latest_run_scalars(run / "tensorboard")
    step_total = scalars.get("train/timing/step_total", {})
    out = [f"GRPO steps run: {len(step_total)}", step_table(scalars)]
    objectives = objective_columns(scalars)
    if objectives:
        out.append("\nobjectives per step (mean over the step's responses, before any weighting):")
        out.append(step_table(scalars, objectives))
        if train_tag(objective_key("perplexity")) in scalars:
            out.append("(perplexity is each response's rank within its group, so its mean is 0.5 at every step)")
    if timings:
        out.append(stage_timings(timings, sum(step_total.values()) if step_total else None))
    check = run / "model" / "weight_sync_check.json"
    if check.is_file():
        engines = json.loads(check.read_text())["engines"]
        ok = all(e["equal"] for e in engines)
        verdict = "match" if ok else "DIFFER from"
        line = f"vLLM after the last sync: weights and log-probabilities {verdict} the saved actor"
        gen = [e["generation"] for e in engines if "generation" in e]
        if gen:
            worst = max(g["mean_abs_diff"] for g in gen)
            line += (
                f" (mean |Δ log p| {worst:.3g} nats over {gen[0]['tokens']} tokens, "
                f"tolerance {gen[0]['tolerance']:.3g}"
            )
            initial = [g["initial_mean_abs_diff"] for g in gen if g["initial_mean_abs_diff"] is not None]
            if initial:
                line += f"; {min(initial):.3g} against the initial model"
            line += ")"
        out.append(f"{line}\n  report: {check}")
    out.append(f"outputs: model {run / 'model'}, TensorBoard {run / 'tensorboard'}")
    return "\n".join(out)


def read_rows(path: str | Path, keys: tuple[str, ...]) -> list[dict]:
    """The JSON rows of a JSONL file; ValueError naming the line if one lacks any of ``keys``."""
    rows = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            missing = [k for k in keys if k not in row]
            if missing:
                raise ValueError(f"{path}:{line_no} has no " + " or ".join(f"'{k}'" for k in missing) + " field")
            rows.append(row)
    return rows


def weights_by_category(
    weights_log: str | Path, data: str | Path, category_key: str = "category", input_key: str = "input"
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, int]]:
    """Mean weight per objective for each prompt category (a maestro or random run's weights log).

    Joins ``--reward.weights_log`` records (whose ``prompt`` is the chat-templated prompt) with the prompt
    dataset by finding each dataset input inside the record's prompt.

    Returns:
        objectives, {category: {objective: mean weight}}, {category: responses counted}.
    """
    inputs = [(str(row[input_key]), str(row[category_key])) for row in read_rows(data, (input_key, category_key))]
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
    """PNG: the mean weight of each objective against the step (``train/aggregator/weight/<objective>``, logged by
    maestro and random), and per category, if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = train_tag(AGGREGATOR_WEIGHT_PREFIX)
    tags = sorted(t for t in scalars if t.startswith(prefix))
    if not tags:
        raise ValueError(f"no {prefix}* scalars in this run: was it run with --reward.aggregator maestro (or random)?")
    panels = 2 if by_category else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for tag in tags:
        steps = sorted(scalars[tag])
        ax.plot(steps, [scalars[tag][s] for s in steps], marker="o", label=tag.removeprefix(prefix))
    ax.set(xlabel="GRPO step", ylabel="mean weight", title="mean weights per step")
    ax.legend()
    if by_category:
        ax = axes[0][1]
        names = [t.removeprefix(prefix) for t in tags]
        width = 0.8 / max(len(by_category), 1)
        for i, (category, row) in enumerate(by_category.items()):
            ax.bar([j + i * width for j in range(len(names))], [row[n] for n in names], width, label=category)
        ax.set_xticks([j + width * (len(by_category) - 1) / 2 for j in range(len(names))], names)
        ax.set(ylabel="mean weight", title="mean weights per prompt category")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def first_per_category(rows: list[dict], category_key: str, per_category: int) -> list[dict]:
    """The first ``per_category`` rows of each category, grouped by category (categories sorted)."""
    taken: dict[str, list[dict]] = {}
    for row in rows:
        picked = taken.setdefault(str(row[category_key]), [])
        if len(picked) < per_category:
            picked.append(row)
    return [row for category in sorted(taken) for row in taken[category]]


def generate_greedy(model_dir: str | Path, prompts: list[str], max_new_tokens: int) -> tuple[list[str], list[str]]:
    """Greedy answers of a Hugging Face checkpoint to ``prompts`` (user turns, through its chat template),
    in one left-padded batch. Returns the templated prompts and the answers (special tokens dropped)."""
    return ChatModel(model_dir).generate(prompts, max_new_tokens)


class ChatModel:
    """A Hugging Face checkpoint that answers user turns through its chat template, on the CPU."""

    def __init__(self, model_dir: str | Path) -> None:
        with warnings.catch_warnings():  # torch.cuda's pynvml notice, irrelevant on a CPU
            warnings.simplefilter("ignore", FutureWarning)
            import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").eval()

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        samples: int = 1,
        temperature: float | None = None,
        seed: int = 0,
    ) -> tuple[list[str], list[str]]:
        """Answers in one left-padded batch: greedy (``temperature`` None), or ``samples`` draws per prompt at
        ``temperature`` from torch's generator seeded with ``seed``. Returns the templated prompts and the
        answers (special tokens dropped), ``samples`` consecutive answers per prompt."""
        import torch

        tokenizer = self.tokenizer
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if temperature is not None:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
            sampling["num_return_sequences"] = samples
            torch.manual_seed(seed)
        elif samples != 1:
            raise ValueError(f"samples={samples} needs a temperature: greedy decoding gives one answer per prompt")
        # One thread: on a 2-core machine whose cores are shared, two OpenMP threads made this 20x slower
        # (2.1 s against 0.10 s per token for SmolLM2-135M, batch 6).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:  # generate() runs without autograd
            out = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        finally:
            torch.set_num_threads(threads)
        prompt_len = batch["input_ids"].shape[1]
        return texts, [tokenizer.decode(row[prompt_len:], skip_special_tokens=True).strip() for row in out]


def load_reward_func(path: str | Path):
    """``reward_func`` of a ``--reward.remote_url`` file, loaded as OpenRLHF loads it."""
    from openrlhf_maestro.method import load_module

    return load_module(str(path)).reward_func


def compare_models(
    initial_dir: str | Path,
    trained_dir: str | Path,
    prompts_file: str | Path,
    per_category: int = 2,
    max_new_tokens: int = 64,
    reward_file: str | Path | None = None,
    input_key: str = "input",
    category_key: str = "category",
    label_key: str = "label",
) -> str:
    """The same prompts answered greedily by the initial and the trained model, side by side; with
    ``reward_file``, each answer's objectives (``obj/<name>`` of its ``reward_func``) next to it."""
    start = time.monotonic()
    keys = (input_key, category_key) + ((label_key,) if reward_file else ())
    rows = first_per_category(read_rows(prompts_file, keys), category_key, per_category)
    inputs = [str(row[input_key]) for row in rows]
    texts, before = generate_greedy(initial_dir, inputs, max_new_tokens)
    _, after = generate_greedy(trained_dir, inputs, max_new_tokens)
    reward_func = load_reward_func(reward_file) if reward_file else None

    def scored(text: str, prompt: str, row: dict) -> str:
        if reward_func is None:
            return ""
        logs = reward_func([prompt + text], [prompt], [str(row[label_key])])["extra_logs"]
        return " ".join(f"{k.removeprefix(OBJECTIVE_PREFIX)}={v:.2f}" for k, v in logs.items()) + "  "

    lines = [
        f"responses before and after training (greedy, at most {max_new_tokens} new tokens, "
        f"{per_category} prompts per category from {prompts_file}; {time.monotonic() - start:.1f}s):"
    ]
    for row, prompt, old, new in zip(rows, texts, before, after, strict=True):
        reference = f" (reference: {row[label_key]})" if label_key in row else ""
        lines.append(f"[{row[category_key]}] {row[input_key]}{reference}")
        lines.append(f"  before  {scored(old, prompt, row)}{json.dumps(old, ensure_ascii=False)}")
        shown = "(the same text)" if new == old else json.dumps(new, ensure_ascii=False)
        lines.append(f"  after   {scored(new, prompt, row)}{shown}")
    return "\n".join(lines)


def _parse_timing(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timing takes NAME=SECONDS, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m openrlhf_maestro.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run's output folder (holds tensorboard/ and model/)")
    parser.add_argument(
        "--timing",
        type=_parse_timing,
        action="append",
        default=[],
        help="NAME=SECONDS, repeatable; printed last, with the report's own time and the total after 'setup'",
    )
    parser.add_argument("--weights-log", type=Path, help="a --reward.weights_log file of the run")
    parser.add_argument("--data", type=Path, help="the prompt dataset (JSONL) whose categories to group by")
    parser.add_argument("--category-key", default="category", help="category field of --data (default: category)")
    parser.add_argument("--input-key", default="input", help="prompt field of --data (default: input)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the weights per step here (maestro, random)")
    parser.add_argument(
        "--compare-models",
        type=Path,
        metavar="INITIAL_DIR",
        help="answer --prompts greedily with this model and with RUN_DIR/model, and print both",
    )
    parser.add_argument("--prompts", type=Path, help="JSONL prompts for --compare-models (input, category, label)")
    parser.add_argument("--per-category", type=int, default=2, help="prompts per category to compare (default: 2)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per compared answer (default: 64)")
    parser.add_argument("--reward-file", type=Path, help="score each compared answer with this reward file")
    parser.add_argument("--label-key", default="label", help="reference field of --prompts (default: label)")
    args = parser.parse_args(argv)
    if bool(args.weights_log) != bool(args.data):
        parser.error("--weights-log and --data go together")
    if bool(args.compare_models) != bool(args.prompts):
        parser.error("--compare-models and --prompts go together")
    print(summary(args.run_dir))
    scalars = latest_run_scalars(Path(args.run_dir) / "tensorboard")
    by_category = None
    if args.weights_log:
        objectives, by_category, counts = weights_by_category(
            args.weights_log, args.data, args.category_key, args.input_key
        )
        print("\nmean weights per prompt category (all steps):")
        print(category_table(objectives, by_category, counts))
    if args.plot:
        print(f"plot: {plot_weights(scalars, args.plot, by_category)}")
    if args.compare_models:
        print()
        print(
            compare_models(
                args.compare_models,
                Path(args.run_dir) / "model",
                args.prompts,
                args.per_category,
                args.max_new_tokens,
                args.reward_file,
                args.input_key,
                args.category_key,
                args.label_key,
            )
        )
    if args.timing:
        timings = {**dict(args.timing), "report": time.monotonic() - start}
        step_total = scalars.get("train/timing/step_total", {})
        print("\n" + stage_timings(timings, sum(step_total.values()) if step_total else None))
        after_setup = sum(v for k, v in timings.items() if k != "setup")
        print(f"wall time after setup: {after_setup:.1f}s ({after_setup / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
