"""The GPU check: OpenRLHF's ``Actor.forward`` with the plugin's probe, on a GPU, in one run.

    python3 bench/gpu_check/gpu_check.py --out "$OUT"          # on the GPU machine (docs/gpu.md, "GPU check")
    python bench/gpu_check/gpu_check.py --dry-run --out DIR     # here, on the CPU, at small sizes

Three parts, each on a randomly initialised 2-layer model with Qwen3-8B's widths (hidden 4096, MLP 12288,
32 query and 8 key-value heads of 128, vocabulary 151,936), built on the device in bfloat16, so no weights
travel. The probe runs through ``openrlhf_maestro.integration.probing.probed_forward``, the code the launcher's
policy actors run, around OpenRLHF's own ``Actor.forward``:

1. **exactness**: a batch of rows of different lengths (left-padded prompts, right-padded responses) through
   the padded and the packed path (``packing_samples``: one row of the attended tokens, per-sample position
   ids, sdpa), at temperature 0.6, reading h (``--reward.context response``) and ``entropy``. Checked: the
   log-probs, h and the entropy agree between the two paths; lm_head fired once per forward; the probe's
   outputs are float32 on the CPU; h equals the model's own final-normed state at each sample's last token and
   the entropy equals the one from OpenRLHF's float32 logits (upcast, then divided).
2. **memory**: the peak CUDA memory allocated during one forward (``torch.cuda.max_memory_allocated`` minus
   the allocation before it) of bench/bench_probe_memory.py's five cases (OpenRLHF alone at temperature 1 and
   0.6, h only, h + entropy at 1 and 0.6) at 8k, 16k and 32k tokens (one row); ratio against OpenRLHF alone at
   the same temperature, target <= 1.05.
3. **ZeRO-3**: the same two parts with the model inside a single-rank DeepSpeed ZeRO-3 engine (what OpenRLHF's
   strategy does for an actor: ``actor.model = engine``), torch.distributed with one rank (nccl; gloo in the
   dry run), the config of OpenRLHF's ``get_eval_ds_config(offload=False, stage=3)`` with DeepSpeed's
   defaults for its "auto" entries.

Writes ``gpu_check.json`` and ``gpu_check.md`` (the tables) into ``--out`` and prints the tables. Exits 1 if a
check fails (the files are written first). ``--dry-run``: the CPU, float32 attention math on bf16 weights,
widths divided by 32 (vocabulary by 8), lengths 256/512, the memory read as the forward's peak RSS (the
kernel's mark, reset before it, as bench_probe_memory reads it, but in one process: cases share the heap, so
these figures are rougher), ZeRO-3 over gloo; it checks that every part runs, not GPU figures.

Needs OpenRLHF 0.11.2, DeepSpeed, transformers (the overlay of ``bench/gpu_check/build_overlay.sh``); not Ray,
vLLM or flash_attn (the plugin's pure-torch stand-in serves OpenRLHF's import of it).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

QWEN3_8B = dict(
    hidden_size=4096,
    intermediate_size=12288,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    tie_word_embeddings=False,
)
LENGTHS = (8192, 16384, 32768)
DRY_LENGTHS = (256, 512)
TEMPERATURE = 0.6
MEMORY_CASES = ("openrlhf", "openrlhf-t0.6", "maestro-h", "entropy-t1", "entropy-t0.6")
TARGET = 1.05


def model_config(dry_run: bool, max_len: int):
    from transformers import Qwen3Config

    widths = dict(QWEN3_8B)
    if dry_run:  # the same shape of model, small enough for a 2-core CPU
        widths.update(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2)
        widths.update(head_dim=32, vocab_size=151936 // 8)
    return Qwen3Config(num_hidden_layers=2, max_position_embeddings=max(max_len, 4096), use_cache=False, **widths)


def build_actor(config, device, temperature: float, packing: bool):
    """OpenRLHF's ``Actor`` around a random model built on ``device`` in bf16 (no weights read or sent)."""
    import torch
    from openrlhf.models import Actor
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    actor = Actor(model, temperature=temperature)
    actor.packing_samples = packing
    return actor


def exactness_batch(device, vocab: int):
    """4 rows, T = 96: left-padded prompts of 20-31 tokens, responses of 9-64 tokens, right-padded."""
    import torch

    prompts, responses, prompt_width, width = [31, 20, 25, 28], [64, 9, 40, 33], 32, 96
    generator = torch.Generator().manual_seed(0)
    sequences = torch.zeros(4, width, dtype=torch.long)
    attention_mask = torch.zeros(4, width, dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        sequences[row, prompt_width - p : prompt_width + r] = torch.randint(10, vocab, (p + r,), generator=generator)
        attention_mask[row, prompt_width - p : prompt_width + r] = 1
    action_mask = attention_mask[:, prompt_width:].bool()  # action i predicts token prompt_width + i
    return sequences.to(device), attention_mask.to(device), action_mask.to(device)


def probed(actor, probe, sequences, attention_mask, action_mask):
    """PolicyModelActor.forward's body (eval, no grad) with the launcher's probe.

    Returns (log-probs, record, lm_head calls)."""
    import torch

    from openrlhf_maestro.integration.probing import probed_forward

    with torch.no_grad():
        return probed_forward(
            actor,
            probe,
            sequences,
            action_mask,
            attention_mask,
            lambda: actor(sequences, action_mask, attention_mask, ring_attn_group=None),
        )


def check_exactness(config, device, wrap=None) -> dict:
    """Part 1 (and 3 with ``wrap``, which puts the actor's model in a ZeRO-3 engine)."""
    import torch

    from openrlhf_maestro.probe import PolicyProbe

    probe = PolicyProbe(context="response", channels={"entropy": {}})
    sequences, attention_mask, action_mask = exactness_batch(device, config.vocab_size)
    actor = build_actor(config, device, TEMPERATURE, packing=False)
    if wrap is not None:
        wrap(actor)
    inner = getattr(actor.model, "module", actor.model)
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # as Actor.forward
    with torch.no_grad():
        out = inner(sequences, attention_mask=attention_mask, position_ids=position_ids, output_hidden_states=True)
    last_rows = torch.tensor([int(m.nonzero().max()) for m in attention_mask])
    expected_h = out.hidden_states[-1][torch.arange(4), last_rows].float().cpu()
    x = out.logits.float() / TEMPERATURE
    entropy = (torch.logsumexp(x, -1) - (torch.softmax(x, -1) * x).sum(-1))[:, :-1][:, -action_mask.shape[1] :]
    expected_entropy = ((entropy * action_mask).sum(1) / action_mask.sum(1)).float().cpu()
    del out, x, entropy
    reads = {}
    for packing in (False, True):
        actor.packing_samples = packing
        log_probs, record, calls = probed(actor, probe, sequences, attention_mask, action_mask)
        reads[packing] = (log_probs.float().cpu(), record, calls)
    (lp_pad, pad, calls_pad), (lp_pack, pack, calls_pack) = reads[False], reads[True]

    def diff(a, b):
        return float((a - b).abs().max())

    result = {
        "lm_head_calls": [calls_pad, calls_pack],
        "outputs_cpu_float32": all(
            v.device.type == "cpu" and v.dtype == torch.float32 for r in (pad, pack) for v in r.values()
        ),
        "h_shape": list(pad["hidden"].shape),
        "packed_vs_padded": {
            "log_probs": diff(lp_pack, lp_pad),
            "hidden": diff(pack["hidden"], pad["hidden"]),
            "hidden_scale": float(pad["hidden"].abs().max()),
            "entropy": diff(pack["entropy"], pad["entropy"]),
        },
        "padded_vs_model": {
            "hidden": diff(pad["hidden"], expected_h),
            "entropy": diff(pad["entropy"], expected_entropy),
        },
    }
    # Tolerances: the padded read is the model's own forward, so h is the same bits and the entropy differs
    # only by float32 reduction order (1e-4 nats at log V ~ 12). Packed against padded run different attention
    # masks through bf16 kernels: bf16 keeps 8 bits, so states differ by about 2**-8 of their scale per layer;
    # 5 % of h's largest entry, 0.05 nats of mean entropy and 0.1 nats of log-probability allow that.
    scale = result["h_shape"] and result["packed_vs_padded"]["hidden_scale"]
    result["ok"] = bool(
        result["lm_head_calls"] == [1, 1]
        and result["outputs_cpu_float32"]
        and result["h_shape"] == [4, config.hidden_size]
        and result["padded_vs_model"]["hidden"] == 0.0
        and result["padded_vs_model"]["entropy"] <= 1e-4
        and result["packed_vs_padded"]["hidden"] <= 0.05 * scale
        and result["packed_vs_padded"]["entropy"] <= 0.05
        and result["packed_vs_padded"]["log_probs"] <= 0.1
    )
    return result


def memory_case(actor, device, case: str, length: int) -> dict:
    """Peak CUDA memory allocated during one forward of ``case`` (bench_probe_memory.CASES) at ``length``."""
    import torch
    from bench_probe_memory import CASES, batch, rss_kib

    from openrlhf_maestro.probe import PolicyProbe

    context, channels, temperature, _ = CASES[case]
    actor.temperature = temperature  # Actor.forward divides its float32 logits by it; the probe reads it too
    probe = None if context is None else PolicyProbe(context=context, channels={c: {} for c in channels})
    sequences, attention_mask, action_mask = (t.to(device) for t in batch(length, 1))

    def forward():
        with torch.no_grad():
            if probe is None:
                return actor(sequences, action_mask, attention_mask, ring_attn_group=None)
            return probed(actor, probe, sequences, attention_mask, action_mask)

    forward()  # warm-up: kernels, cuBLAS workspace
    if device == "cpu":  # dry run: the kernel's peak-RSS mark, as bench_probe_memory reads it
        gc.collect()
        base = rss_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")
    else:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    forward()
    if device == "cpu":
        peak = rss_kib("VmHWM") * 1024 - base
    else:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    seconds = time.perf_counter() - start
    return {"case": case, "length": length, "forward_peak_mib": peak / 2**20, "seconds": seconds}


def memory_table(config, device, lengths, wrap=None) -> list[dict]:
    """Part 2 (and 3 with ``wrap``): every case at every length, on one model (one engine)."""
    from bench_probe_memory import ratios

    actor = build_actor(config, device, 1.0, packing=False)
    if wrap is not None:
        wrap(actor)
    results = []
    for length in lengths:
        for case in MEMORY_CASES:
            results.append(memory_case(actor, device, case, length))
            print(f"  memory {case} at {length}: {results[-1]['forward_peak_mib']:.0f} MiB", flush=True)
    return ratios(results)


def zero3_wrapper(dry_run: bool):
    """Initialises a one-rank process group and returns ``wrap(actor)``: actor.model -> a ZeRO-3 engine."""
    import deepspeed
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if dry_run else "nccl")
    config = {  # OpenRLHF's get_eval_ds_config(offload=False, stage=3), "auto" entries left to DeepSpeed
        "steps_per_print": 100,
        "zero_optimization": {"stage": 3, "offload_param": {"device": "none", "pin_memory": True}},
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "gradient_clipping": 1.0,
        "prescale_gradients": False,
        "wall_clock_breakdown": False,
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": 1,
    }

    def wrap(actor):
        engine, *_ = deepspeed.initialize(model=actor.model, config=config)
        actor.model = engine  # as OpenRLHF's DeepspeedStrategy does for an actor

    return wrap


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['device']})", ""]
    for part in ("exactness", "zero3_exactness"):
        if part in report:
            lines += [f"## {part}", "", "```json", json.dumps(report[part], indent=2), "```", ""]
    for part in ("memory", "zero3_memory"):
        if part not in report:
            continue
        lines += [f"## {part}", "", "| tokens | case | forward peak (MiB) | ratio | against | seconds |"]
        lines += ["| ---: | --- | ---: | ---: | --- | ---: |"]
        for r in report[part]:
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
            lines.append(
                f"| {r['length']} | {r['case']} | {r['forward_peak_mib']:.0f} | {ratio} | "
                f"{r['baseline'] or ''} | {r['seconds']:.2f} |"
            )
        lines.append("")
    lines.append(f"all checks: {'PASS' if report['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes: checks that every part runs")
    parser.add_argument("--lengths", default=None, help="comma-separated token counts for the memory part")
    parser.add_argument("--skip-zero3", action="store_true", help="leave out part 3")
    args = parser.parse_args(argv)
    import torch

    from openrlhf_maestro.runtime import standin_finder

    standin_finder.install()  # OpenRLHF imports flash_attn unconditionally; the pure-torch stand-in serves it
    if args.dry_run:
        device = "cpu"
        # glibc: blocks of 1 MiB and more are mmapped and returned on free (M_MMAP_THRESHOLD = -3), so RSS
        # follows what is alive, as MALLOC_MMAP_THRESHOLD_ makes it in bench_probe_memory's subprocesses
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)
        torch.cuda.current_device = lambda: "cpu"  # bench_probe_memory's subprocesses do the same
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on a CPU")
    else:
        device = f"cuda:{torch.cuda.current_device()}"
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else (DRY_LENGTHS if args.dry_run else LENGTHS)
    config = model_config(args.dry_run, max(lengths))
    name = torch.cuda.get_device_name() if device != "cpu" else "cpu dry run"
    report: dict = {"device": name, "torch": torch.__version__, "lengths": list(lengths), "dry_run": args.dry_run}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print("part 1: packed vs padded, h and entropy", flush=True)
    report["exactness"] = check_exactness(config, device)
    print(json.dumps(report["exactness"]), flush=True)
    print("part 2: peak memory of the forward", flush=True)
    report["memory"] = memory_table(config, device, lengths)
    if not args.skip_zero3:
        print("part 3: the same in a single-rank ZeRO-3 engine", flush=True)
        wrap = zero3_wrapper(args.dry_run)
        report["zero3_exactness"] = check_exactness(config, device, wrap)
        print(json.dumps(report["zero3_exactness"]), flush=True)
        report["zero3_memory"] = memory_table(config, device, lengths, wrap)
    worst = max((r["ratio"] for k in ("memory", "zero3_memory") for r in report.get(k, []) if r["ratio"]), default=0)
    report["largest_ratio"] = worst
    report["ok"] = bool(
        report["exactness"]["ok"]
        and report.get("zero3_exactness", {"ok": True})["ok"]
        and (args.dry_run or worst <= TARGET)
    )
    report["seconds"] = time.time() - start
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text + "\n")
    print(text, flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
