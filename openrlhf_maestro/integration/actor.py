"""``PolicyModelActor`` that applies a ``PolicyProbe`` during its forward, on an unpatched OpenRLHF.

The upstream patch gives ``PolicyModelActor.forward`` a ``policy_probe`` argument and returns what the probe
read beside the log-probs. Here the same argument is accepted, and the same probe methods run, from a forward
hook on ``lm_head``: its input is h, of which only each sample's context row is kept, and its output the
logits in the model's dtype, which the channels divide by the actor's rollout temperature (as ``Actor.forward``
does) one chunk of positions at a time, so the probe makes no full-size copy. The forward itself is OpenRLHF's
own (``super().forward``), so no second pass runs.
Because OpenRLHF's unpatched experience maker expects only the log-probs back, the probe's per-response
values are kept, one record per probed forward, until the controller collects them with
``pop_channel_records``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray
import torch
import torch.distributed as dist
from openrlhf.models.ring_attn_utils import gather_and_pad_tensor, unpad_and_slice_tensor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
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


class _ChannelPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, *args, **kwargs):
        super().init_model_from_pretrained(strategy, *args, **kwargs)
        self._channel_records: list[dict[str, torch.Tensor]] = []
        self._probed_forwards = 0  # lm_head calls seen during probed forwards (one each: no extra pass)

    def forward(self, sequences, action_mask=None, attention_mask=None, *args, policy_probe=None, **kwargs):
        if policy_probe is None:
            return super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        rows = None
        if policy_probe.needs_hidden:
            rows = self._local_context_rows(policy_probe.context, action_mask, attention_mask)
        with self._probing(policy_probe, rows) as per_token:
            action_log_probs = super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        if rows is not None and self.actor.packing_samples and self.strategy.ring_attn_group is not None:
            # each ring rank read the contexts in its own slice and zeros elsewhere (gather_rows): sum them
            dist.all_reduce(per_token[HIDDEN], group=self.strategy.ring_attn_group)
        if self.actor.packing_samples:
            per_token = self._pad_packed(per_token, sequences, attention_mask)
        self._channel_records.append(policy_probe.per_sample(per_token, action_mask))
        return action_log_probs

    def _local_context_rows(self, context: str, action_mask: torch.Tensor, attention_mask: torch.Tensor):
        """(B,) rows of ``lm_head``'s input that hold each sample's context h on this rank (``context_rows``), -1
        where another ring-attention rank holds it: with ring attention each rank reads the slice
        [rank * L, (rank + 1) * L) of the packed row, L = ceil(nnz / ring size) (ring_attn_utils 80-93)."""
        packed = bool(self.actor.packing_samples)
        rows = context_rows(action_mask, attention_mask, context, packed)
        group = self.strategy.ring_attn_group
        if packed and group is not None:
            local = -(-int(attention_mask.sum()) // dist.get_world_size(group))
            rows = rows - dist.get_rank(group) * local
            rows[(rows < 0) | (rows >= local)] = -1
        return rows

    def _pad_packed(
        self, per_token: dict[str, torch.Tensor], sequences: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Packed (1, nnz[, H]) values -> padded (B, T[, H]), as ``Actor.forward`` pads its log-probs
        (actor.py 237-240, 302-303): the same ``unpad_and_slice_tensor`` indices, and with ring attention the
        slices of every rank of the ring group gathered first. An h already read at its rows ((B, H)) is left
        as it is: only the per-position channel values ((1, nnz), 4 bytes a token) are padded."""
        device = next(iter(per_token.values())).device
        group = self.strategy.ring_attn_group
        _, _, _, pad_len, indices = unpad_and_slice_tensor(sequences.to(device), attention_mask.to(device), group)
        batch, seqlen = sequences.shape
        out = {}
        for name, values in per_token.items():
            if name == HIDDEN and values.dim() == 2:
                out[name] = values
                continue
            padded = gather_and_pad_tensor(values, group, pad_len, indices, batch, seqlen)
            out[name] = padded.squeeze(-2) if padded.dim() == 4 else padded  # (B, T, 1, H) -> (B, T, H)
        return out

    @contextlib.contextmanager
    def _probing(
        self, probe: PolicyProbe, context_rows: torch.Tensor | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """A forward hook on lm_head, for the block's forward, that hands its input (h) and its output (the
        logits, in the model's dtype, with the actor's rollout temperature) to ``probe.per_token``; yields the
        dict the result lands in. No full-size copy: the channels upcast and divide one chunk of positions at a
        time, and with ``context_rows`` only the (B, H) context rows of h are kept."""
        head = output_embedding_module(self.actor)
        temperature = float(getattr(self.actor, "temperature", 1.0))
        per_token: dict[str, torch.Tensor] = {}

        def after(module, inputs, output):
            self._probed_forwards += 1
            logits = output if probe.needs_logits else None
            read = probe.per_token(inputs[0], logits, temperature=temperature, context_rows=context_rows)
            per_token.update(read)

        handle = head.register_forward_hook(after)
        try:
            yield per_token
        finally:
            handle.remove()

    def pop_channel_records(self) -> tuple[list[dict[str, torch.Tensor]], int]:
        """Per probed forward since the last call, in call order: {"hidden": (B, H), <channel>: (B,)}, and the
        number of model forwards ``lm_head`` saw during them (equal to the number of records: no extra pass)."""
        records, self._channel_records = self._channel_records, []
        forwards, self._probed_forwards = self._probed_forwards, 0
        return records, forwards


ChannelPolicyModelActor = ray.remote(num_gpus=1)(_ChannelPolicyModelActor)
