"""Which CPU ran: /proc/cpuinfo parsed into the ISAs that pick vLLM's kernels, and the launcher's refusal to
emulate a CPU above this one."""

from __future__ import annotations

import pytest

from openrlhf_maestro.runtime import cpu_launch
from openrlhf_maestro.runtime.cpu_info import cpu_isa

AVX2_ONLY = "processor : 0\nmodel name : Intel(R) Xeon(R) CPU E5-2680 v4\nflags : fpu sse4_2 avx avx2 fma\n"
AVX512_BF16 = "model name : AMD EPYC 9R14\nflags : avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
AMX = "model name : Intel(R) Xeon(R) Platinum 8480+\nflags : avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(
    ("cpuinfo", "isas", "library"),
    [
        (AVX2_ONLY, {"AVX2"}, "_C_AVX2"),
        ("model name : X\nflags : avx2 avx512f\n", {"AVX2", "AVX-512"}, "_C_AVX512"),
        (AVX512_BF16, {"AVX2", "AVX-512", "AVX-512-BF16"}, "_C (AVX-512 + BF16)"),
        (AMX, {"AVX2", "AVX-512", "AVX-512-BF16", "AMX"}, "_C (AVX-512 + BF16)"),
    ],
)
def test_isas_and_the_vllm_library_they_select(cpuinfo, isas, library):
    cpu = cpu_isa(cpuinfo)
    assert {name for name in ("AVX2", "AVX-512", "AVX-512-BF16", "AMX") if cpu.has(name)} == isas
    assert cpu.vllm_kernel_library() == library
    assert cpu.summary().startswith(cpu.model) and library in cpu.summary()


def test_this_machine_is_described():
    cpu = cpu_isa()
    assert cpu.model and cpu.cores >= 1 and "AVX2" in cpu.summary()


def test_launcher_refuses_to_emulate_an_isa_this_cpu_lacks(monkeypatch):
    monkeypatch.setattr(cpu_launch, "cpu_isa", lambda: cpu_isa(AVX2_ONLY))
    with pytest.raises(cpu_launch.CpuFlagError, match="--runtime.cpu_isa avx512: this CPU has no AVX-512"):
        cpu_launch._check_isa("avx512")
    cpu_launch._check_isa("avx2")
    with pytest.raises(cpu_launch.CpuFlagError, match="use one of native, avx512, avx2"):
        cpu_launch._check_isa("sse")
