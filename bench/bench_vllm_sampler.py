"""What running vLLM's CPU sampler uncompiled costs: the CPU runtime's sampler against vLLM's inductor-compiled one.

    .venv/bin/python bench/bench_vllm_sampler.py [--rounds 5] [--calls 200]

The runtime runs ``compiled_random_sample`` and ``batched_count_greater_than`` eagerly (``cpu_patches._uncompiled``)
because inductor's kernel corrupts the heap on AMX CPUs. This measures, in one process and in alternating rounds
(compiled, eager, compiled, eager, ...), the time per call of each at a decode step's shape (a batch of 16 rows of
the vocabulary), for three vocabulary sizes, and the compiled one's first call (the compile every engine start
pays). It prints the eager/compiled ratio of each round. On an AMX CPU the compiled arm is not run: it is the
kernel that crashes there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

VOCABULARIES = (1024, 49152, 151936)
BATCH = 16


def _per_call(fn: Callable, args: tuple, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per vocabulary (default 5)")
    parser.add_argument("--calls", type=int, default=200, help="calls per arm and round (default 200)")
    args = parser.parse_args()

    from vllm.v1.sample.ops.logprobs import batched_count_greater_than
    from vllm.v1.sample.ops.topk_topp_sampler import compiled_random_sample

    from openrlhf_maestro.runtime.cpu_info import cpu_isa
    from openrlhf_maestro.runtime.cpu_patches import _uncompiled

    cpu = cpu_isa()
    print(f"[cpu] {cpu.summary()}", flush=True)
    if cpu.has("AMX"):
        raise SystemExit("AMX CPU: the compiled sampler is the kernel that corrupts the heap here; not run.")
    pairs = {
        "random_sample": (compiled_random_sample, _uncompiled(compiled_random_sample)),
        "count_greater_than": (batched_count_greater_than, _uncompiled(batched_count_greater_than)),
    }
    print(f"{'function':<20} {'vocab':>7} {'compile s':>9} {'compiled us':>11} {'eager us':>9} ratios eager/compiled")
    for vocab in VOCABULARIES:
        logits = torch.randn(BATCH, vocab, dtype=torch.float32)
        for name, (compiled, eager) in pairs.items():
            call_args = (logits,) if name == "random_sample" else (logits, logits[:, :1].contiguous())
            start = time.perf_counter()
            compiled(*call_args)  # the first call compiles (once per shape class; dynamic shapes after that)
            compile_s = time.perf_counter() - start
            ratios, times = [], {"compiled": [], "eager": []}
            for _ in range(args.rounds):
                c = _per_call(compiled, call_args, args.calls)
                e = _per_call(eager, call_args, args.calls)
                times["compiled"].append(c)
                times["eager"].append(e)
                ratios.append(e / c)
            print(
                f"{name:<20} {vocab:>7} {compile_s:>9.2f} {statistics.median(times['compiled']) * 1e6:>11.1f} "
                f"{statistics.median(times['eager']) * 1e6:>9.1f} " + " ".join(f"{r:.2f}" for r in ratios),
                flush=True,
            )


if __name__ == "__main__":
    main()
