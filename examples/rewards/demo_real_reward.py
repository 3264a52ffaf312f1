"""Reward function for `make demo` on SmolLM2-135M-Instruct: two text objectives, reported as ``obj/<name>``.

OpenRLHF loads this file with ``--reward.remote_url examples/rewards/demo_real_reward.py`` and calls
``reward_func`` inside the vLLM rollout actor once per response. The prompts
(``examples/data/demo_real_prompts.jsonl``) ask for a short reply that ends with ``Answer: <...>``; SmolLM2
often writes "the answer is 7" or an ``Answer:`` in the middle, and sometimes the requested ending.

    format  1    the response ends with ``Answer: <text>``: its last ``Answer:`` is followed by non-blank text
                 that runs to the end of the response on one line (``... = 7 apples. Answer: 7`` counts)
            0.5  an answer is marked somewhere else (``Answer:`` elsewhere, ``answer:``, ``the answer is``)
            0    no answer marker
    length  1 up to TARGET_WORDS words, then linear to 0 at 2 * TARGET_WORDS (a free band, then a penalty)

``entropy`` and ``perplexity`` (of ``Answer: <label>`` after the response) come from the plugin, not from here.
"""

from __future__ import annotations

import re

from openrlhf_maestro.rewards import length_reward, make_reward_func

TARGET_WORDS = 20
_ENDS_WITH_ANSWER = re.compile(r"Answer:[ \t]*\S[^\n]*\s*\Z")
_MARKED = re.compile(r"answer\s*:|answer is", re.I)


def format_score(response: str) -> float:
    last = response.rfind("Answer:")
    if last >= 0 and _ENDS_WITH_ANSWER.match(response, last):
        return 1.0
    return 0.5 if _MARKED.search(response) else 0.0


reward_func = make_reward_func(
    {
        "format": lambda response, label: format_score(response),
        "length": lambda response, label: length_reward(len(response.split()), TARGET_WORDS),
    }
)
