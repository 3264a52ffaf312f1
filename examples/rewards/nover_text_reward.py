"""Text-only reward for NOVER-format data: three objectives, logged as `obj/format`, `obj/length`, `obj/overlap`.

Use with data from `python -m openrlhf_maestro.data.nover` and
`--reward.remote_url examples/rewards/nover_text_reward.py --data.label_key label` (without the label key
OpenRLHF passes empty labels, which this file rejects).

    format   1 if the response is <think>…</think> <answer>…</answer> with a non-empty answer, else 0
    length   1 up to LENGTH_TARGET words, then linear to 0 at LENGTH_TARGET + LENGTH_TOLERANCE words
    overlap  token-overlap F1 between the answer block and the reference (0 without a complete answer block)

Environment variables, read once when OpenRLHF loads this file inside each vLLM rollout actor (so they must be
set there: exported before a local `ray.init`, or passed with `ray job submit --runtime-env-json
'{"env_vars": {...}}'`):

    MAESTRO_THINK_TAG         name of the reasoning tag         (default: think  -> <think>…</think>)
    MAESTRO_ANSWER_TAG        name of the answer tag            (default: answer -> <answer>…</answer>)
    MAESTRO_LENGTH_TARGET     longest unpenalized response, in whitespace-separated words (default: 400)
    MAESTRO_LENGTH_TOLERANCE  words beyond the target until the length reward reaches 0 (default: the target)
"""

from __future__ import annotations

import os

from openrlhf_maestro.rewards import extract_answer, format_reward, length_reward, make_reward_func, token_f1


def _tag(var: str, default: str) -> tuple[str, str]:
    name = os.environ.get(var, default).strip()
    if not name or any(c in name for c in "<>/ "):
        raise ValueError(f"{var} must be a bare tag name such as {default!r}, got {os.environ[var]!r}")
    return f"<{name}>", f"</{name}>"


def _positive(var: str, default: float | None) -> float | None:
    raw = os.environ.get(var)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{var} must be a number > 0, got {raw!r}")
    return value


THINK = _tag("MAESTRO_THINK_TAG", "think")
ANSWER = _tag("MAESTRO_ANSWER_TAG", "answer")
LENGTH_TARGET = _positive("MAESTRO_LENGTH_TARGET", 400.0)
LENGTH_TOLERANCE = _positive("MAESTRO_LENGTH_TOLERANCE", None)


def overlap(response: str, label: str) -> float:
    if not label:  # OpenRLHF passes "" without --data.label_key; every overlap would silently be 0
        raise ValueError("empty label: run OpenRLHF with --data.label_key label (the key the NOVER converter writes)")
    answer = extract_answer(response, ANSWER)
    return 0.0 if answer is None else token_f1(answer, label)


reward_func = make_reward_func(
    {
        "format": lambda response, label: format_reward(response, THINK, ANSWER),
        "length": lambda response, label: length_reward(len(response.split()), LENGTH_TARGET, LENGTH_TOLERANCE),
        "overlap": overlap,
    }
)
