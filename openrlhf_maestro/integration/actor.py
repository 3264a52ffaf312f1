"""``PolicyModelActor`` that also reads the Conductor's context and the model channels during its forward.

The forward is OpenRLHF's own (``super().forward``). Hooks on ``lm_head`` record its input (the Conductor's
context h) and, when the ``entropy`` channel is on, the response's token entropy from its output. One record
per forward call is kept until the controller collects them with ``pop_channel_records``. Nothing goes into
``Experience.info`` and no second forward runs. ``channel_reference_nll`` is the one extra, batched
teacher-forced forward of the ``perplexity`` channel.
"""

from __future__ import annotations

import functools

import ray
import torch
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_maestro.integration.flags import spec_from_flags
from openrlhf_maestro.integration.hidden_states import HiddenStateCapture, output_embedding_module, select_context


class _ChannelPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, *args, **kwargs):
        super().init_model_from_pretrained(strategy, *args, **kwargs)
        a = strategy.args
        spec = spec_from_flags(a)  # validated in the driver already
        self._channel_context = spec.context
        self._channel_hidden_on = spec.needs_hidden
        # Channels that read the logits of this very forward; each reduces them to (B,) inside the hook.
        channels = [spec.channel(n) for n in spec.model_channels]
        self._logit_channels = [c for c in channels if c.source == "policy_logits"]
        self._channel_mask: torch.Tensor | None = None
        on_logits = functools.partial(self._reduce_logits, temperature=a.rollout.temperature)
        self._channel_capture = HiddenStateCapture(
            output_embedding_module(self.actor), on_logits if self._logit_channels else None
        )
        self._channel_records: list[dict[str, torch.Tensor]] = []

    def _reduce_logits(self, logits: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
        mask = self._channel_mask.to(logits.device)
        return {c.name: c.from_logits(logits, mask, temperature) for c in self._logit_channels}

    def forward(self, sequences, action_mask=None, attention_mask=None, *args, **kwargs):
        self._channel_mask = action_mask
        with self._channel_capture.capturing():
            action_log_probs = super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        hidden = self._channel_capture.take()
        record = {}
        if self._channel_hidden_on:
            record["hidden"] = select_context(hidden, action_mask, self._channel_context)
        if self._logit_channels:
            record.update(self._channel_capture.from_logits)
        self._channel_records.append(record)
        return action_log_probs

    def pop_channel_records(self) -> tuple[list[dict[str, torch.Tensor]], int]:
        """Per forward since the last call, in call order: {"hidden": (B, H), <channel>: (B,)} as enabled, and
        the number of model forwards ``lm_head`` saw (equal to the number of records: no extra pass)."""
        records, self._channel_records = self._channel_records, []
        forwards, self._channel_capture.forwards = self._channel_capture.forwards, 0
        return records, forwards

    def channel_reference_nll(self, sequences, action_mask, attention_mask) -> torch.Tensor:
        """(B,) mean negative log-likelihood of the tokens ``action_mask`` marks, teacher-forced (policy_forward
        channels such as ``perplexity``)."""
        log_probs = super().forward(sequences, action_mask, attention_mask)  # OpenRLHF's forward, no capture
        mask = action_mask.to(log_probs.device).float()
        return (-(log_probs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).float().cpu()


ChannelPolicyModelActor = ray.remote(num_gpus=1)(_ChannelPolicyModelActor)
