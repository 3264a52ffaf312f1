"""Reward file of the real-model benchmark's target rows (issue 22): the demo reward, plus a target ``obj/task``
on a fixed quarter of the training prompts.

    obj/format, obj/length  as ``examples/rewards/demo_real_reward.py`` (the other rows' reward file)
    obj/task                real_model_task.target_value(response, label, family) on the prompts of
                            real_model_task.labelled_train_prompts(), NaN on every other prompt

The key is reported for every response (OpenRLHF concatenates the per-response info), NaN where the prompt has no
target. ``maestro --maestro.meta_reward alignment --maestro.target task`` learns from it and keeps it out of R;
``sum`` with ``task`` among ``--reward.objectives`` and ``--reward.failure_policy skip_objective`` trains on it
where it is present.

A labelled prompt is recognised by its dataset input inside the chat-templated prompt OpenRLHF passes (no training
input is contained in another; the tests check it).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

from openrlhf_maestro.rewards import OBJECTIVE_PREFIX, split_response

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))  # OpenRLHF loads this file by path, inside the vLLM actor
import real_model_task as task  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "demo_real_reward", _HERE.parent / "examples" / "rewards" / "demo_real_reward.py"
)
_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_demo)

LABELLED = {row["input"]: row["category"] for row in task.labelled_train_prompts()}  # input -> family


def labelled_family(prompt: str) -> str | None:
    """The family of the labelled training input inside ``prompt`` (a chat-templated prompt), None if none is."""
    return next((family for text, family in LABELLED.items() if text in prompt), None)


def target_of(query: str, prompt: str, label: str) -> float:
    """obj/task of one response: the target on a labelled prompt, NaN on the others."""
    family = labelled_family(prompt)
    if family is None:
        return math.nan
    return task.target_value(split_response(query, prompt), label, family)


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: Any) -> dict[str, Any]:
    """The demo reward's dict with ``extra_logs["obj/task"]`` added, in its shape (a float for one response)."""
    out = _demo.reward_func(queries, prompts, labels, **kwargs)
    values = [target_of(q, p, lb) for q, p, lb in zip(queries, prompts, labels, strict=True)]
    out["extra_logs"][OBJECTIVE_PREFIX + task.TARGET] = values[0] if len(values) == 1 else values
    return out
