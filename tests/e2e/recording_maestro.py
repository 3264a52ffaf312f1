"""MAESTRO that also saves what it read at every step, for the packed-vs-padded end-to-end test.

``--reward.plugins tests/e2e/recording_maestro.py --reward.aggregator maestro_recording``: the same
``MaestroAggregator`` (same options, same seed, same draws), plus one ``step<N>.pt`` per call in
``$MAESTRO_RECORD_DIR`` with the (N, K) objectives, the (N, H) contexts h and the (N, K) weights, rows in
sample order (the hook's order, whatever the micro-batching).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from openrlhf_maestro.method import AggregateOutput, MaestroAggregator, register_aggregator


@register_aggregator("maestro_recording")
class RecordingMaestroAggregator(MaestroAggregator):
    def aggregate(self, rewards, group_ids, hidden=None) -> AggregateOutput:
        out = super().aggregate(rewards, group_ids, hidden)
        self.recorded = getattr(self, "recorded", 0) + 1
        record = {"rewards": rewards, "group_ids": group_ids, "hidden": hidden, "weights": out.weights}
        torch.save(record, Path(os.environ["MAESTRO_RECORD_DIR"]) / f"step{self.recorded}.pt")
        return out
