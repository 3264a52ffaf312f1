"""The learning benchmark's task: two prompt families whose objectives conflict, with a shared length term.

    family  prompt            what matters              held-out metric (never a training reward)
    echo    "echo river ->"   the exact answer          exact match: the response is the word "river" and nothing else
    story   "story river ->"  varied free writing       distinct words / max(words, 8): 1 for >= 8 words, none repeated

The K = 3 training rewards each approximate at most one of the metrics, and pull against each other:

    match   = token F1 against the prompt's word   echo: 1 for an exact copy;   story: favours the word alone
    variety = min(1, distinct words / 10)           story: more distinct words;  echo: padding
    length  = max(0, 1 − |words − 6| / 6)           shared: about six words

So echo wants `match`, story wants `variety` (and some `length`), and the best fixed weights are a compromise.
The topic words are split three ways: RL trains on `train`, the best static weights are picked on `val`, every
table and plot reports `test`. The pre-training text (``pretraining_corpus``) is a neutral mixture of good
and bad behaviour for both families, so the tiny policy starts diverse and RL has something to choose between.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from openrlhf_maestro.rewards.text import token_f1, tokens

FAMILIES = ("echo", "story")
OBJECTIVES = ("match", "variety", "length")
LENGTH_TARGET = 6
VARIETY_TARGET = 10
STORY_MIN_WORDS = 8

# Short, common, distinct words: with the tokenizer trained on this text each becomes one BPE token.
WORDS = (
    "river stone cloud apple tiger window garden silver candle forest mirror rocket pepper lemon valley "
    "castle ocean desert pillow hammer violin basket dragon feather island jacket kettle ladder marble needle "
    "orange parrot pocket rabbit saddle tunnel wagon yellow zebra anchor bridge cotton dollar engine finger "
    "giant harbor insect jungle kitten lizard meadow napkin oyster pencil quartz ribbon spider turtle "
    "umbrella velvet walnut bottle carpet donkey falcon ginger helmet iron jelly lantern monkey nest "
    "olive planet queen robin sugar tomato uncle vessel winter young zipper"
).split()
SPLIT_SIZES = {"train": 56, "val": 12, "test": 16}


@dataclass(frozen=True)
class Prompt:
    """One prompt: its family, topic word and text."""

    family: str
    topic: str

    @property
    def text(self) -> str:
        return f"{self.family} {self.topic} ->"


def topic_splits(seed: int = 0) -> dict[str, list[str]]:
    """Disjoint topic words for train / val / test (a fixed shuffle of WORDS)."""
    words = list(WORDS)
    random.Random(seed).shuffle(words)
    need = sum(SPLIT_SIZES.values())
    if len(words) < need:
        raise ValueError(f"WORDS has {len(words)} words, the splits need {need}")
    out, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        out[name] = words[start : start + size]
        start += size
    return out


def prompts(split: str, seed: int = 0) -> list[Prompt]:
    """Both families for every topic of a split, echo first."""
    topics = topic_splits(seed)[split]
    return [Prompt(family, t) for family in FAMILIES for t in topics]


def labelled_prompts(seed: int = 0) -> set[Prompt]:
    """The fixed quarter of the `train` prompts that carry the target (the family metric, a stand-in for a judge):
    every fourth `train` topic (14 of 56), in both families."""
    topics = topic_splits(seed)["train"][::4]
    return {Prompt(family, t) for family in FAMILIES for t in topics}


# ---- training rewards ---------------------------------------------------------------------------------------
def objective_rewards(prompt: Prompt, response: str) -> list[float]:
    """[match, variety, length] of one response (see the module docstring); each in [0, 1]."""
    words = tokens(response)
    n = len(words)
    match = token_f1(response, prompt.topic)
    variety = min(1.0, len(set(words)) / VARIETY_TARGET)
    length = max(0.0, 1.0 - abs(n - LENGTH_TARGET) / LENGTH_TARGET)
    return [match, variety, length]


# ---- held-out metrics ---------------------------------------------------------------------------------------
def family_metric(prompt: Prompt, response: str) -> float:
    """echo: 1.0 iff the response is exactly the topic word; story: distinct words / max(words, 8)."""
    words = tokens(response)
    if prompt.family == "echo":
        return float(words == [prompt.topic])
    if prompt.family == "story":
        return len(set(words)) / max(len(words), STORY_MIN_WORDS)
    raise ValueError(f"unknown family {prompt.family!r}; expected one of {FAMILIES}")


def word_count(response: str) -> int:
    return len(tokens(response))


# ---- pre-training text --------------------------------------------------------------------------------------
def pretraining_corpus(n_lines: int, seed: int = 0) -> list[str]:
    """`n_lines` lines "PROMPT RESPONSE", a behaviour mixture per family (the EOS is added by the caller).

    echo:  40 % the word, 40 % the word then 2-8 other words, 20 % a wrong word.
    story: 30 % just the word, 30 % the word repeated with "the", 40 % 4-12 distinct random words.
    Topics are drawn from all of WORDS: a 2-layer model pre-trained on the `train` topics alone does not learn
    to copy an unseen word (exact match 0.0 on `test` at step 0), so every split is seen here, in the same
    neutral mixture. RL only ever prompts with `train` topics; `val` and `test` stay unseen by RL.
    """
    rng = random.Random(seed)
    topics = list(WORDS)
    lines = []
    for _ in range(n_lines):
        p = Prompt(rng.choice(FAMILIES), rng.choice(topics))
        u = rng.random()
        if p.family == "echo":
            if u < 0.4:
                body = [p.topic]
            elif u < 0.8:
                body = [p.topic, *rng.sample(WORDS, rng.randint(2, 8))]
            else:
                body = [rng.choice([w for w in WORDS if w != p.topic])]
        else:
            if u < 0.3:
                body = [p.topic]
            elif u < 0.6:
                body = [p.topic, "the", p.topic] * rng.randint(1, 3)
            else:
                body = rng.sample(WORDS, rng.randint(4, 12))
        lines.append(f"{p.text} {' '.join(body)}")
    return lines


def summarize(prompts_: Sequence[Prompt], responses: Sequence[str]) -> dict[str, float]:
    """Per-family mean metric and mean word count, and `score`, the mean of the two family metrics."""
    out: dict[str, float] = {}
    for family in FAMILIES:
        rows = [(p, r) for p, r in zip(prompts_, responses, strict=True) if p.family == family]
        if not rows:
            raise ValueError(f"no {family} prompts to summarize")
        out[f"{family}/metric"] = sum(family_metric(p, r) for p, r in rows) / len(rows)
        out[f"{family}/words"] = sum(word_count(r) for _, r in rows) / len(rows)
    out["score"] = sum(out[f"{f}/metric"] for f in FAMILIES) / len(FAMILIES)
    return out
