"""How the launcher reads a ``PolicyProbe`` off OpenRLHF's ``Actor.forward``, without Ray (``actor.py`` runs it in
the policy actors; ``bench/`` and the GPU check run it on a bare ``Actor``).

A forward hook on ``lm_head`` hands its input (h) and its output (the logits, in the model's dtype) to
``probe.per_token`` with the actor's rollout temperature and each sample's context rows, so only (B, H) of h is
kept and the channels upcast and divide one chunk of positions at a time: no full-size copy of either. Packed
per-position channel values are padded back to (B, T) (4 bytes a token); with ring attention each rank reads
the contexts in its own slice of the packed row and the ranks' (B, H) reads are summed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from openrlhf.models.ring_attn_utils import gather_and_pad_tensor, unpad_and_slice_tensor
from torch import nn

from openrlhf_maestro.probe import HIDDEN, PolicyProbe, context_rows


def output_embedding_module(model: nn.Module) -> nn.Module:
    """The ``lm_head`` of an OpenRLHF ``Actor`` (its ``.model`` may be a DeepSpeed engine around the HF model)."""
    inner = getattr(model, "model", model)
    inner = getattr(inner, "module", inner)  # DeepSpeedEngine -> HF model
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if get is not None else None
    if head is None:
        raise TypeError(f"{type(inner).__name__} exposes no output embeddings (get_output_embeddings() is None)")
    return head


def local_context_rows(
    context: str, action_mask: torch.Tensor, attention_mask: torch.Tensor, packed: bool, ring_attn_group=None
) -> torch.Tensor:
    """(B,) rows of ``lm_head``'s input that hold each sample's context h on this rank (``context_rows``), -1
    where another ring-attention rank holds it: with ring attention each rank reads the slice
    [rank * L, (rank + 1) * L) of the packed row, L = ceil(nnz / ring size) (ring_attn_utils 80-93)."""
    rows = context_rows(action_mask, attention_mask, context, packed)
    if packed and ring_attn_group is not None:
        local = -(-int(attention_mask.sum()) // dist.get_world_size(ring_attn_group))
        rows = rows - dist.get_rank(ring_attn_group) * local
        rows[(rows < 0) | (rows >= local)] = -1
    return rows


def pad_packed(
    per_token: dict[str, torch.Tensor], sequences: torch.Tensor, attention_mask: torch.Tensor, ring_attn_group=None
) -> dict[str, torch.Tensor]:
    """Packed (1, nnz[, H]) values -> padded (B, T[, H]), as ``Actor.forward`` pads its log-probs
    (actor.py 237-240, 302-303): the same ``unpad_and_slice_tensor`` indices, and with ring attention the
    slices of every rank of the ring group gathered first. An h already read at its rows ((B, H)) is left
    as it is: only the per-position channel values ((1, nnz), 4 bytes a token) are padded."""
    device = next(iter(per_token.values())).device
    _, _, _, pad_len, indices = unpad_and_slice_tensor(
        sequences.to(device), attention_mask.to(device), ring_attn_group
    )
    batch, seqlen = sequences.shape
    out = {}
    for name, values in per_token.items():
        if name == HIDDEN and values.dim() == 2:
            out[name] = values
            continue
        padded = gather_and_pad_tensor(values, ring_attn_group, pad_len, indices, batch, seqlen)
        out[name] = padded.squeeze(-2) if padded.dim() == 4 else padded  # (B, T, 1, H) -> (B, T, H)
    return out


@contextlib.contextmanager
def probing(
    actor: nn.Module, probe: PolicyProbe, rows: torch.Tensor | None = None, calls: list | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """A forward hook on the actor's lm_head, for the block's forward, that hands its input (h) and its output
    (the logits, in the model's dtype, with the actor's rollout temperature) to ``probe.per_token`` with the
    context ``rows``; yields the dict the result lands in. Appends one entry to ``calls`` per lm_head call."""
    head = output_embedding_module(actor)
    temperature = float(getattr(actor, "temperature", 1.0))
    per_token: dict[str, torch.Tensor] = {}

    def after(module, inputs, output):
        if calls is not None:
            calls.append(1)
        logits = output if probe.needs_logits else None
        per_token.update(probe.per_token(inputs[0], logits, temperature=temperature, context_rows=rows))

    handle = head.register_forward_hook(after)
    try:
        yield per_token
    finally:
        handle.remove()


def probed_forward(
    actor: nn.Module,
    probe: PolicyProbe,
    sequences: torch.Tensor,
    action_mask: torch.Tensor,
    attention_mask: torch.Tensor,
    forward: Callable[[], Any],
    ring_attn_group=None,
) -> tuple[Any, dict[str, torch.Tensor], int]:
    """Run ``forward()`` (OpenRLHF's own, on ``actor``) with ``probe`` reading it.

    Returns:
        (what ``forward`` returned, ``probe.per_sample`` of the read: {"hidden": (B, H), <channel>: (B,)}
        float32 on the CPU, the number of lm_head calls during it).
    """
    packed = bool(getattr(actor, "packing_samples", False))
    rows = None
    if probe.needs_hidden:
        rows = local_context_rows(probe.context, action_mask, attention_mask, packed, ring_attn_group)
    calls: list = []
    with probing(actor, probe, rows, calls) as per_token:
        result = forward()
    if rows is not None and packed and ring_attn_group is not None:
        # each ring rank read the contexts in its own slice and zeros elsewhere (gather_rows): sum them
        dist.all_reduce(per_token[HIDDEN], group=ring_attn_group)
    if packed:
        per_token = pad_packed(per_token, sequences, attention_mask, ring_attn_group)
    return result, probe.per_sample(per_token, action_mask), len(calls)
