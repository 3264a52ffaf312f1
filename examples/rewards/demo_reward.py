"""Reward function for the CPU demo: three objectives, each reported as ``obj/<name>`` in ``extra_logs``.

OpenRLHF loads this file with ``--reward.remote_url examples/rewards/demo_reward.py`` and calls
``reward_func`` inside the vLLM rollout actor once per response (lists of length one).

    format  1 if the response is ``<think>...</think> <answer>...</answer>``, else 0
    length  1 - |words - TARGET_WORDS| / TARGET_WORDS, floored at -1 (a triangle around the target)
    match   math prompts: 1 if the answer equals the label; writing prompts: word-overlap F1 with the label

``rewards`` (what OpenRLHF trains on without an aggregator) is their unweighted mean.
"""

from __future__ import annotations

import re

TARGET_WORDS = 12
_FORMAT = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.S)
_NUMBER = re.compile(r"^-?\d+$")


def split_response(query: str, prompt: str) -> str:
    """The generated text: the query minus its prompt and ChatML end marker."""
    response = query[len(prompt) :] if query.startswith(prompt) else query.rsplit("<|im_start|>assistant\n", 1)[-1]
    return response.replace("<|im_end|>", "").replace("<|endoftext|>", "")


def objectives(response: str, label: str) -> dict[str, float]:
    parsed = _FORMAT.match(response)
    answer = (parsed.group(2) if parsed else response).strip()
    words = len(response.split())
    length = max(-1.0, 1.0 - abs(words - TARGET_WORDS) / TARGET_WORDS)
    if _NUMBER.match(label.strip()):
        match = float(answer == label.strip())
    else:
        got, want = set(answer.lower().split()), set(label.lower().split())
        common = len(got & want)
        match = 0.0 if common == 0 else 2 * common / (len(got) + len(want))
    return {"format": float(parsed is not None), "length": length, "match": match}


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs) -> dict:
    if len(queries) != 1:
        raise ValueError(f"OpenRLHF 0.11.2 calls reward_func once per response; got {len(queries)} queries")
    objs = objectives(split_response(queries[0], prompts[0]), labels[0])
    reward = sum(objs.values()) / len(objs)
    return {"rewards": reward, "scores": reward, "extra_logs": {f"obj/{k}": v for k, v in objs.items()}}
