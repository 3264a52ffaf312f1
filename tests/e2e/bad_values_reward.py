"""A reward file for the failure tests: the demo reward, except that on arithmetic prompts it reports a bad value.

even label  obj/match = NaN
odd label   obj/length = "0.5" (a string: the wrong type)
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
    label = labels[0].strip()
    if label.lstrip("-").isdigit():
        if int(label) % 2 == 0:
            out["extra_logs"]["obj/match"] = float("nan")
        else:
            out["extra_logs"]["obj/length"] = "0.5"
    return out
