"""Peak memory of the experience maker's policy forward, with and without what the plugin reads from it.

    python bench/bench_probe_memory.py                                  # lengths 512..4096, vocab 151,936
    python bench/bench_probe_memory.py --lengths 64,128 --vocab 8192    # a cheap run (the test's)

The forward is OpenRLHF's own: ``PolicyModelActor.forward`` -> ``Actor.forward`` (eval, no grad), through the
launcher's ``PolicyModelActor`` subclass (``openrlhf_maestro/integration/actor.py``) exactly as the experience
maker calls it. Five cases per sequence length, each in a fresh subprocess:

    openrlhf        no aggregator: ``forward`` without a probe (OpenRLHF alone), temperature 1
    openrlhf-t0.6   the same at temperature 0.6 (OpenRLHF divides its float32 logits in place)
    maestro-h       the probe reads h only (``--reward.context response``), temperature 1
    entropy-t1      h and the ``entropy`` channel, temperature 1
    entropy-t0.6    h and the ``entropy`` channel, temperature 0.6 (Qwen's thinking-mode temperature)

The model is the tiny actor's architecture (``openrlhf_maestro.tiny_model.ARCH``: 2 layers, width 128) with a
Qwen-sized vocabulary, randomly initialised in bfloat16 in the subprocess, so the logits dominate the memory
as they do for an 8B model at long lengths. A batch is ``--batch`` rows of ``length`` tokens: a quarter prompt,
the rest response, row 0 full and the others' responses shorter (right padding), as OpenRLHF lays them out.

Memory: the subprocess builds the model and runs one small forward of the same case (lazy initialisation),
then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, value 5), runs the measured forward and reads
``VmHWM``. The forward's peak is VmHWM minus the RSS just before it; the ratio of a case is its forward peak
over ``openrlhf``'s at the same length (``openrlhf-t0.6``'s for ``entropy-t0.6``). glibc's mmap threshold is
fixed (``MALLOC_MMAP_THRESHOLD_``) so that freed large blocks go back to the kernel and RSS follows what is
alive. torch's CPU allocator caches nothing. Target: every ratio <= 1.05.

CPU only: ``PolicyModelActor.forward`` asks ``torch.cuda.current_device()``, which a CPU build of torch cannot
answer, so the subprocess answers ``"cpu"`` (as the plugin's CPU runtime does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {  # name -> (probe context, probe channels, temperature, baseline case)
    "openrlhf": (None, (), 1.0, None),
    "openrlhf-t0.6": (None, (), 0.6, None),
    "maestro-h": ("response", (), 1.0, "openrlhf"),
    "entropy-t1": ("response", ("entropy",), 1.0, "openrlhf"),
    "entropy-t0.6": ("response", ("entropy",), 0.6, "openrlhf-t0.6"),
}
TARGET = 1.05
MMAP_THRESHOLD = 1 << 20


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def batch(length: int, rows: int):
    """(sequences, attention_mask, action_mask) of ``rows`` rows of ``length`` tokens (module docstring)."""
    import torch

    prompt = max(2, length // 4)
    actions = length - prompt
    generator = torch.Generator().manual_seed(length)
    sequences = torch.randint(10, 1000, (rows, length), generator=generator)
    attention_mask = torch.ones(rows, length, dtype=torch.long)
    for row in range(1, rows):  # shorter responses, right-padded
        attention_mask[row, length - row * max(1, actions // (2 * rows)) :] = 0
    sequences = sequences * attention_mask
    action_mask = attention_mask[:, prompt:].bool()  # A = T - prompt: action i predicts token prompt + i
    return sequences, attention_mask, action_mask


def measure(case: str, length: int, rows: int, vocab: int) -> dict:
    """Runs in the subprocess: one case, one length. Returns the measurement as a dict."""
    import gc

    import torch

    from openrlhf_maestro.runtime import standin_finder

    standin_finder.install()  # OpenRLHF imports flash_attn unconditionally; the CPU stand-in serves it
    from openrlhf.models import Actor
    from transformers import AutoModelForCausalLM, Qwen2Config

    from openrlhf_maestro.integration.actor import _ChannelPolicyModelActor
    from openrlhf_maestro.probe import PolicyProbe
    from openrlhf_maestro.tiny_model import ARCH

    if torch.cuda.is_available():
        raise SystemExit("bench_probe_memory measures CPU memory; bench/gpu_check/gpu_check.py is the GPU one")
    torch.cuda.current_device = lambda: "cpu"  # PolicyModelActor.forward's device (module docstring)
    context, channels, temperature, _ = CASES[case]
    config = Qwen2Config(vocab_size=vocab, **{**ARCH, "max_position_embeddings": max(length, 1024)})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    model.config.use_cache = False  # as Actor.__init__ does for a model it loads
    policy = _ChannelPolicyModelActor.__new__(_ChannelPolicyModelActor)  # no Ray: the forward only
    policy.actor = Actor(model, temperature=temperature)
    policy.actor.packing_samples = False
    policy.strategy = argparse.Namespace(ring_attn_group=None)
    policy._channel_records, policy._probed_forwards = [], 0
    probe = None
    if context is not None:
        probe = PolicyProbe(context=context, channels={name: {} for name in channels})

    def forward(sequences, attention_mask, action_mask):
        if probe is None:
            return policy.forward(sequences, action_mask, attention_mask)
        return policy.forward(sequences, action_mask, attention_mask, policy_probe=probe)

    forward(*batch(16, rows))  # lazy initialisation outside the measured peak
    sequences, attention_mask, action_mask = batch(length, rows)
    policy._channel_records.clear()
    gc.collect()
    base = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    forward(sequences, attention_mask, action_mask)
    seconds = time.perf_counter() - start
    peak = rss_kib("VmHWM")
    records = policy._channel_records
    if probe is not None and not (len(records) == 1 and records[0]["hidden"].shape == (rows, config.hidden_size)):
        raise RuntimeError(f"the probe did not record one (B, H) context: {[list(r) for r in records]}")
    return {
        "case": case,
        "length": length,
        "rows": rows,
        "tokens": int(attention_mask.sum()),
        "vocab": vocab,
        "base_mib": base / 1024,
        "peak_mib": peak / 1024,
        "forward_peak_mib": (peak - base) / 1024,
        "logits_bf16_mib": rows * length * vocab * 2 / 2**20,
        "seconds": seconds,
    }


def run_case(case: str, length: int, rows: int, vocab: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--one", case, "--lengths", str(length), "--batch", str(rows)]
    done = subprocess.run(
        [*cmd, "--vocab", str(vocab)], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} at length {length} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(results: list[dict]) -> list[dict]:
    """Each result with ``ratio``: its forward peak over its baseline case's at the same length (None for one)."""
    by_key = {(r["case"], r["length"]): r for r in results}
    out = []
    for r in results:
        baseline = CASES[r["case"]][3]
        ratio = None
        if baseline is not None and by_key.get((baseline, r["length"]), {}).get("forward_peak_mib", 0) > 0:
            ratio = r["forward_peak_mib"] / by_key[(baseline, r["length"])]["forward_peak_mib"]
        out.append({**r, "ratio": ratio, "baseline": baseline})
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| length | tokens | case | forward peak (MiB) | bf16 logits (MiB) | ratio | against | seconds |",
        "| ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(
            f"| {r['length']} | {r['tokens']} | {r['case']} | {r['forward_peak_mib']:.0f} | "
            f"{r['logits_bf16_mib']:.0f} | {ratio} | {r['baseline'] or ''} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096", help="comma-separated sequence lengths")
    parser.add_argument("--batch", type=int, default=2, help="rows per forward (default 2)")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size (default Qwen3's, 151936)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    parser.add_argument("--one", choices=list(CASES), default=None, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.one is not None:
        print(json.dumps(measure(args.one, lengths[0], args.batch, args.vocab)))
        return 0
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    for case in cases:  # a ratio needs its baseline
        baseline = CASES[case][3]
        if baseline is not None and baseline not in cases:
            cases.insert(0, baseline)
    from tqdm import tqdm

    print(f"cpu: {cpu_name()}, {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    results = []
    jobs = [(length, case) for length in lengths for case in cases]
    with tqdm(jobs, desc="probe memory", unit="case", file=sys.stdout) as bar:
        for length, case in bar:
            bar.set_postfix_str(f"length {length} {case}")
            results.append(run_case(case, length, args.batch, args.vocab))
    results = ratios(results)
    print(table(results))
    worst = max((r["ratio"] for r in results if r["ratio"] is not None), default=None)
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "target": TARGET}, indent=2))
    if worst is not None:
        print(f"largest ratio {worst:.3f} (target <= {TARGET}): {'met' if worst <= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
