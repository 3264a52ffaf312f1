"""vLLM's CPU engine under the runtime: sampling at temperature 1 in a worker process, and every attention ISA.

On Intel CPUs with AMX, vLLM 0.29.0's inductor-compiled sampler corrupts the heap of the engine's worker process
when the vocabulary is small (``cpu_patches._uncompiled`` has the reproducer and what was ruled out). The first
test generates the way OpenRLHF's rollout actors do (temperature 1, log-probabilities requested, the engine in its
own process) with the test's tiny model, whose vocabulary is small; on such a CPU it dies without the runtime's
sampler patch. It also checks, inside the worker, that the sampler is the runtime's choice for this CPU
(uncompiled with AMX, vLLM's compiled one elsewhere) and, with AMX, that dynamo compiled nothing, so a vLLM
upgrade that adds another compiled kernel on that path shows. The eager functions are also checked against the
compiled ones on every CPU (same draws from the same seed), since only AMX machines run them in the engine.

The attention tests force each ISA of vLLM's CPU attention (``cpu_attn._get_attn_isa``: ``amx``, ``vec``,
``vec16``) where this CPU can take it, as ``test_vllm_cpu_gemm_on_cpu.py`` does for the GEMM paths (the ISA vLLM
picks itself here is checked on the first test's engine, not forced in a second one), and compare vLLM's
log-probabilities of a fixed text with a float32 Hugging Face forward of the same weights, within the
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
        env=clean_env(OPENRLHF_CPU_RUNTIME="cpu", PYTHONPATH=str(SITE_DIR)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"vLLM probe ({mode}, {isa}) exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("REPORT ")).removeprefix("REPORT "))


def _vocabulary(model_dir: Path) -> int:
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


@pytest.fixture(scope="module")
def native_report(tiny_model_dir) -> dict:
    """The engine as OpenRLHF runs it: its own worker process, vLLM's own attention ISA (one engine start, shared
    by the sampler test and the attention test of the ISA vLLM picks here)."""
    return _probe(tiny_model_dir, "mp", "native")


def test_a_worker_process_samples_at_temperature_1_with_the_runtimes_sampler_for_this_cpu(
    native_report, tiny_model_dir
):
    # The AMX crash needs a small vocabulary (4,096 crashed, 16,384 did not); the tiny model's is smaller.
    assert _vocabulary(tiny_model_dir) <= 4096
    report = native_report
    worker = report["worker"]
    assert worker["pid"] != report["driver_pid"], "the engine ran in the driver, not in a worker process"
    assert report["outputs"] == 16 and all(n >= 1 for n in report["tokens"]), report
    assert report["logprobs_per_token"] == report["tokens"], "a sampled token came back without its log-probability"
    assert worker["sampler_patched"] == [True, True], worker
    amx = cpu_isa().has("AMX")
    assert worker["sampler_compiled"] == [not amx, not amx], (worker, cpu_isa().summary())
    if amx:
        assert worker["dynamo_graphs"] == 0, f"dynamo compiled {worker['dynamo_graphs']} graph(s) in the engine"
    else:  # vLLM's compiled sampler ran: the count can tell
        assert worker["dynamo_graphs"] >= 1, worker
    assert worker["attention_isa"] == [cpu_isa().vllm_attention_isa()], (worker, cpu_isa().summary())
    assert report["mean_abs_diff"] <= report["tolerance"], report


# ISA -> (can this CPU take it?, why not)
ATTENTION_ISAS: dict[str, tuple[bool, str]] = {
    "amx": (bool(torch.cpu._is_amx_tile_supported()), "needs AMX tiles (amx_tile); this CPU has none"),
    "vec": (True, ""),
    "vec16": (True, ""),
}


@pytest.mark.parametrize("isa", list(ATTENTION_ISAS))
def test_every_attention_isa_this_cpu_can_take_matches_a_float32_forward(isa, tiny_model_dir, request):
    ok, why = ATTENTION_ISAS[isa]
    if not ok:
        pytest.skip(f"vLLM attention ISA {isa} not on this CPU ({cpu_isa().summary()}): {why}")
    if isa == cpu_isa().vllm_attention_isa():  # vLLM's own choice here: the native engine already ran it
        report = request.getfixturevalue("native_report")
    else:  # forced, in the driver process
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


def test_the_uncompiled_sampler_draws_from_the_same_distribution_as_the_compiled_one():
    """vLLM's eager bodies against its compiled functions, on any CPU: both draw token t with probability
    softmax(logits)_t (4,000 draws each, 4 likely tokens, every frequency within 0.035, about 4.5 standard errors),
    and both count ranks exactly. On an AMX CPU the compiled arm is the kernel that corrupts the heap."""
    from vllm.v1.sample.ops.logprobs import batched_count_greater_than
    from vllm.v1.sample.ops.topk_topp_sampler import compiled_random_sample

    from openrlhf_maestro.runtime.cpu_patches import _sampler_for_this_cpu, _uncompiled

    if cpu_isa().has("AMX"):
        pytest.skip(f"the compiled sampler corrupts the heap on this CPU ({cpu_isa().summary()})")
    assert _sampler_for_this_cpu(compiled_random_sample) is compiled_random_sample
    logits = torch.full((16, 1024), -30.0)
    logits[:, :4] = torch.tensor([2.0, 1.0, 0.0, -1.0])
    want = torch.softmax(torch.tensor([2.0, 1.0, 0.0, -1.0]), dim=0)
    torch.manual_seed(0)
    for fn in (compiled_random_sample, _uncompiled(compiled_random_sample)):
        draws = torch.cat([fn(logits.clone()) for _ in range(250)])
        assert draws.max() < 4, draws.max()
        freq = torch.bincount(draws, minlength=4).float() / draws.numel()
        assert (freq - want).abs().max() < 0.035, (fn, freq, want)
    ranked = torch.randn(16, 1024, generator=torch.Generator().manual_seed(0))
    values = ranked[:, 3:4].contiguous()
    counts = (ranked >= values).sum(-1)  # written out: the rank of each row's value
    assert torch.equal(_uncompiled(batched_count_greater_than)(ranked, values), counts)
    assert torch.equal(batched_count_greater_than(ranked, values), counts)
    with pytest.raises(RuntimeError, match="no longer a torch.compile wrapper"):
        _uncompiled(lambda x: x)
