"""The CPU runtime patches land through ``sitecustomize`` in a fresh process, twice is harmless, and off is off.

Each check runs in a subprocess so that this test process (and the other tests) stay unpatched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch
from _support import REPO, clean_env

from openrlhf_maestro.runtime import SITE_DIR
from openrlhf_maestro.runtime.flash_attn_standin import index_first_axis, pad_input, unpad_input
from openrlhf_maestro.runtime.gloo_sync import GlooBroadcastGroup

PROBE = r"""
import json, torch
report = {}
try:
    import openrlhf.models.ring_attn_utils  # imports flash_attn unconditionally (lines 3-4)
    report["ring_attn_utils"] = "imported"
except ModuleNotFoundError as e:
    report["ring_attn_utils"] = f"ModuleNotFoundError: {e.name}"
from transformers.utils import is_flash_attn_2_available
report["transformers_sees_flash_attn"] = bool(is_flash_attn_2_available())
try:
    report["current_device"] = str(torch.cuda.current_device())
except Exception as e:
    report["current_device"] = type(e).__name__
import openrlhf.utils.distributed_util as du
report["sync_group_impl"] = du.stateless_init_process_group.__module__
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
try:
    report["replay_device"] = str(NaiveReplayBuffer(1, 0, False).target_device)
except Exception as e:
    report["replay_device"] = type(e).__name__
if EXTRA_INSTALL:
    from openrlhf_maestro.runtime.cpu_patches import install
    install(); install()
    report["set_device_wrapped_once"] = torch.cuda.set_device.__openrlhf_cpu_patch__
    report["sync_group_impl_after_reinstall"] = du.stateless_init_process_group.__module__
    from openrlhf.utils.deepspeed.deepspeed import DeepspeedStrategy
    # a second install must not wrap the wrapper
    report["adam_wrapped_once"] = not hasattr(DeepspeedStrategy.get_ds_train_config.__wrapped__, "__wrapped__")
print("REPORT" + json.dumps(report))
"""


def run_probe(env: dict[str, str], extra_install: bool = False) -> dict:
    code = PROBE.replace("EXTRA_INSTALL", str(extra_install))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    return json.loads(line.removeprefix("REPORT"))


def test_site_hook_patches_a_fresh_process_like_a_ray_worker():
    report = run_probe(clean_env(OPENRLHF_CPU_RUNTIME="cpu", PYTHONPATH=str(SITE_DIR)), extra_install=True)
    assert report["ring_attn_utils"] == "imported"
    assert report["transformers_sees_flash_attn"] is False  # the stand-in has no dist-info
    assert report["current_device"] == "cpu"
    assert report["sync_group_impl"] == "openrlhf_maestro.runtime.gloo_sync"
    assert report["replay_device"] == "cpu"
    assert report["set_device_wrapped_once"] is True
    assert report["sync_group_impl_after_reinstall"] == "openrlhf_maestro.runtime.gloo_sync"
    assert report["adam_wrapped_once"] is True


def test_without_the_switch_openrlhf_is_untouched():
    report = run_probe(clean_env(PYTHONPATH=str(SITE_DIR)))
    assert report["ring_attn_utils"] == "ModuleNotFoundError: flash_attn"
    assert report["current_device"] != "cpu"  # CPU torch raises, as it does without the plugin
    assert report["sync_group_impl"] == "openrlhf.utils.distributed_util"
    assert report["replay_device"] != "cpu"


def test_flash_attn_standin_unpad_pad_round_trip():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    flat, indices, cu_seqlens, max_len, used = unpad_input(hidden, mask)
    assert flat.shape == (9, 4)
    assert cu_seqlens.tolist() == [0, 3, 8, 9] and max_len == 5 and used.tolist() == [3, 5, 1]
    assert torch.equal(index_first_axis(hidden.reshape(15, 4), indices), flat)
    padded = pad_input(flat, indices, 3, 5)
    assert torch.equal(padded[mask.bool()], hidden[mask.bool()])
    assert torch.count_nonzero(padded[~mask.bool()]) == 0


def test_gloo_weight_sync_group_broadcasts_from_the_trainer_rank():
    port = _free_port()
    received: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def member(rank: int) -> None:
        try:
            group = GlooBroadcastGroup("127.0.0.1", port, rank, world_size=3, timeout_s=60)
            tensor = (
                torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
                if rank == 0
                else torch.empty(2, 3, dtype=torch.bfloat16)
            )
            group.broadcast(tensor, src=0, stream=None)
            received[rank] = tensor
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for rank in (1, 2):
        assert torch.equal(received[rank], received[0])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["flash_attn", "flash_attn.bert_padding", "flash_attn.utils.distributed"])
def test_standin_is_not_served_without_the_runtime(name):
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=clean_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named" in proc.stderr


def test_standin_serves_every_name_ring_attn_utils_imports():
    from openrlhf_maestro.runtime import flash_attn_standin
    from openrlhf_maestro.runtime.standin_finder import STANDIN_MODULES

    for names in STANDIN_MODULES.values():
        for name in names:
            assert callable(getattr(flash_attn_standin, name)), name


ISA_PROBE = r"""
import json, torch
import vllm.model_executor.layers.utils as u
from openrlhf_maestro.runtime.kernel_paths import process_kernels
# torch's bf16 SDPA, as the policy's Hugging Face forward runs it: on an AMX CPU it packs for oneDNN's brgemm
# unless oneDNN is capped too, and the AVX2 kernels then refuse ("pack_vnni2 is only supported when avx512 ...").
q = torch.randn(1, 2, 256, 64).bfloat16()
torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
print("REPORT" + json.dumps({
    "gemm_patched": getattr(u.dispatch_cpu_unquantized_gemm, "__openrlhf_cpu_patch__", False),
    "avx512": bool(torch.cpu._is_avx512_supported()),
    "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
    "amx": bool(torch.cpu._is_amx_tile_supported()),
    "capability": torch.backends.cpu.get_cpu_capability(),
    "onednn": process_kernels()["onednn"]["implementations"],
}))
"""


def _isa_probe(**env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", ISA_PROBE],
        env=clean_env(PYTHONPATH=str(SITE_DIR), **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("REPORT")).removeprefix("REPORT"))


def test_vllm_gemm_dispatch_is_patched_in_a_fresh_process_and_only_under_the_runtime():
    assert _isa_probe(OPENRLHF_CPU_RUNTIME="cpu")["gemm_patched"] is True
    assert _isa_probe()["gemm_patched"] is False


def test_cpu_isa_level_makes_torch_onednn_and_vllm_run_a_smaller_cpus_kernels():
    """Proved from the kernels that ran (torch's dispatch, oneDNN's executed primitives), not from the variables."""
    from openrlhf_maestro.runtime.cpu_info import cpu_isa
    from openrlhf_maestro.runtime.kernel_paths import above_avx2

    if not cpu_isa().has("AVX-512"):
        pytest.skip(f"emulating AVX2 changes nothing on this CPU ({cpu_isa().summary()})")
    native = _isa_probe(OPENRLHF_CPU_RUNTIME="cpu")
    assert native["avx512"] is True
    assert any(above_avx2(i) for i in native["onednn"]), native  # so the check below can tell
    avx2 = _isa_probe(OPENRLHF_CPU_RUNTIME="cpu", OPENRLHF_CPU_ISA="avx2")
    assert avx2 == {**avx2, "avx512": False, "avx512_bf16": False, "amx": False, "capability": "AVX2"}, avx2
    assert avx2["onednn"] and not any(above_avx2(i) for i in avx2["onednn"]), avx2["onednn"]
    # the same variable without the runtime does nothing
    assert _isa_probe(OPENRLHF_CPU_ISA="avx2")["avx512"] is True


def test_cpu_isa_avx512_level_caps_onednn_below_bf16():
    from openrlhf_maestro.runtime.cpu_info import cpu_isa

    if not cpu_isa().has("AVX-512-BF16"):
        pytest.skip(f"emulating AVX-512 without BF16 changes nothing on this CPU ({cpu_isa().summary()})")
    native = _isa_probe(OPENRLHF_CPU_RUNTIME="cpu")
    avx512 = _isa_probe(OPENRLHF_CPU_RUNTIME="cpu", OPENRLHF_CPU_ISA="avx512")
    # oneDNN names an implementation by the ISA it was built for: avx512_core_bf16 uses the bf16 instructions,
    # while gemm:jit:bf16 emulates bf16 on plain AVX-512 (allowed at this level).
    assert any("avx512_core_bf16" in i or "amx" in i for i in native["onednn"]), native["onednn"]
    assert avx512["capability"] == "AVX512" and avx512["avx512_bf16"] is False, avx512
    assert not any("avx512_core_bf16" in i or "amx" in i for i in avx512["onednn"]), avx512["onednn"]


def test_cpu_isa_level_names_the_bad_value():
    from openrlhf_maestro.runtime.cpu_patches import isa_level

    with pytest.raises(ValueError, match="OPENRLHF_CPU_ISA='sse4'.*native, avx512, avx2"):
        isa_level({"OPENRLHF_CPU_ISA": "sse4"})
    assert isa_level({}) == "native"
