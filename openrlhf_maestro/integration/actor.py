"""``PolicyModelActor`` that applies a ``PolicyProbe`` during its forward, on an unpatched OpenRLHF.

The upstream patch (``patches/openrlhf-0.11.2-policy-probe.patch``) gives ``PolicyModelActor.forward`` a
``policy_probe`` argument and keeps what the probe read until the experience maker pops it
(``pop_policy_probe_outputs``); the forward's return is unchanged. Here the same argument is accepted, and the
same probe methods run, from a forward
hook on ``lm_head``: its input is h, of which only each sample's context row is kept, and its output the
logits in the model's dtype, which the channels divide by the actor's rollout temperature (as ``Actor.forward``
does) one chunk of positions at a time, so the probe makes no full-size copy. The forward itself is OpenRLHF's
own (``super().forward``), so no second pass runs.
Because OpenRLHF's unpatched experience maker expects only the log-probs back, the probe's per-response
values are kept, one record per probed forward, until the controller collects them with
``pop_channel_records``.
"""

from __future__ import annotations

import ray
import torch
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_maestro.integration.probing import probed_forward


class _ChannelPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, *args, **kwargs):
        super().init_model_from_pretrained(strategy, *args, **kwargs)
        self._channel_records: list[dict[str, torch.Tensor]] = []
        self._probed_forwards = 0  # lm_head calls seen during probed forwards (one each: no extra pass)

    def forward(self, sequences, action_mask=None, attention_mask=None, *args, policy_probe=None, **kwargs):
        if policy_probe is None:
            return super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        action_log_probs, record, calls = probed_forward(
            self.actor,
            policy_probe,
            sequences,
            action_mask,
            attention_mask,
            lambda: super(_ChannelPolicyModelActor, self).forward(
                sequences, action_mask, attention_mask, *args, **kwargs
            ),
            self.strategy.ring_attn_group,
        )
        self._probed_forwards += calls
        self._channel_records.append(record)
        return action_log_probs

    def pop_channel_records(self) -> tuple[list[dict[str, torch.Tensor]], int]:
        """Per probed forward since the last call, in call order: {"hidden": (B, H), <channel>: (B,)}, and the
        number of model forwards ``lm_head`` saw during them (equal to the number of records: no extra pass)."""
        records, self._channel_records = self._channel_records, []
        forwards, self._probed_forwards = self._probed_forwards, 0
        return records, forwards


ChannelPolicyModelActor = ray.remote(num_gpus=1)(_ChannelPolicyModelActor)
