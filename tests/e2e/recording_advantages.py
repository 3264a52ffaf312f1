"""Records OpenRLHF's own advantages of every response, for the failure-policy end-to-end test.

``--reward.plugins tests/e2e/recording_advantages.py`` (imported in every process of the run) wraps
``AggregatorHook.after_advantages``, which the experience maker calls right after OpenRLHF's
``compute_advantages_and_returns``, so that each step writes ``advantages<step>.pt`` into
``$MAESTRO_RECORD_DIR``: one entry per response, in experience order, with its prompt, its sample index and
its advantages at its action tokens. Nothing else changes: the wrapped method then runs as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from openrlhf_maestro.integration.hook import AggregatorHook

_original = AggregatorHook.after_advantages


@functools.wraps(_original)
def _recording_after_advantages(self: AggregatorHook, experiences: list) -> dict[str, float]:
    rows = [
        {"prompt": prompt, "index": int(e.index[b]), "advantages": e.advantages[b][e.action_mask[b].bool()].clone()}
        for e in experiences
        for b, prompt in enumerate(e.prompts)
    ]
    torch.save(rows, Path(os.environ["MAESTRO_RECORD_DIR"]) / f"advantages{self.steps}.pt")
    return _original(self, experiences)


if not getattr(_original, "__recording__", False):  # imported once per process, but never wrap twice
    _recording_after_advantages.__recording__ = True
    AggregatorHook.after_advantages = _recording_after_advantages
