"""A two-turn agent for OpenRLHF's multi-turn API that reports the demo's objectives for the aggregator.

    --train.agent_func_path examples/agents/two_turn_agent.py --reward.aggregator maestro \
        --reward.objectives format,length,match

Turn 1: the policy answers the prompt. The environment replies with a request to restate the answer in the
``<think>...</think> <answer>...</answer>`` format. Turn 2: the policy answers again, and the episode ends.

How objectives travel with OpenRLHF's ``MultiTurnAgentExecutor`` (utils/agent.py 91-185):

- it sums the ``rewards`` of every ``step()`` but keeps only the **last** step's ``extra_logs``, and the
  aggregator reads the objectives from those (``extra_logs["obj/<name>"]``);
- it may end an episode after any turn without another ``step()``: each turn may generate up to the whole
  remaining ``--data.max_len`` budget, and the loop stops when none is left.

So this agent reports the objectives of the episode so far at **every** step (the latest answer's format and
match, the length of all answers together), and pays the change of their mean as each step's reward, so the
rewards OpenRLHF sums equal the mean of the objectives last reported. An agent whose objectives should add up
over turns keeps the running sums itself and reports them the same way. ``agent/turns`` logs how many turns
ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards"))  # the demo's objectives
from demo_reward import objectives  # noqa: E402

FOLLOW_UP = "\nRestate your final answer as <think>...</think> <answer>...</answer>.\n"
TURNS = 2
WORDS_PER_TURN = 12  # the demo's length target, per answer


class TwoTurnAgent(AgentInstanceBase):
    def __init__(self, *args, **kwargs) -> None:  # one instance per prompt (utils/agent.py 39)
        self.responses: list[str] = []
        self.paid = 0.0  # the rewards given so far

    async def reset(self, states: dict, **kwargs) -> dict:
        return {"observation": states["observation"]}

    async def step(self, states: dict, **kwargs) -> dict:
        self.responses.append(states["action_text"].replace("<|im_end|>", "").replace("<|endoftext|>", ""))
        turn = len(self.responses)
        objs = objectives(self.responses[-1], states["label"])
        target = WORDS_PER_TURN * turn
        words = sum(len(r.split()) for r in self.responses)
        objs["length"] = max(-1.0, 1.0 - abs(words - target) / target)
        mean = sum(objs.values()) / len(objs)
        reward, self.paid = mean - self.paid, mean
        done = turn == TURNS
        return {
            "rewards": torch.tensor(reward),
            "scores": torch.tensor(mean),
            "environment_feedback": "" if done else FOLLOW_UP,
            "done": done,
            "extra_logs": {**{f"obj/{k}": torch.tensor(v) for k, v in objs.items()}, "agent/turns": turn},
        }


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self) -> None:
        super().__init__(TwoTurnAgent)
