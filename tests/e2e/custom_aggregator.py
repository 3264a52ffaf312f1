"""A reward aggregator defined outside the package, used as ``--reward.aggregator path/custom_aggregator.py:Class``.

It declares that it needs hidden states and keeps state, so the e2e test can check that the integration
gives it h and checkpoints it because the class says so, not because of its name.
"""

from __future__ import annotations

from openrlhf_maestro.method import AggregateOutput, RewardAggregator


class HiddenWidthAggregator(RewardAggregator):
    """R = mean of the objectives; logs the width and mean norm of the h it received and counts its calls."""

    needs_hidden = True

    def __init__(self, objectives, weights=None) -> None:
        super().__init__(objectives)
        self.calls = 0

    def aggregate(self, rewards, group_ids, hidden=None) -> AggregateOutput:
        rewards, group_ids = self.validate_inputs(rewards, group_ids, hidden)
        self.calls += 1
        metrics = {
            "custom/hidden_width": float(hidden.shape[1]),
            "custom/hidden_norm": float(hidden.norm(dim=1).mean()),
            "custom/calls": float(self.calls),
        }
        return AggregateOutput(rewards.mean(dim=-1), metrics)

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])
