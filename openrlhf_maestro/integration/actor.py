"""``PolicyModelActor`` that also reads the Conductor's context h during the experience maker's forward.

The forward is OpenRLHF's own (``super().forward``); a pre-hook on ``lm_head`` records its input, and the
(B, H) context rows are kept, one entry per forward call, until the controller collects them with
``pop_maestro_hidden``. Nothing goes into ``Experience.info`` and no second forward runs.
"""

from __future__ import annotations

import ray
import torch
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_maestro.integration.hidden_states import HiddenStateCapture, output_embedding_module, select_context


class _MaestroPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, *args, **kwargs):
        super().init_model_from_pretrained(strategy, *args, **kwargs)
        self._maestro_context = strategy.args.maestro.context
        self._maestro_capture = HiddenStateCapture(output_embedding_module(self.actor))
        self._maestro_hidden: list[torch.Tensor] = []

    def forward(self, sequences, action_mask=None, attention_mask=None, *args, **kwargs):
        with self._maestro_capture.capturing():
            action_log_probs = super().forward(sequences, action_mask, attention_mask, *args, **kwargs)
        hidden = self._maestro_capture.take()
        self._maestro_hidden.append(select_context(hidden, action_mask, self._maestro_context))
        return action_log_probs

    def pop_maestro_hidden(self) -> tuple[list[torch.Tensor], int]:
        """The (B, H) float32 context of every forward since the last call, in call order, and the number of
        model forwards ``lm_head`` saw (equal to the number of entries: no extra pass)."""
        hidden, self._maestro_hidden = self._maestro_hidden, []
        forwards, self._maestro_capture.forwards = self._maestro_capture.forwards, 0
        return hidden, forwards


MaestroPolicyModelActor = ray.remote(num_gpus=1)(_MaestroPolicyModelActor)
