"""Text rewards: objectives that are pure functions of the response string (standard library only, no torch).

    format   1 if the response is exactly  <think>…</think> <answer>…</answer>  (see `format_reward`), else 0
    length   1 up to `target`, then linear to 0 at `target + tolerance` (see `length_reward`)
    overlap  token-overlap F1 between the extracted answer and the reference (see `token_f1`)

Helpers: `split_response` cuts the generated text out of OpenRLHF's decoded prompt+response, and
`extract_answer` reads the answer block. Every function is O(len(text)) and keeps no state, so it is safe in the
threads OpenRLHF runs reward functions in (`asyncio.to_thread`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from numbers import Real

THINK_TAGS = ("<think>", "</think>")
ANSWER_TAGS = ("<answer>", "</answer>")
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>")
"""Trailing end-of-turn/end-of-text tokens removed by `split_response`: ChatML (Qwen) and Llama 3."""
ASSISTANT_MARKERS = ("<|im_start|>assistant", "<|start_header_id|>assistant<|end_header_id|>")
"""Assistant-turn headers `split_response` falls back on when the prompt cannot be found in the query."""
PROMPT_TAIL_CHARS = 256
"""How much of the prompt's end `split_response` looks for when the query does not start with the prompt."""


def _check_tags(tags: tuple[str, str], what: str) -> tuple[str, str]:
    if (
        not isinstance(tags, (tuple, list))
        or len(tags) != 2
        or not all(isinstance(t, str) and t.strip() for t in tags)
        or tags[0] == tags[1]
    ):
        raise ValueError(f"{what} must be two different non-empty strings (open, close), got {tags!r}")
    return tags[0], tags[1]


def _loose_prefix_end(query: str, prompt: str) -> int | None:
    """End index in `query` of `prompt` matched as a prefix ignoring whitespace, or None if it is not one.

    Detokenization can change whitespace (e.g. around special tokens or with `clean_up_tokenization_spaces`);
    every non-whitespace character must still match, in order. If the prompt ends in whitespace, the whitespace
    that follows the match is counted as the prompt's.
    """
    i = 0
    for ch in prompt:
        if ch.isspace():
            continue
        while i < len(query) and query[i].isspace():
            i += 1
        if i == len(query) or query[i] != ch:
            return None
        i += 1
    if prompt[-1:].isspace():  # the prompt's trailing whitespace (e.g. "assistant\n") is the prompt's, not ours
        while i < len(query) and query[i].isspace():
            i += 1
    return i


def split_response(query: str, prompt: str, *, end_markers: tuple[str, ...] = END_MARKERS) -> str:
    """The generated text inside OpenRLHF's `query` (the decoded prompt + response, special tokens kept).

    The end of the prompt is located by, in order:
      1. an exact prefix;
      2. a prefix match that ignores whitespace (detokenization may change it);
      3. the first occurrence of the prompt's last `PROMPT_TAIL_CHARS` characters: a BOS token decoded in front
         of the prompt, or OpenRLHF's left-truncation of a prompt longer than max_len − max_new_tokens
         (utils/agent.py 227–239), after which the query starts mid-prompt;
      4. the last assistant-turn header (`ASSISTANT_MARKERS`) and the newline(s) after it.
    Then trailing `end_markers` and the whitespace after or between them are removed; whitespace before them and
    markers inside the text are kept.

    Args:
        query: `queries[i]` as OpenRLHF passes it to `reward_func`.
        prompt: `prompts[i]`, the prompt string after the chat template.
        end_markers: trailing tokens to remove.

    Returns:
        The response, with its own leading/inner whitespace untouched.

    Raises:
        ValueError: the prompt cannot be located by any of the rules (scoring the prompt's own
            `<think>…<answer>` template as the response would silently corrupt every text reward).
    """
    if query.startswith(prompt):
        response = query[len(prompt) :]
    elif (end := _loose_prefix_end(query, prompt)) is not None:
        response = query[end:]
    elif prompt and (tail := prompt[-PROMPT_TAIL_CHARS:]) in query:
        response = query[query.index(tail) + len(tail) :]
    else:
        header = max(ASSISTANT_MARKERS, key=query.rfind)
        if query.rfind(header) < 0:
            raise ValueError(
                f"cannot find the prompt in the query (query starts {query[:60]!r}, prompt starts {prompt[:60]!r}) "
                f"and the query holds no assistant header {ASSISTANT_MARKERS}; pass split= a function that cuts "
                "the response out of this template"
            )
        response = query[query.rfind(header) + len(header) :].lstrip("\n")
    stripped = True
    while stripped:
        stripped = False
        for marker in end_markers:
            trimmed = response.rstrip()
            if marker and trimmed.endswith(marker):
                response, stripped = trimmed[: -len(marker)], True
    return response


def extract_answer(response: str, tags: tuple[str, str] = ANSWER_TAGS) -> str | None:
    """Content of the last complete `open … close` block, stripped; None if there is no complete block.

    The last block is taken because a model that restates its answer means the final one; a block left open
    by truncation does not count.
    """
    open_tag, close_tag = _check_tags(tags, "tags")
    end = response.rfind(close_tag)
    if end < 0:
        return None
    start = response.rfind(open_tag, 0, end)
    if start < 0:
        return None
    return response[start + len(open_tag) : end].strip()


def format_reward(response: str, think: tuple[str, str] = THINK_TAGS, answer: tuple[str, str] = ANSWER_TAGS) -> float:
    """1.0 if the response is exactly a think block followed by an answer block, else 0.0.

    The rule: each of the four tags occurs exactly once, and the response matches
        ws* think_open T think_close ws* answer_open A answer_close ws*
    where ws is whitespace, T is anything (may be empty: a model may think silently) and A holds at least one
    non-whitespace character. Text before, between or after the blocks, a missing, repeated or reordered tag,
    or a truncated answer all give 0. This is NOVER's tag-format rule (whitespace-insensitive equality with
    `<think>T</think><answer>A</answer>`) made strict about repeated tags and empty answers.

    Cost: O(len(response)).
    """
    t_open, t_close = _check_tags(think, "think")
    a_open, a_close = _check_tags(answer, "answer")
    tags = (t_open, t_close, a_open, a_close)
    if len(set(tags)) != 4:
        raise ValueError(f"think and answer tags must be four different strings, got {think!r} and {answer!r}")
    if any(response.count(tag) != 1 for tag in tags):
        return 0.0
    t_start, t_end = response.index(t_open), response.index(t_close)
    a_start, a_end = response.index(a_open), response.index(a_close)
    if not t_start < t_end < a_start < a_end:
        return 0.0
    outside = (response[:t_start], response[t_end + len(t_close) : a_start], response[a_end + len(a_close) :])
    if any(part.strip() for part in outside):
        return 0.0
    return float(bool(response[a_start + len(a_open) : a_end].strip()))


def _finite_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def length_reward(length: float, target: float, tolerance: float | None = None) -> float:
    """A length penalty with a free band: 1 up to `target`, then linear down to 0 at `target + tolerance`.

        r(n) = 1                                 if n <= target
             = max(0, 1 − (n − target) / tol)    otherwise,      tol = tolerance (default: target)

    With the default tolerance the reward is 0 from 2·target on. Why this shape rather than a triangle around
    the target: a triangle pays a short, correct answer less than a padded one, which teaches padding; the
    penalty should only push down overlong responses (the paper's objective is a length *penalty*). The slope
    (not a hard cutoff) keeps the reward varying inside a group, which the group-normalized aggregation needs.
    Values lie in [0, 1], on the scale of `format_reward`.

    Args:
        length: the response length n in tokens or words (>= 0); the caller picks the unit.
        target: the longest length that is not penalized (> 0), same unit.
        tolerance: the length beyond `target` over which the reward falls to 0 (> 0); None means `target`.

    Cost: O(1) given n (counting words is O(len(response))).
    """
    if not _finite_real(length) or length < 0:
        raise ValueError(f"length must be a finite number >= 0 (tokens or words), got {length!r}")
    if not _finite_real(target) or target <= 0:
        raise ValueError(f"target must be a finite number > 0, got {target!r}")
    tol = target if tolerance is None else tolerance
    if not _finite_real(tol) or tol <= 0:
        raise ValueError(f"tolerance must be a finite number > 0 or None (= target), got {tolerance!r}")
    if length <= target:
        return 1.0
    return max(0.0, 1.0 - (length - target) / tol)


# CJK ideographs and kana are scored one character at a time (those scripts put no spaces between words);
# every other run of letters/digits is one token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def tokens(text: str) -> list[str]:
    """Case-folded word tokens: runs of letters/digits, one token per CJK character; punctuation dropped."""
    return _TOKEN.findall(text.casefold())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token-overlap F1 between two texts, with multiset counts.

        P = |p ∩ r| / |p|,  R = |p ∩ r| / |r|,  F1 = 2PR / (P + R) = 2|p ∩ r| / (|p| + |r|)

    over the `tokens` of each text. If either text has no tokens (punctuation only), the score is 1.0 when the
    stripped texts are equal and 0.0 otherwise. Cost: O(len(prediction) + len(reference)).
    """
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(prediction.strip() == reference.strip())
    common = sum((Counter(pred) & Counter(ref)).values())
    return 2.0 * common / (len(pred) + len(ref))
