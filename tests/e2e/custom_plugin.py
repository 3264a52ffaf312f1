"""A plugin defined outside the package (``--reward.plugins path/custom_plugin.py``): one aggregator, one channel.

Both declare what they need, so the e2e test can check that the integration acts on the declarations, not
on names: the aggregator needs hidden states and keeps state; the channel reads the policy's logits.
"""

from __future__ import annotations

import torch

from openrlhf_maestro.channels import ModelChannel, register_channel
from openrlhf_maestro.method import AggregateOutput, RewardAggregator, register_aggregator


@register_aggregator("hidden_width")
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


@register_channel("max_prob")
class MaxProbChannel(ModelChannel):
    """Mean over the response's tokens of the policy's largest next-token probability (its confidence)."""

    source = "policy_logits"
    cost = "none extra"

    def per_token(self, logits) -> torch.Tensor:
        return torch.softmax(logits, dim=-1).amax(dim=-1)
