"""A reward file for the failure tests: the demo reward, except that it raises on arithmetic prompts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "demo_reward", Path(__file__).resolve().parents[2] / "examples/rewards/demo_reward.py"
)
_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_demo)


def reward_func(queries, prompts, labels, **kwargs):
    if labels[0].lstrip("-").isdigit():
        raise RuntimeError("deliberate failure for the reliability test")
    return _demo.reward_func(queries, prompts, labels, **kwargs)
