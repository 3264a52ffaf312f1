"""``PolicyProbe``: what the reward aggregation reads from the policy forward that the experience maker runs anyway.

The experience maker's policy forward computes the action log-probs of every response. A probe rides on that
same forward, in two steps, so no second pass is needed:

    per_token(hidden, logits)         -> {"hidden": (.., T, H)} if the aggregator reads a context h,
                                         {<channel>: (.., T)} per ``policy_logits`` model channel
    per_sample(per_token, action_mask) -> {"hidden": (B, H), <channel>: (B,)}, float32 on the CPU

``hidden`` is the input of the output embedding (the last layer's final-normed state); ``logits`` are the
float32 logits already divided by the rollout temperature. ``per_token`` is layout-agnostic (padded (B, T) or
packed (1, nnz)); the integration pads its outputs back to (B, T, ...) before ``per_sample``, which reads
padded rows with OpenRLHF's action layout: action index i predicts the token at position T - A + i.

Without full-size copies (what the launcher does, ``integration/actor.py``): ``per_token`` also takes the
logits in the model's own dtype with ``temperature=`` (the channels upcast and divide one chunk of positions at
a time, ``ModelChannel.per_token_in_chunks``), and ``context_rows=`` (from ``context_rows``: where each
sample's context sits among the rows ``lm_head`` reads), with which it returns h already as (B, H), so
nothing of size (B, T, H) is kept or padded; ``per_sample`` passes such an h through.

The probe is plain data (a context and channel names with options), so Ray ships it to the policy actors
with the forward's arguments; the channel classes resolve there, after the plugins are imported.
Pure torch: no OpenRLHF import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from openrlhf_maestro.channels import ModelChannel, get_channel, response_mean
from openrlhf_maestro.method import load_module

HIDDEN = "hidden"
CONTEXTS = ("response", "prompt")


def terminal_positions(action_mask: torch.Tensor, seq_len: int, context: str) -> torch.Tensor:
    """(B, A) action mask -> (B,) sequence positions whose hidden state is the Conductor's context h.

    ``response``: the state after reading the response's last token, position T - A + last action index.
    ``prompt``: the state after reading the prompt's last token, position T - A + first action index - 1.

    Raises:
        ValueError: a row has no action token (an empty response) or ``context`` is unknown.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {list(CONTEXTS)}, got {context!r}")
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


def select_context(hidden: torch.Tensor, action_mask: torch.Tensor, context: str) -> torch.Tensor:
    """(B, T, H) hidden states, (B, A) action mask -> (B, H) float32 context vectors on the CPU."""
    positions = terminal_positions(action_mask.to(hidden.device), hidden.shape[1], context)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions].float().cpu()


def context_rows(action_mask: torch.Tensor, attention_mask: torch.Tensor, context: str, packed: bool) -> torch.Tensor:
    """(B, A) action mask, (B, T) attention mask -> (B,) index of each sample's context position among the rows
    ``lm_head`` reads, flattened: b * T + position in the padded layout; in OpenRLHF's packed layout (the attended
    tokens of the (B, T) grid in row-major order, ``unpad_and_slice_tensor``) the number of attended tokens
    before it.

    Raises:
        ValueError: as ``terminal_positions``, or a context position is not attended (padding).
    """
    batch, seq_len = attention_mask.shape
    positions = terminal_positions(action_mask, seq_len, context)
    flat = torch.arange(batch, device=positions.device) * seq_len + positions
    if not packed:
        return flat
    attended = attention_mask.to(positions.device).flatten().bool()
    padding = (~attended[flat]).nonzero().flatten().tolist()
    if padding:
        raise ValueError(f"rows {padding}: the {context} context position is padding in the attention mask")
    return attended.long().cumsum(0)[flat] - 1


def gather_rows(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(.., T, H) states, (B,) flat row indices -> (B, H) in ``hidden``'s dtype; a row index outside
    [0, rows of ``hidden``) gives zeros (that row is held elsewhere, e.g. by another ring-attention rank)."""
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    rows = rows.to(flat.device)
    here = (rows >= 0) & (rows < flat.shape[0])
    out = torch.zeros(rows.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    out[here] = flat[rows[here]]
    return out


@dataclass(frozen=True)
class PolicyProbe:
    """The reads of one run (module docstring). Build it with ``PolicyProbe.of(spec)``.

    Attributes:
        context: where h is read (``response`` / ``prompt``), or None when the aggregator reads no h.
        channels: ``policy_logits`` channel name -> its options.
        plugins: modules or files to import before the channels resolve (they may register them).
    """

    context: str | None = None
    channels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec) -> PolicyProbe | None:
        """The probe an ``AggregatorSpec`` needs, or None when it reads nothing from the policy forward."""
        names = [n for n in spec.model_channels if get_channel(n).source == "policy_logits"]
        if not spec.needs_hidden and not names:
            return None
        return cls(
            context=spec.context if spec.needs_hidden else None,
            channels={n: dict(spec.channels.get(n, {})) for n in names},
            plugins=tuple(spec.plugins),
        )

    @property
    def needs_hidden(self) -> bool:
        return self.context is not None

    @property
    def needs_logits(self) -> bool:
        return bool(self.channels)

    def _channels(self) -> dict[str, ModelChannel]:
        for plugin in self.plugins:  # validated where the spec was built; here only imported (once per process)
            load_module(plugin)
        return {name: get_channel(name)(**options) for name, options in self.channels.items()}

    def per_token(
        self,
        hidden: torch.Tensor | None,
        logits: torch.Tensor | None,
        *,
        temperature: float = 1.0,
        context_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-position values of one forward: h (.., T, H) as given, each channel's (.., T) from the logits.

        Args:
            hidden: the output embedding's input, (.., T, H).
            logits: (.., T, V), in any float dtype; each channel reads float32(logits) / ``temperature`` a chunk
                of positions at a time (``ModelChannel.per_token_in_chunks``), so pass the model's own logits
                and the rollout temperature rather than a full float32 copy (the default 1 suits logits that are
                already divided).
            context_rows: (B,) indices from ``context_rows`` (or -1: not in this ``hidden``); then h is returned
                as (B, H) at those rows (``gather_rows``) instead of the whole (.., T, H).
        """
        out: dict[str, torch.Tensor] = {}
        if self.needs_hidden:
            if hidden is None:
                raise RuntimeError("the policy probe needs the output embedding's input, but none was captured")
            out[HIDDEN] = hidden.detach() if context_rows is None else gather_rows(hidden, context_rows)
        if self.needs_logits:
            if logits is None:
                raise RuntimeError("the policy probe's channels need the policy's logits, but none were given")
            for name, channel in self._channels().items():
                out[name] = channel.per_token_in_chunks(logits.detach(), temperature)
        return out

    def per_sample(self, per_token: Mapping[str, torch.Tensor], action_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Padded (B, T, ...) per-position values -> one value (or h) per response, float32 on the CPU.
        An h already read at ``context_rows`` ((B, H)) passes through."""
        out: dict[str, torch.Tensor] = {}
        for name, values in per_token.items():
            if name == HIDDEN and values.dim() == 2:
                out[name] = values.float().cpu()
            elif name == HIDDEN:
                out[name] = select_context(values, action_mask, self.context)
            else:
                out[name] = response_mean(values, action_mask).float().cpu()
        return out
