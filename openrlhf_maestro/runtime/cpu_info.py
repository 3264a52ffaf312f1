"""Which CPU this is, in the terms that decide vLLM's CPU kernels: AVX2, AVX-512, AVX-512-BF16, AMX.

    python -m openrlhf_maestro.runtime.cpu_info

vLLM's CPU wheel ships one kernel library per ISA level and loads it by these flags
(``vllm/platforms/cpu.py`` ``import_kernels``): ``_C`` with AVX-512 + BF16, ``_C_AVX512`` with AVX-512 alone,
``_C_AVX2`` otherwise; AMX adds the sgl GEMM kernels. A run on one machine can take paths another never
does, so ``make test``, ``make demo`` and every CPU-runtime launch print this line first.
Reads ``/proc/cpuinfo`` only: no torch or vLLM import, so it costs nothing to call.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Display name -> the /proc/cpuinfo flag that has to be present.
ISA_FLAGS: dict[str, str] = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX-512-BF16": "avx512_bf16",
    "AMX": "amx_tile",
}


@dataclass(frozen=True)
class CpuIsa:
    model: str
    cores: int
    flags: frozenset[str]

    def has(self, isa: str) -> bool:
        return ISA_FLAGS[isa] in self.flags

    def vllm_kernel_library(self) -> str:
        """The kernel library vLLM's CPU build loads here (mirrors ``CpuPlatform.import_kernels`` on x86)."""
        if self.has("AVX-512"):
            return "_C (AVX-512 + BF16)" if self.has("AVX-512-BF16") else "_C_AVX512"
        return "_C_AVX2"

    def vllm_attention_isa(self, head_size: int = 64) -> str:
        """The attention kernel vLLM's CPU backend picks here for a bf16 model with its default KV block of 128
        tokens (mirrors ``cpu_attn._get_attn_isa`` on x86): ``vec16`` for head sizes of 16 mod 32, else ``amx``
        with AMX tiles, else ``vec``."""
        if head_size % 32 and head_size % 16 == 0:
            return "vec16"
        return "amx" if self.has("AMX") else "vec"

    def summary(self) -> str:
        isas = ", ".join(f"{name} {'yes' if self.has(name) else 'no'}" for name in ISA_FLAGS)
        return (
            f"{self.model} ({self.cores} cores): {isas}; vLLM kernels {self.vllm_kernel_library()}, "
            f"attention {self.vllm_attention_isa()} (bf16)"
        )


def cpu_isa(cpuinfo: str | None = None) -> CpuIsa:
    """Parse ``/proc/cpuinfo`` (or the given text). Flags are those of the first processor listed."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = "", frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return CpuIsa(model=model, cores=os.cpu_count() or 1, flags=flags)


def main() -> None:
    print(f"[cpu] {cpu_isa().summary()}", flush=True)


if __name__ == "__main__":
    main()
