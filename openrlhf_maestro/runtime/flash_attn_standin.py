"""A pure-torch stand-in for the four ``flash_attn`` helpers OpenRLHF 0.11.2 imports unconditionally.

``openrlhf/models/ring_attn_utils.py`` (lines 3-4) runs ``from flash_attn.bert_padding import
index_first_axis, pad_input, rearrange, unpad_input`` and ``from flash_attn.utils.distributed import
all_gather`` at import time, and flash-attn is a CUDA build. The stand-in is served only by the CPU
runtime's import finder and has no dist-info, so ``transformers`` still reports FlashAttention as
unavailable and nothing selects a FlashAttention kernel.

Contracts follow flash-attn 2.8's ``bert_padding`` (shapes in each docstring).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange  # flash_attn.bert_padding re-exports einops' rearrange

__all__ = ["all_gather", "index_first_axis", "pad_input", "rearrange", "unpad_input"]


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x: (T, ...), indices: (n,) -> (n, ...): the rows of ``x`` at ``indices``."""
    return x[indices]


def unpad_input(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Drop padded positions.

    Args:
        hidden_states: (B, S, ...).
        attention_mask: (B, S), 1 for real tokens.
        unused_mask: (B, S) or None; tokens allocated but not attended to (kept, not counted as used).

    Returns:
        (nnz, ...) kept tokens, (nnz,) flat indices into B*S, (B+1,) int32 cumulative lengths,
        max length in the batch, (B,) int32 used lengths.
    """
    keep = attention_mask + unused_mask if unused_mask is not None else attention_mask
    seqlens = keep.sum(dim=-1, dtype=torch.int32)
    used = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(keep.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return flat[indices], indices, cu_seqlens, int(seqlens.max().item()), used


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of ``unpad_input``: (nnz, ...) -> (batch, seqlen, ...) with zeros at padded positions."""
    out = hidden_states.new_zeros((batch * seqlen, *hidden_states.shape[1:]))
    out[indices] = hidden_states
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])


def all_gather(x: torch.Tensor, process_group: dist.ProcessGroup | None) -> tuple[torch.Tensor, None]:
    """Concatenate ``x`` from every rank of ``process_group`` along dim 0; returns (tensor, handle=None)."""
    world = dist.get_world_size(process_group)
    out = x.new_empty((world * x.shape[0], *x.shape[1:]))
    dist.all_gather_into_tensor(out, x.contiguous(), group=process_group)
    return out, None
