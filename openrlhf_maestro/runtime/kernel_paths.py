"""Which CPU kernels a process actually ran, read from the libraries themselves rather than from variables.

``--runtime.cpu_isa avx2`` sets variables (torch's probes, ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``); this
module is how a run proves they took effect:

- torch: the capability its dispatch chose (``torch.backends.cpu.get_cpu_capability()``);
- oneDNN: the implementation of each primitive it executed, from its own verbose log (``brg_matmul:avx2``,
  ``brg_matmul:avx512_core_amx``, ...), for a float32 inner product and a bf16 matmul run here;
- vLLM: the kernel library mapped into the process (``/proc/self/maps``) and the attention ISA each attention
  layer of a loaded model was given (``layer.isa``: ``amx``, ``vec`` or ``vec16``).

No torch or vLLM import at module level: the CPU runtime's site hook may import this module early.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Where each ISA name shows in an oneDNN implementation name (``brg_matmul:avx512_core_bf16``): the part after
# the colon. ``uni`` (ISA-independent) and ``ref`` are allowed at every level.
ONEDNN_ISAS_ABOVE_AVX2 = ("avx512", "amx", "avx10")


@contextlib.contextmanager
def _stdout_fd_captured() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 1 inside the block (oneDNN's verbose log goes there)."""
    lines: list[str] = []
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield lines
        finally:
            libc.fflush(None)  # C stdio is fully buffered when fd 1 is not a terminal
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


@functools.cache
def onednn_kernels() -> dict:
    """Run a float32 inner product and a bf16 matmul through oneDNN with its verbose log on; report what ran.

    Returns ``{"isa": the CPU ISA line oneDNN prints (its effective maximum, "" if it printed none),
    "implementations": sorted implementation names of the executed primitives}``. Cached: oneDNN prints its
    header once per process, and a process's ISA does not change.
    """
    import torch

    x, w = torch.randn(8, 64), torch.randn(32, 64)
    with _stdout_fd_captured() as lines, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        torch._C._nn.mkldnn_linear(x.to_mkldnn(), w.to_mkldnn(), None)
        torch.nn.functional.linear(x.bfloat16(), w.bfloat16())  # oneDNN only where it has a bf16 path
    isa, implementations = "", set()
    for line in lines:
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "isa:" in line:
            isa = line.split("isa:", 1)[1].strip()
        elif len(fields) > 6 and fields[2] == "primitive" and fields[3] == "exec":
            implementations.add(fields[6])
    return {"isa": isa, "implementations": sorted(implementations)}


def above_avx2(implementation: str) -> bool:
    """Whether an oneDNN implementation name (``kind:isa``) uses instructions an AVX2-only CPU lacks."""
    isa = implementation.partition(":")[2]
    return any(name in isa for name in ONEDNN_ISAS_ABOVE_AVX2)


def loaded_vllm_libraries() -> list[str]:
    """vLLM's kernel libraries (``_C.abi3.so``, ``_C_AVX2.abi3.so``, ...) mapped into this process."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    return sorted({Path(line.split()[-1]).name for line in maps.read_text().splitlines() if "/vllm/_C" in line})


def attention_isas(model) -> list[str]:
    """The ISAs vLLM's CPU attention backend gave the attention layers of ``model`` (set when the KV cache is
    built, ``cpu_attn.py`` ``_set_isa_to_layers``): what every attention call of this engine runs."""
    return sorted({m.isa for m in model.modules() if isinstance(getattr(m, "isa", None), str)})


def process_kernels() -> dict:
    """Everything above that needs no model: torch's dispatch, oneDNN's primitives, vLLM's library."""
    import torch

    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": bool(torch.cpu._is_avx512_supported()),
        "vllm_kernels": loaded_vllm_libraries(),
        "onednn": onednn_kernels(),
    }
