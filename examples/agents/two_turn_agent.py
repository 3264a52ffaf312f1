"""A two-turn agent for OpenRLHF's multi-turn API that reports the demo's objectives for the aggregator.

    --train.agent_func_path examples/agents/two_turn_agent.py --reward.aggregator maestro \
        --reward.objectives format,length,match

Turn 1: the policy answers the prompt. The environment replies with a request to restate the answer in the
``<think>...</think> <answer>...</answer>`` format. Turn 2: the policy answers again, and the episode ends.

OpenRLHF's ``MultiTurnAgentExecutor`` sums the ``rewards`` of every ``step()`` but keeps only the last step's
``extra_logs`` (utils/agent.py 120-127), and the aggregator reads the objectives from those
(``extra_logs["obj/<name>"]``). So the objectives are taken from the last turn, and a step before the last
reports nothing: this agent scores the whole episode once it ends (the final answer's format and match, the
length of both turns together) and gives 0 reward to the first turn. An agent whose objectives should add up
over turns keeps the running sums itself and reports them at its last step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards"))  # the demo's objectives
from demo_reward import objectives  # noqa: E402

FOLLOW_UP = "\nRestate your final answer as <think>...</think> <answer>...</answer>.\n"


class TwoTurnAgent(AgentInstanceBase):
    async def reset(self, states: dict, **kwargs) -> dict:
        self.turn, self.responses = 0, []
        return {"observation": states["observation"]}

    async def step(self, states: dict, **kwargs) -> dict:
        self.turn += 1
        self.responses.append(states["action_text"].replace("<|im_end|>", "").replace("<|endoftext|>", ""))
        if self.turn == 1:
            return {
                "rewards": torch.tensor(0.0),
                "scores": torch.tensor(0.0),
                "environment_feedback": FOLLOW_UP,
                "done": False,
                "extra_logs": {},
            }
        objs = objectives(self.responses[-1], states["label"])
        words = sum(len(r.split()) for r in self.responses)
        objs["length"] = max(-1.0, 1.0 - abs(words - 24) / 24)  # both turns: twice the demo's 12-word target
        reward = sum(objs.values()) / len(objs)
        return {
            "rewards": torch.tensor(reward),
            "scores": torch.tensor(reward),
            "environment_feedback": "",
            "done": True,
            "extra_logs": {f"obj/{k}": torch.tensor(v) for k, v in objs.items()},
        }


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self) -> None:
        super().__init__(TwoTurnAgent)
