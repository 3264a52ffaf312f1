"""Text rewards and the `reward_func` builder (standard library only: safe to import in the vLLM actor).

A reward file for `--reward.remote_url` is then a few lines::

    from openrlhf_maestro.rewards import format_reward, length_reward, make_reward_func

    reward_func = make_reward_func(
        {"format": lambda r, label: format_reward(r), "length": lambda r, label: length_reward(len(r.split()), 200)}
    )
"""

from .builder import OBJECTIVE_PREFIX, Objective, ObjectiveError, make_reward_func
from .text import (
    ANSWER_TAGS,
    END_MARKERS,
    THINK_TAGS,
    extract_answer,
    format_reward,
    length_reward,
    split_response,
    token_f1,
    tokens,
)

__all__ = [
    "ANSWER_TAGS",
    "END_MARKERS",
    "OBJECTIVE_PREFIX",
    "THINK_TAGS",
    "Objective",
    "ObjectiveError",
    "extract_answer",
    "format_reward",
    "length_reward",
    "make_reward_func",
    "split_response",
    "token_f1",
    "tokens",
]
