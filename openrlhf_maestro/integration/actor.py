"""``PolicyModelActor`` that applies a ``PolicyProbe`` during its forward, on an unpatched OpenRLHF.

The upstream patch gives ``PolicyModelActor.forward`` a ``policy_probe`` argument and returns what the probe
read beside the log-probs. Here the same argument is accepted, and the same probe methods run, from hooks on
``lm_head``: its input is h and its output the logits (divided by the actor's rollout temperature, as
``Actor.forward`` does). The forward itself is OpenRLHF's own (``super().forward``), so no second pass runs.
Because OpenRLHF's unpatched experience maker expects only the log-probs back, the probe's per-response
values are kept, one record per probed forward, until the controller collects them with
``pop_channel_records``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray
import torch
from openrlhf.models.ring_attn_utils import gather_and_pad_tensor, unpad_and_slice_tensor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
from torch import nn

from openrlhf_maestro.probe import PolicyProbe


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
        with self._probing(policy_probe) as per_token:
            action_log_probs = super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        if self.actor.packing_samples:
            per_token = self._pad_packed(per_token, sequences, attention_mask)
        self._channel_records.append(policy_probe.per_sample(per_token, action_mask))
        return action_log_probs

    def _pad_packed(
        self, per_token: dict[str, torch.Tensor], sequences: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Packed (1, nnz[, H]) values -> padded (B, T[, H]), as ``Actor.forward`` pads its log-probs
        (actor.py 237-240, 302-303): the same ``unpad_and_slice_tensor`` indices, and with ring attention the
        slices of every rank of the ring group gathered first, so each sample's terminal state is read on the
        rank that holds it and reaches all of them."""
        device = next(iter(per_token.values())).device
        group = self.strategy.ring_attn_group
        _, _, _, pad_len, indices = unpad_and_slice_tensor(sequences.to(device), attention_mask.to(device), group)
        batch, seqlen = sequences.shape
        out = {}
        for name, values in per_token.items():
            padded = gather_and_pad_tensor(values, group, pad_len, indices, batch, seqlen)
            out[name] = padded.squeeze(-2) if padded.dim() == 4 else padded  # (B, T, 1, H) -> (B, T, H)
        return out

    @contextlib.contextmanager
    def _probing(self, probe: PolicyProbe) -> Iterator[dict[str, torch.Tensor]]:
        """Hooks on lm_head, for the block's forward, that hand its input and its scaled output to
        ``probe.per_token``; yields the dict the result lands in."""
        head = output_embedding_module(self.actor)
        temperature = float(getattr(self.actor, "temperature", 1.0))
        seen: dict[str, torch.Tensor] = {}
        per_token: dict[str, torch.Tensor] = {}

        def before(module, inputs):
            seen["hidden"] = inputs[0]

        def after(module, inputs, output):
            self._probed_forwards += 1
            logits = None
            if probe.needs_logits:
                logits = output.detach().float()
                if temperature != 1.0:
                    logits = logits / temperature
            per_token.update(probe.per_token(seen.get("hidden"), logits))

        handles = [head.register_forward_pre_hook(before), head.register_forward_hook(after)]
        try:
            yield per_token
        finally:
            for handle in handles:
                handle.remove()

    def pop_channel_records(self) -> tuple[list[dict[str, torch.Tensor]], int]:
        """Per probed forward since the last call, in call order: {"hidden": (B, H), <channel>: (B,)}, and the
        number of model forwards ``lm_head`` saw during them (equal to the number of records: no extra pass)."""
        records, self._channel_records = self._channel_records, []
        forwards, self._probed_forwards = self._probed_forwards, 0
        return records, forwards


ChannelPolicyModelActor = ray.remote(num_gpus=1)(_ChannelPolicyModelActor)
