"""The Conductor's context h: the policy's final-normed hidden state, read during a forward that already runs.

A forward pre-hook on the output-embedding module (``lm_head``) sees its input, the last layer's
hidden states after the final norm, shape (B, T, H). ``PolicyModelActor.forward`` (the experience
maker's actor forward, ppo_actor.py 618-644) runs it anyway for the action log-probs, so reading h
there costs no extra forward pass.

Positions (OpenRLHF 0.11.2, no packing): ``action_mask`` (B, A) covers the last A of the T-1 next-token
predictions (actor.py 296), so action index i predicts the token at sequence position T-1-A+i+1.
- ``response``: the state after reading the response's last token, position T-A + last_i.
- ``prompt``: the state after reading the prompt's last token, position T-A + first_i - 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


def terminal_positions(action_mask: torch.Tensor, seq_len: int, context: str) -> torch.Tensor:
    """(B, A) action mask -> (B,) sequence positions whose hidden state is the Conductor's context.

    Raises:
        ValueError: a row has no action token (an empty response) or ``context`` is unknown.
    """
    if context not in ("response", "prompt"):
        raise ValueError(f"context must be 'response' or 'prompt', got {context!r}")
    mask = action_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no response token; cannot read the Conductor's context")
    num_actions = mask.shape[1]
    idx = torch.arange(num_actions, device=mask.device).expand_as(mask)
    offset = seq_len - num_actions
    if context == "response":
        return offset + torch.where(mask, idx, -1).max(dim=1).values
    return offset + torch.where(mask, idx, num_actions).min(dim=1).values - 1


def output_embedding_module(model: nn.Module) -> nn.Module:
    """The ``lm_head`` of an OpenRLHF ``Actor`` (its ``.model`` may be a DeepSpeed engine around the HF model)."""
    inner = getattr(model, "model", model)
    inner = getattr(inner, "module", inner)  # DeepSpeedEngine -> HF model
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if get is not None else None
    if head is None:
        raise TypeError(f"{type(inner).__name__} exposes no output embeddings (get_output_embeddings() is None)")
    return head


class HiddenStateCapture:
    """Records the input of ``lm_head`` while ``capturing`` is on; counts the model forwards it saw.

    With ``on_logits``, also keeps ``on_logits(logits)`` of the same call (e.g. the token entropy), computed
    inside the hook so no reference to the (B, T, V) logits outlives it.

    Usage (the hooks stay registered; outside ``capturing`` they return at once):
        capture = HiddenStateCapture(output_embedding_module(actor))
        with capture.capturing():
            actor(sequences, action_mask, attention_mask)
        h = capture.take()  # (B, T, H)
    """

    def __init__(self, head: nn.Module, on_logits: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self._active = False
        self._hidden: torch.Tensor | None = None
        self.from_logits: torch.Tensor | None = None
        self.forwards = 0
        self._on_logits = on_logits
        head.register_forward_pre_hook(self._hook)
        if on_logits is not None:
            head.register_forward_hook(self._logits_hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        if self._active:
            self._hidden = args[0].detach()
            self.forwards += 1

    def _logits_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._active:
            self.from_logits = self._on_logits(output.detach())

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        self._active, self._hidden, self.from_logits = True, None, None
        try:
            yield
        finally:
            self._active = False

    def take(self) -> torch.Tensor:
        if self._hidden is None:
            raise RuntimeError("lm_head did not run during the captured forward; the hidden state is unavailable")
        hidden, self._hidden = self._hidden, None
        return hidden


def select_context(hidden: torch.Tensor, action_mask: torch.Tensor, context: str) -> torch.Tensor:
    """(B, T, H) hidden states, (B, A) action mask -> (B, H) float32 context vectors on the CPU."""
    positions = terminal_positions(action_mask.to(hidden.device), hidden.shape[1], context)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions].float().cpu()
