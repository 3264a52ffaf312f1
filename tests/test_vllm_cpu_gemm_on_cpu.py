"""vLLM's CPU GEMM dispatch, path by path: what vLLM itself does to a synced weight, and what the runtime does.

vLLM 0.29.0 picks one of four GEMM paths per layer when a model loads (``dispatch_cpu_unquantized_gemm``):
zentorch, the sgl AMX kernels, a prepacked oneDNN handle, or ``torch.nn.functional.linear``. Each test
forces one path where this CPU can take it (and skips, naming what is missing, where it cannot), then checks:

- vLLM's own dispatch: the prepacked paths drop the weight (linear layers) or ignore later writes to it
  (embeddings / ``lm_head``), the plain path follows them. This pins the upstream behaviour the patch exists
  for; if a vLLM upgrade changes it, these assertions say so.
- the CPU runtime's dispatch (``cpu_patches._plain_linear_dispatch``): on every path the weight stays a live
  ``Parameter`` and the output after a write equals ``F.linear`` with the written weight, bit for bit.

The real vLLM layer classes need a vLLM engine config; the dispatch only reads ``layer.weight`` and
``layer.bias``, so a bare module with those two attributes is what it sees in the engine too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from openrlhf_maestro.runtime.cpu_info import cpu_isa
from openrlhf_maestro.runtime.cpu_patches import _plain_linear_dispatch

vllm_utils = pytest.importorskip("vllm.model_executor.layers.utils")
from vllm import _custom_ops as ops  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

# N % 16 == 0, K % 32 == 0 and under 1 MiB in bf16, so the sgl kernel accepts it on AMX machines.
N, K = 64, 128


class Layer(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = None


def _weights() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    old = torch.randn(N, K, generator=g).to(torch.bfloat16)
    new = torch.randn(N, K, generator=g).to(torch.bfloat16)
    x = torch.randn(3, K, generator=g).to(torch.bfloat16)
    return old, new, x


def _zentorch_available() -> bool:
    return current_platform.is_zen_cpu() and hasattr(getattr(torch.ops, "zentorch", None), "zentorch_linear_unary")


# path -> (can this CPU take it?, why not)
AVAILABLE: dict[str, tuple[bool, str]] = {
    "zentorch": (_zentorch_available(), "needs an AMD Zen CPU with the zentorch package (vLLM's ZenCpuPlatform)"),
    "sgl_amx": (bool(torch.cpu._is_amx_tile_supported()), "needs AMX tiles (amx_tile); this CPU has none"),
    "onednn": (bool(ops._supports_onednn), "vLLM's kernel build for this CPU has no oneDNN GEMM handler"),
    "fallback": (True, ""),
}


@contextlib.contextmanager
def forced_path(monkeypatch: pytest.MonkeyPatch, path: str) -> Iterator[list[str]]:
    """Make vLLM's dispatch take ``path``: switch off every path it would try before it; record what ran."""
    taken: list[str] = []
    if path != "zentorch":
        monkeypatch.setattr(current_platform, "is_zen_cpu", lambda: False, raising=False)
    if path in ("onednn", "fallback"):
        monkeypatch.setattr(vllm_utils, "check_cpu_sgl_kernel", lambda n, k, dtype: False)
    if path == "sgl_amx":
        original = vllm_utils.check_cpu_sgl_kernel
        monkeypatch.setattr(
            vllm_utils, "check_cpu_sgl_kernel", lambda n, k, dtype: taken.append("sgl_amx") or original(n, k, dtype)
        )
    if path == "onednn":
        create = ops.create_onednn_mm
        monkeypatch.setattr(ops, "create_onednn_mm", lambda *a: taken.append("onednn") or create(*a))
    if path == "fallback":
        monkeypatch.setattr(ops, "_supports_onednn", False)
        taken.append("fallback")
    yield taken


def _skip_unless_available(path: str) -> None:
    ok, why = AVAILABLE[path]
    if not ok:
        pytest.skip(f"GEMM path {path} not on this CPU ({cpu_isa().summary()}): {why}")


@pytest.mark.parametrize("path", list(AVAILABLE))
def test_vllm_own_dispatch_drops_or_ignores_synced_weights_except_the_plain_path(path, monkeypatch):
    _skip_unless_available(path)
    old, new, x = _weights()
    with forced_path(monkeypatch, path) as taken:
        linear, embedding = Layer(old), Layer(old)
        vllm_utils.dispatch_cpu_unquantized_gemm(linear, remove_weight=True)  # as linear.py 215
        vllm_utils.dispatch_cpu_unquantized_gemm(embedding, remove_weight=False)  # as vocab_parallel_embedding.py 66
    assert path in taken, f"vLLM did not take the {path} path: {taken}"
    embedding.weight.data.copy_(new)  # what load_weights does during a sync
    out = embedding.cpu_linear(x, embedding.weight, None)
    if path == "fallback":
        assert linear.weight.shape == (N, K)
        torch.testing.assert_close(out, torch.nn.functional.linear(x, new), rtol=0, atol=0)
    else:
        assert linear.weight.numel() == 0, "vLLM kept the linear weight; the patch may no longer be needed"
        assert not torch.allclose(out.float(), torch.nn.functional.linear(x, new).float(), atol=1e-1), (
            "vLLM's prepacked path now follows weight writes; the patch may no longer be needed"
        )


@pytest.mark.parametrize("path", list(AVAILABLE))
def test_runtime_dispatch_keeps_weights_live_on_every_path(path, monkeypatch):
    _skip_unless_available(path)
    old, new, x = _weights()
    with forced_path(monkeypatch, path):
        dispatch = _plain_linear_dispatch(vllm_utils.dispatch_cpu_unquantized_gemm)
        layers = [Layer(old), Layer(old)]
        dispatch(layers[0], remove_weight=True)
        dispatch(layers[1], remove_weight=False)
    for layer in layers:
        assert isinstance(layer.weight, torch.nn.Parameter) and layer.weight.shape == (N, K)
        torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), torch.nn.functional.linear(x, old))
        layer.weight.data.copy_(new)
        torch.testing.assert_close(
            layer.cpu_linear(x, layer.weight, None), torch.nn.functional.linear(x, new), rtol=0, atol=0
        )


def test_runtime_dispatch_leaves_non_matrix_weights_to_vllm():
    calls = []
    dispatch = _plain_linear_dispatch(lambda layer, remove_weight: calls.append(remove_weight))
    conv = Layer(torch.zeros(N, 1, 4))
    dispatch(conv, remove_weight=True)
    assert calls == [True] and not hasattr(conv, "cpu_linear")
