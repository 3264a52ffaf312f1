"""CPU cost of the MAESTRO aggregator per rollout batch: aggregate() + feedback() with a meta-update every call.

    python bench/bench_method.py                      # N=8192 responses, H=4096, K=5, one thread
    python bench/bench_method.py --learn --lrs 1e-4 3e-4 1e-3   # how the default lr was picked

Timing mode prints the median milliseconds per rollout batch and its ratio to the 100 ms target.
Learn mode runs a synthetic contextual bandit (K context clusters in the hidden states, each favouring its
own objective, with a large shared component and a few outlier dimensions like an LM's final-normed
states) and prints the mean probability of the right emphasis every 10 updates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openrlhf_maestro.method import MaestroAggregator, group_norm  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-responses", type=int, default=8192, help="N responses per rollout batch")
    p.add_argument("--group-size", type=int, default=8, help="responses per prompt (n_samples_per_prompt)")
    p.add_argument("--hidden-size", type=int, default=4096, help="H, the policy's hidden width")
    p.add_argument("--num-objectives", type=int, default=5, help="K objectives")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the hidden states")
    p.add_argument("--mode", choices=["discrete", "dirichlet"], default="discrete")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--target-ms", type=float, default=100.0)
    p.add_argument("--learn", action="store_true", help="run the synthetic learning check instead of timing")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="learn mode: lrs to try")
    p.add_argument("--updates", type=int, default=60, help="learn mode: meta-updates per lr")
    p.add_argument("--seeds", type=int, default=3, help="learn mode: seeds per lr")
    return p.parse_args()


def bench(args: argparse.Namespace) -> None:
    n, h, k = args.num_responses, args.hidden_size, args.num_objectives
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(n, k, generator=gen)
    group_ids = torch.arange(n) // args.group_size
    hidden = torch.randn(n, h, generator=gen).to(DTYPES[args.dtype])
    agg = MaestroAggregator([f"r{i}" for i in range(k)], update_every=1, mode=args.mode)
    times = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        out = agg.aggregate(rewards, group_ids, hidden)
        agg.feedback(group_norm(out.rewards, group_ids))
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(times)
    print(
        f"maestro aggregate+feedback  N={n} H={h} K={k} dtype={args.dtype} mode={args.mode} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} (warmup {args.warmup})"
    )
    print(f"median {median:.1f} ms per rollout batch (min {min(times):.1f}, max {max(times):.1f})")
    print(f"ratio to the {args.target_ms:.0f} ms target: {median / args.target_ms:.2f}")


def learn(args: argparse.Namespace) -> None:
    n, h, k, size = args.num_responses, args.hidden_size, args.num_objectives, args.group_size
    print(f"synthetic bandit  N={n} H={h} K={k} group={size}: mean P(right emphasis) every 10 updates")
    for lr in args.lrs:
        finals = []
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)
            common = 2.0 * torch.randn(h, generator=gen)
            centers = 0.5 * torch.randn(k, h, generator=gen)
            scale = torch.ones(h)
            scale[:8] = 30.0  # a few outlier dimensions, as in LM hidden states
            agg = MaestroAggregator([f"r{i}" for i in range(k)], lr=lr, seed=seed, hidden_size=h)
            trace = []
            for t in range(args.updates + 1):
                cluster = torch.randint(0, k, (n,), generator=gen)
                hidden = (common + centers[cluster] + torch.randn(n, h, generator=gen)) * scale
                onehot = torch.nn.functional.one_hot(cluster, k).float()
                rewards = onehot + 0.5 * torch.randn(n, k, generator=gen)
                if t % 10 == 0:
                    trace.append(float(agg.conductor.probs(hidden).gather(1, cluster[:, None]).mean()))
                group_ids = torch.arange(n) // size
                agg.feedback(group_norm(agg.aggregate(rewards, group_ids, hidden).rewards, group_ids))
            finals.append(trace[-1])
            print(f"lr={lr:g} seed={seed}: " + " ".join(f"{p:.2f}" for p in trace))
        print(f"lr={lr:g}: final mean {statistics.mean(finals):.3f}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    learn(args) if args.learn else bench(args)


if __name__ == "__main__":
    main()
