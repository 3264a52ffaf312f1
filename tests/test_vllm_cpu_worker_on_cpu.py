"""vLLM's CPU engine under the runtime: sampling at temperature 1 in a worker process, and every attention ISA.

On Intel CPUs with AMX, vLLM 0.29.0's inductor-compiled sampler corrupts the heap of the engine's worker process
when the vocabulary is small (``cpu_patches._uncompiled`` has the reproducer and what was ruled out). The first
test generates the way OpenRLHF's rollout actors do (temperature 1, log-probabilities requested, the engine in its
own process) with the test's tiny model, whose vocabulary is small; on such a CPU it dies without the runtime's
sampler patch. It also checks, inside the worker, that the sampler is the runtime's and that dynamo compiled
nothing, so a vLLM upgrade that adds another compiled kernel on this path shows here on every CPU.

The attention tests force each ISA of vLLM's CPU attention (``cpu_attn._get_attn_isa``: ``amx``, ``vec``,
``vec16``) where this CPU can take it, as ``test_vllm_cpu_gemm_on_cpu.py`` does for the GEMM paths, and compare
vLLM's log-probabilities of a fixed text with a float32 Hugging Face forward of the same weights, within the
tolerance of ``--runtime.verify_weight_sync``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import REPO, clean_env

from openrlhf_maestro.runtime import SITE_DIR
from openrlhf_maestro.runtime.cpu_info import cpu_isa

PROBE = Path(__file__).with_name("vllm_worker_probe.py")


def _probe(model_dir: Path, mode: str, isa: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(model_dir), mode, isa],
        env=clean_env(MAESTRO_RUNTIME="cpu", PYTHONPATH=str(SITE_DIR)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"vLLM probe ({mode}, {isa}) exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("REPORT ")).removeprefix("REPORT "))


def _vocabulary(model_dir: Path) -> int:
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


def test_a_worker_process_samples_at_temperature_1_with_no_compiled_kernel(tiny_model_dir):
    # The AMX crash needs a small vocabulary (4,096 crashed, 16,384 did not); the tiny model's is smaller.
    assert _vocabulary(tiny_model_dir) <= 4096
    report = _probe(tiny_model_dir, "mp", "native")
    worker = report["worker"]
    assert worker["pid"] != report["driver_pid"], "the engine ran in the driver, not in a worker process"
    assert report["outputs"] == 16 and all(n >= 1 for n in report["tokens"]), report
    assert report["logprobs_per_token"] == report["tokens"], "a sampled token came back without its log-probability"
    assert worker["sampler_patched"] == [True, True], worker
    assert worker["dynamo_graphs"] == 0, f"dynamo compiled {worker['dynamo_graphs']} graph(s) in the engine"
    assert worker["attention_isa"] == [cpu_isa().vllm_attention_isa()], (worker, cpu_isa().summary())
    assert report["mean_abs_diff"] <= report["tolerance"], report


# ISA -> (can this CPU take it?, why not)
ATTENTION_ISAS: dict[str, tuple[bool, str]] = {
    "amx": (bool(torch.cpu._is_amx_tile_supported()), "needs AMX tiles (amx_tile); this CPU has none"),
    "vec": (True, ""),
    "vec16": (True, ""),
}


@pytest.mark.parametrize("isa", list(ATTENTION_ISAS))
def test_every_attention_isa_this_cpu_can_take_matches_a_float32_forward(isa, tiny_model_dir):
    ok, why = ATTENTION_ISAS[isa]
    if not ok:
        pytest.skip(f"vLLM attention ISA {isa} not on this CPU ({cpu_isa().summary()}): {why}")
    report = _probe(tiny_model_dir, "inproc", isa)
    assert report["worker"]["attention_isa"] == [isa], report["worker"]
    assert report["mean_abs_diff"] <= report["tolerance"], report


@pytest.mark.parametrize(
    ("flags", "head_size", "expected"),
    [
        ("avx2", 64, "vec"),
        ("avx2 avx512f avx512_bf16", 128, "vec"),
        ("avx512f amx_tile", 64, "amx"),
        ("avx512f amx_tile", 80, "vec16"),
    ],
)
def test_the_cpu_line_names_the_attention_isa_vllm_picks(flags, head_size, expected):
    cpu = cpu_isa(f"model name : X\nflags : {flags}\n")
    assert cpu.vllm_attention_isa(head_size) == expected
    assert f"attention {cpu.vllm_attention_isa()} (bf16)" in cpu.summary()
