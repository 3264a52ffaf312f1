"""A reward file for the alignment meta-reward's e2e test: the demo reward, plus a target ``obj/judge`` that only
some prompts have (a stand-in for a judge scored on part of the prompts).

obj/judge = obj/length on prompts whose label is a number (the arithmetic prompts), NaN on the others: the key is
reported for every response (OpenRLHF concatenates the per-response info), NaN where there is no judge score.
(length, not match: the tiny random model's arithmetic answers are all wrong, and a judge that gives every
response of a group the same score has no centred signal, G = 0.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "demo_reward", Path(__file__).resolve().parents[2] / "examples/rewards/demo_reward.py"
)
_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_demo)


def reward_func(queries, prompts, labels, **kwargs):
    out = _demo.reward_func(queries, prompts, labels, **kwargs)
    judged = labels[0].strip().lstrip("-").isdigit()
    out["extra_logs"]["obj/judge"] = float(out["extra_logs"]["obj/length"]) if judged else float("nan")
    return out
