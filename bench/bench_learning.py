"""Does MAESTRO learn a better trade-off than static weights when the right one depends on the prompt?

    python bench/bench_learning.py                                   # the full comparison (~10 min on 2 cores)
    python bench/bench_learning.py --seeds 0 --steps 20 --workdir outputs/bench-learning-small
    python bench/bench_learning.py --report-only                     # table and plots from finished runs

The task (``bench/learning_task.py``): "echo" prompts want the exact word, "story" prompts want varied
writing; the training rewards are `match`, `variety` and a shared `length`, which conflict. Held-out metrics
per family are never training rewards.

1. Pre-train a tiny Qwen2 (``openrlhf_maestro.tiny_model``: 2 layers, width 128) on a behaviour mixture of the
   task's own text, once, cached in WORKDIR/pretrained.
2. GRPO from that checkpoint, one run per (method, seed), all with the same budget: ``--steps`` steps of
   ``--prompts-per-step`` prompts (half per family) × ``--samples`` responses, sampled at temperature 1.
   Each step is one on-policy update (so PPO's ratio is 1 and its loss is the policy gradient):

       h_ij = the policy's final-normed hidden state (input of lm_head) at response j's last token
              (maestro-prompt: at the prompt's last token, like --reward.context prompt)
       R_ij = aggregator(r_ij, group, h_ij);   Â_ij = (R_ij − mean_i R) / (std_i R + 1e-9)   (OpenRLHF's GRPO)
       L(θ) = − Σ_ij Σ_t Â_ij log π_θ(y_ijt | ·) / Σ_ij |y_ij|;  then aggregator.feedback(Â)

   The aggregators are the plugin's own (``openrlhf_maestro.method``): maestro (both contexts), sum with
   equal weights, sum with each single reward, sum on a 10-point grid of the simplex (seed 0 only; the best
   on the `val` topics then runs on every seed), maestro with that same val-selected point as its prior
   w_prior (maestro-prior, every seed: both have seen the same information), gdpo and random emphasis.
   No KL term, no reference model.
3. Evaluate every ``--eval-every`` steps on the held-out `test` topics (``--eval-samples`` sampled responses
   per prompt, a fixed sampling seed, so every run is scored on the same draws of its own policy).

The OpenRLHF pipeline is not used here: on this CPU it spends ~80 s starting up per run, and the 50 runs
this needs would take hours. The aggregators, the hidden-state context and the advantage are the ones the
plugin runs inside OpenRLHF (the e2e tests check that its advantages equal OpenRLHF's own).

Writes WORKDIR/runs/<method>-seed<k>.json per run (finished runs are skipped on a rerun; a grid point's and
maestro-prior's names hold their weights, e.g. maestro-prior-210-seed0.json), then
WORKDIR/summary.md, summary.json, learning_curves.png and conductor_weights.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning_task as task  # noqa: E402
from learning_report import (  # noqa: E402
    GRID,
    LABELS,
    TARGET_LRS,
    best_grid,
    canonical,
    load_runs,
    maestro_prior,
    report,
    sum_target_candidates,
    target_choices,
    target_report,
)

PRETRAIN_LR = 1.5e-3
TARGET = "family"  # the target objective's name: the family metric on the labelled quarter
LABELLED = task.labelled_prompts()
BASE_METHODS = ["maestro", "maestro-prompt", "sum:1,1,1", "gdpo", "random", "sum:1,0,0", "sum:0,1,0", "sum:0,0,1"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=REPO / "outputs" / "bench-learning")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="RL seeds (default 0 1 2 3 4)")
    p.add_argument("--steps", type=int, default=100, help="GRPO steps per run (default 100)")
    p.add_argument("--prompts-per-step", type=int, default=16, help="prompts per step, half per family")
    p.add_argument("--samples", type=int, default=4, help="responses per prompt (the GRPO group)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="policy Adam learning rate")
    p.add_argument(
        "--conductor-lr",
        type=float,
        default=1e-2,
        help="MAESTRO's Conductor lr: MaestroConfig's 3e-4 is tuned for H=4096; docs/method.md scales it ~1/H",
    )
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-samples", type=int, default=4, help="sampled responses per held-out prompt")
    p.add_argument("--pretrain-steps", type=int, default=800)
    p.add_argument("--pretrain-lines", type=int, default=20000)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each")
    p.add_argument("--methods", nargs="+", default=None, help=f"subset of {list(LABELS)} (default all)")
    p.add_argument("--report-only", action="store_true", help="only the table and plots from finished runs")
    p.add_argument(
        "--comparison",
        choices=("aggregators", "target"),
        default="aggregators",
        help="aggregators: the table above; target: the alignment meta-reward with a target on a quarter of the "
        "train prompts against its information-matched baselines (docs/results.md)",
    )
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods or []) - set(LABELS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {list(LABELS)}")
    for name in ("steps", "prompts_per_step", "eval_every", "eval_samples", "jobs", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.samples < 2:
        p.error(f"--samples must be >= 2 (a GRPO group needs two responses), got {args.samples}")
    if args.prompts_per_step % 2:
        p.error(f"--prompts-per-step must be even (half per family), got {args.prompts_per_step}")
    return args


@dataclass(frozen=True)
class RunSpec:
    """One GRPO run: `method` is maestro | maestro-prompt | maestro-prior:a,b,c | gdpo | random | sum:a,b,c.

    a,b,c are weights on (match, variety, length): static for sum, the Conductor's w_prior for maestro-prior.
    """

    method: str
    seed: int
    pretrained: str
    out: str
    steps: int
    prompts_per_step: int
    samples: int
    max_new_tokens: int
    lr: float
    conductor_lr: float
    eval_every: int
    eval_samples: int


# ---- the policy -------------------------------------------------------------------------------------------------
def pretrain(workdir: Path, steps: int, n_lines: int) -> Path:
    """Tiny Qwen2 + tokenizer trained on the task's text, then `steps` of next-token training on it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_maestro import tiny_model

    out = workdir / "pretrained"
    if (out / "done.json").is_file():
        done = json.loads((out / "done.json").read_text())
        if (done["steps"], done["lines"]) != (steps, n_lines):
            raise SystemExit(
                f"{out} was pre-trained with --pretrain-steps {done['steps']} --pretrain-lines {done['lines']}, "
                f"not {steps} and {n_lines}: use another --workdir, or delete {out} to pre-train again"
            )
        print(f"pre-trained policy: reusing {out}", flush=True)
        return out
    lines = task.pretraining_corpus(n_lines)
    corpus = workdir / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines), encoding="utf-8")
    tiny_model.build(out, seed=0, corpus_files=[corpus])
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    texts = [line + tok.eos_token for line in lines]
    rng = random.Random(0)
    t0 = time.perf_counter()
    from tqdm import tqdm

    for step in (bar := tqdm(range(steps), desc="pre-training", unit="step", mininterval=5)):
        # Warm-up, then linear decay: at 3e-3 the copy ("echo w -> w") is learnt late and then lost again.
        lr = PRETRAIN_LR * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        enc = tok(rng.sample(texts, 64), return_tensors="pt", padding=True)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.to(torch.bfloat16).save_pretrained(out)
    (out / "done.json").write_text(
        json.dumps({"steps": steps, "lines": n_lines, "final_loss": loss.item(), "seconds": time.perf_counter() - t0})
    )
    return out


def make_aggregator(method: str, seed: int, hidden_size: int, conductor_lr: float):
    """The plugin's aggregator for a RunSpec.method (see RunSpec), seeded with the run's seed.

    `family:...` gives {family: SumAggregator}, one static sum per family (the caller routes each row).
    """
    from openrlhf_maestro.method import (
        GDPOAggregator,
        MaestroAggregator,
        RandomEmphasisAggregator,
        SumAggregator,
    )

    objectives = list(task.OBJECTIVES)
    if method.startswith("maestro-target:"):  # the alignment meta-reward, Conductor lr in the name
        lr = float(method.removeprefix("maestro-target:"))
        return MaestroAggregator(
            objectives, hidden_size=hidden_size, lr=lr, seed=seed, meta_reward="alignment", target=TARGET
        )
    if method.startswith("sum-target:"):  # the target as a 4th training objective, missing off the quarter
        agg = SumAggregator([*objectives, TARGET], weights=_weights(method, "sum-target:"))
        agg.accepts_missing = True  # what the integration sets under the skip_objective failure policy
        return agg
    if method.startswith("family:"):
        per_family = method.removeprefix("family:").split("+")
        return {
            f: SumAggregator(objectives, weights=_weights(w)) for f, w in zip(task.FAMILIES, per_family, strict=True)
        }
    if method in ("maestro", "maestro-prompt"):
        return MaestroAggregator(objectives, hidden_size=hidden_size, lr=conductor_lr, seed=seed)
    if method.startswith("maestro-prior:"):
        prior = [float(w) for w in method.removeprefix("maestro-prior:").split(",")]
        return MaestroAggregator(objectives, hidden_size=hidden_size, lr=conductor_lr, seed=seed, prior=prior)
    if method == "gdpo":
        return GDPOAggregator(objectives)
    if method == "random":
        return RandomEmphasisAggregator(objectives, seed=seed)
    if method.startswith("sum:"):
        return SumAggregator(objectives, weights=[float(w) for w in method[4:].split(",")])
    raise ValueError(
        f"unknown method {method!r}: maestro, maestro-prompt, maestro-prior:a,b,c, gdpo, random, sum:a,b,c, "
        "maestro-target:LR, sum-target:a,b,c,t or family:a,b,c+d,e,f"
    )


def _weights(text: str, prefix: str = "") -> list[float]:
    return [float(w) for w in text.removeprefix(prefix).split(",")]


def aggregate_step(agg, method: str, rows: list, responses: list[str], rewards, group_ids, h):
    """R (N,), the per-response weights (N, K) or None, and the metrics, for one training batch of `method`.

    The target (the family metric, on the labelled quarter of the `train` prompts only, NaN elsewhere) reaches
    maestro-target as `aggregate(..., target=)` and sum-target as a 4th objective; no other method sees it.
    """
    import torch

    if method.startswith("family:"):
        outs = {f: a.aggregate(rewards, group_ids) for f, a in agg.items()}
        echo = torch.tensor([r.family == "echo" for r in rows])
        return torch.where(echo, outs["echo"].rewards, outs["story"].rewards), None, {}
    if method.startswith(("maestro-target:", "sum-target:")):
        target = torch.tensor(
            [task.family_metric(r, y) if r in LABELLED else float("nan") for r, y in zip(rows, responses, strict=True)]
        )
        if method.startswith("sum-target:"):
            out = agg.aggregate(torch.cat([rewards, target[:, None]], 1), group_ids, h)
            return out.rewards, None, {}
        out = agg.aggregate(rewards, group_ids, h, target=target)
    else:
        out = agg.aggregate(rewards, group_ids, h)
    varies = method.startswith(("maestro", "random"))  # the weights vary per response
    return out.rewards, out.weights if varies else None, out.metrics


def generate(model, tok, texts: list[str], max_new_tokens: int):
    """Sample one response per text at temperature 1. Returns (ids (B, P+T), attention mask, P, response mask)."""
    import torch

    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    p = enc.input_ids.shape[1]
    resp = ids[:, p:]
    # Up to and including the first EOS; generate pads what follows it.
    after_eos = (resp == tok.eos_token_id).long().cumsum(-1) - (resp == tok.eos_token_id).long()
    resp_mask = after_eos == 0
    mask = torch.cat([enc.attention_mask.bool(), resp_mask], dim=1)
    return ids, mask, p, resp_mask


def decode(tok, ids, p: int, resp_mask) -> list[str]:
    return [tok.decode(row[p:][m], skip_special_tokens=True) for row, m in zip(ids, resp_mask, strict=True)]


def evaluate(model, tok, prompts: list, samples: int, max_new_tokens: int, seed: int = 1234) -> dict:
    """Per-family metric and word count on `samples` draws per prompt, with a fixed sampling seed.

    Also returns `examples`: the first response to each of the first three prompts of each family.
    """
    import torch

    rows = [p for p in prompts for _ in range(samples)]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ids, _, p, resp_mask = generate(model, tok, [r.text for r in rows], max_new_tokens)
    responses = decode(tok, ids, p, resp_mask)
    examples = {}
    for row, response in zip(rows, responses, strict=True):
        if row.text not in examples and sum(r.startswith(row.family) for r in examples) < 3:
            examples[row.text] = response
    return {**task.summarize(rows, responses), "examples": examples}


def train_run(spec: RunSpec) -> dict:
    """One GRPO run (see the module docstring); writes spec.out as JSON and returns the record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_maestro.method import group_norm
    from openrlhf_maestro.metric_names import (
        AGGREGATOR_EMPHASIS_PREFIX,
        AGGREGATOR_WEIGHT_PREFIX,
        CONDUCTOR_PREFIX,
        reward_key,
    )

    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    tok = AutoTokenizer.from_pretrained(spec.pretrained)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec.pretrained, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    agg = make_aggregator(spec.method, spec.seed, model.config.hidden_size, spec.conductor_lr)
    train = {f: [p for p in task.prompts("train") if p.family == f] for f in task.FAMILIES}
    test, val = task.prompts("test"), task.prompts("val")
    t0 = time.perf_counter()
    history = [{"step": 0, **evaluate(model, tok, test, spec.eval_samples, spec.max_new_tokens)}]
    log = []
    for step in range(1, spec.steps + 1):
        batch = [p for f in task.FAMILIES for p in rng.sample(train[f], spec.prompts_per_step // 2)]
        rows = [p for p in batch for _ in range(spec.samples)]
        group_ids = torch.arange(len(rows)) // spec.samples
        model.eval()
        ids, mask, p, resp_mask = generate(model, tok, [r.text for r in rows], spec.max_new_tokens)
        responses = decode(tok, ids, p, resp_mask)
        rewards = torch.tensor([task.objective_rewards(r, y) for r, y in zip(rows, responses, strict=True)])

        # One forward gives both log π_θ and h (the input of lm_head, i.e. after the final norm).
        model.train()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = model.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions).last_hidden_state
        logits = model.lm_head(hidden[:, p - 1 : -1]).float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, p:, None]).squeeze(-1)  # (N, T)
        last = p + resp_mask.long().sum(-1) - 1  # the response's last token (EOS if it stopped)
        # --reward.context response (the paper's): h at the response's last token; prompt: at the prompt's last.
        # maestro-target's action is per prompt, so it reads h at the prompt (context prompt), as maestro-prompt.
        at_prompt = spec.method == "maestro-prompt" or spec.method.startswith("maestro-target:")
        h = hidden[:, p - 1] if at_prompt else hidden[torch.arange(len(rows)), last]
        h = h.detach()

        scalar, weights, agg_metrics = aggregate_step(agg, spec.method, rows, responses, rewards, group_ids, h)
        adv = group_norm(scalar, group_ids)
        loss = -(adv[:, None] * logp * resp_mask).sum() / resp_mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meta = agg.feedback(adv) if hasattr(agg, "feedback") else {}

        entry = {
            "step": step,
            **{reward_key(k): v for k, v in zip(task.OBJECTIVES, rewards.mean(0).tolist(), strict=True)},
        }
        for f in task.FAMILIES:
            rows_f = torch.tensor([r.family == f for r in rows])
            entry[f"{f}/train_words"] = statistics.fmean(
                task.word_count(y) for y, m in zip(responses, rows_f.tolist(), strict=True) if m
            )
            if weights is not None:
                for k, w in zip(task.OBJECTIVES, weights[rows_f].mean(0).tolist(), strict=True):
                    entry[f"{f}/weight/{k}"] = w
        kept = (CONDUCTOR_PREFIX, AGGREGATOR_WEIGHT_PREFIX, AGGREGATOR_EMPHASIS_PREFIX)
        entry.update({k: v for k, v in {**agg_metrics, **meta}.items() if k.startswith(kept)})
        log.append(entry)
        if step % spec.eval_every == 0 or step == spec.steps:
            history.append({"step": step, **evaluate(model, tok, test, spec.eval_samples, spec.max_new_tokens)})
    record = {
        "spec": asdict(spec),
        "history": history,
        "train": log,
        "val": evaluate(model, tok, val, spec.eval_samples, spec.max_new_tokens),
        "seconds": time.perf_counter() - t0,
    }
    if hasattr(agg, "config"):  # maestro*: what the Conductor ran with (prior included), not what the spec asked
        record["maestro_config"] = agg.config.to_dict()
    if spec.method.startswith("maestro-target:"):  # π's expected weights on the held-out prompts, per family
        record["test_conductor_weights"] = conductor_weights(model, tok, agg, test)
    Path(spec.out).write_text(json.dumps(record, indent=1))
    return record


def conductor_weights(model, tok, agg, prompts: list) -> dict[str, list[float]]:
    """family -> E_{a~π_φ(·|h)}[w(a)] averaged over the family's prompts, h at the prompt's last token."""
    import torch

    enc = tok([p.text for p in prompts], return_tensors="pt", padding=True)
    positions = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = model.model(**enc, position_ids=positions).last_hidden_state[:, -1]  # left padding: last = prompt's
    weights = agg.conductor.expected_weights(hidden)
    return {f: weights[torch.tensor([p.family == f for p in prompts])].mean(0).tolist() for f in task.FAMILIES}


# ---- orchestration ------------------------------------------------------------------------------------------
def run_all(specs: list[RunSpec], jobs: int) -> None:
    from tqdm import tqdm

    for s in specs:  # a finished run counts only if it ran with these very settings
        if Path(s.out).is_file() and (saved := json.loads(Path(s.out).read_text())["spec"]) != asdict(s):
            diff = {k: (v, asdict(s)[k]) for k, v in saved.items() if v != asdict(s)[k]}
            raise SystemExit(
                f"{s.out} ran with other settings (saved, now): {diff}; use another --workdir, or delete the "
                "runs/ folder to start over"
            )
    todo = [s for s in specs if not Path(s.out).is_file()]
    if len(todo) < len(specs):
        print(f"{len(specs) - len(todo)} of {len(specs)} runs already finished; running {len(todo)}", flush=True)
    if not todo:
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train_run, s): s for s in todo}
        bar = tqdm(total=len(todo), desc="GRPO runs", unit="run")
        for fut in as_completed(futures):
            s = futures[fut]
            rec = fut.result()  # a failed run raises here, naming its traceback; finished runs stay on disk
            final = rec["history"][-1]
            bar.write(
                f"{s.method} seed {s.seed}: echo {final['echo/metric']:.3f}  story {final['story/metric']:.3f}  "
                f"({rec['seconds']:.0f} s)"
            )
            bar.update()
        bar.close()


def spec_for(args: argparse.Namespace, pretrained: Path, method: str, seed: int) -> RunSpec:
    """The run of `method` at `seed` with the budget the flags give (every other RunSpec field is a flag)."""
    name = method.replace(":", "-").replace(",", "")
    out = args.workdir / "runs" / f"{name}-seed{seed}.json"
    budget = {
        f.name: getattr(args, f.name) for f in fields(RunSpec) if f.name not in ("method", "seed", "pretrained", "out")
    }
    return RunSpec(method=method, seed=seed, pretrained=str(pretrained), out=str(out), **budget)


def run_target_comparison(args: argparse.Namespace, pretrained: Path) -> None:
    """The comparison fixed before running (issue 22), every selection on `val` at the first seed:

    A. seed 0: the 10 grid points and maestro-target at each lr of TARGET_LRS;
    B. seed 0: sum-target with the grid winner's weights and each target weight of TARGET_WEIGHTS; every seed:
       the grid winner (1), the per-family grid winners (3), maestro-target at its lr, maestro (4), random (5);
    C. every seed: the sum-target winner (2).
    """
    s0 = args.seeds[0]
    phase_a = [canonical(w) for w in GRID] + [f"maestro-target:{lr:g}" for lr in TARGET_LRS]
    run_all([spec_for(args, pretrained, m, s0) for m in phase_a], args.jobs)
    chosen = target_choices(load_runs(args.workdir), s0)
    print(f"chosen on val at seed {s0}: {chosen}", flush=True)
    every = [chosen[k] for k in ("best", "family", "maestro-target", "maestro", "random")]
    specs = [spec_for(args, pretrained, m, s0) for m in sum_target_candidates(chosen["best"])]
    specs += [spec_for(args, pretrained, m, s) for s in args.seeds for m in every]
    run_all(list({s.out: s for s in specs}.values()), args.jobs)
    chosen = target_choices(load_runs(args.workdir), s0)
    print(f"sum-target chosen on val at seed {s0}: {chosen['sum-target']}", flush=True)
    run_all([spec_for(args, pretrained, chosen["sum-target"], s) for s in args.seeds], args.jobs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    (args.workdir / "runs").mkdir(parents=True, exist_ok=True)
    if args.comparison == "target":
        if not args.report_only:
            t0 = time.perf_counter()
            run_target_comparison(args, pretrain(args.workdir, args.pretrain_steps, args.pretrain_lines))
            print(f"all runs: {time.perf_counter() - t0:.0f} s", flush=True)
        print(target_report(args.workdir, args.seeds))
        return 0
    methods = args.methods or list(LABELS)
    if not args.report_only:
        t0 = time.perf_counter()
        pretrained = pretrain(args.workdir, args.pretrain_steps, args.pretrain_lines)
        first = [m for m in BASE_METHODS if m in methods]
        specs = [spec_for(args, pretrained, m, s) for m in first for s in args.seeds]
        after_grid = [m for m in ("best", "maestro-prior") if m in methods]
        if after_grid:  # the grid on the first seed, then on every seed its winner and/or maestro with it as prior
            specs += [spec_for(args, pretrained, canonical(w), args.seeds[0]) for w in GRID]
        run_all(list({s.out: s for s in specs}.values()), args.jobs)
        if after_grid:
            best = best_grid(load_runs(args.workdir), args.seeds[0])
            print(f"best grid weights on the val topics (seed {args.seeds[0]}): {best}", flush=True)
            # maestro-prior gets the same val-selected weights as its prior: no information the grid lacks.
            chosen = {"best": best, "maestro-prior": maestro_prior(best)}
            run_all([spec_for(args, pretrained, chosen[m], s) for m in after_grid for s in args.seeds], args.jobs)
        print(f"all runs: {time.perf_counter() - t0:.0f} s", flush=True)
    print(report(args.workdir, methods, args.seeds))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
