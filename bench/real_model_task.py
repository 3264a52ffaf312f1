"""Two prompt families for the real-model benchmark, with references, and the held-out task metrics.

The paper reports that its Conductor leans to `entropy` on creative prompts and to `perplexity` on reasoning
prompts. The families here are of those two kinds, small enough for SmolLM2-135M-Instruct on a CPU:

    reasoning  one-step arithmetic word problems; reference = the number
    creative   a slogan, a name, a title, a one-line description or poem; reference = one good answer

Every prompt asks for a short reply that ends with ``Answer: <...>`` (the demo's format reward, in
``examples/rewards/demo_real_reward.py``). Training and held-out prompts come from disjoint templates and
subjects. Everything is generated from fixed seeds, so the files are the same on every machine.

Held-out task metrics (never training rewards):

    reasoning  reference match: the last number in the greedy response equals the reference
    creative   distinct-2 in a length band: for each prompt, k sampled responses; those of BAND[0]..BAND[1]
               words are in the band; score = (in-band fraction) × (distinct bigrams / bigrams over the in-band
               responses). Repetitive, empty or rambling answers score low; varied ones of a sensible length high.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

REASONING_END = ' Solve it in one short sentence, then end with "Answer: <number>".'
CREATIVE_END = ' Reply briefly and end with "Answer: <your {what}>".'
BAND = (3, 40)  # words: a creative answer of this length counts for distinct-2

_NAMES = ["Tom", "Mia", "Ali", "Sara", "Ben", "Lena", "Omar", "Ivy", "Noah", "Zoe", "Raj", "Emma"]

# (template, answer(a, b)) with a > b; "{n}" is a name.
_REASONING_TRAIN = [
    ("{n} has {a} apples and buys {b} more. How many apples does {n} have now?", lambda a, b: a + b),
    ("A box holds {a} pencils. How many pencils are in {b} boxes?", lambda a, b: a * b),
    ("{n} had {a} stickers and gave {b} to a friend. How many stickers are left?", lambda a, b: a - b),
    ("A bus has {a} passengers. At the next stop {b} get off. How many passengers are left?", lambda a, b: a - b),
    ("Each bag has {a} oranges. How many oranges are in {b} bags?", lambda a, b: a * b),
    ("A train travels {a} km each hour. How far does it go in {b} hours?", lambda a, b: a * b),
]
_REASONING_HELDOUT = [
    ("{n} reads {a} pages on Monday and {b} pages on Tuesday. How many pages in total?", lambda a, b: a + b),
    ("A shelf has {a} books and {b} more are added. How many books are on the shelf now?", lambda a, b: a + b),
    ("A farmer plants {b} rows of {a} carrots. How many carrots are there?", lambda a, b: a * b),
    ("{n} has {a} coins and spends {b}. How many coins are left?", lambda a, b: a - b),
]

# (request, what, [(subject, reference)]); the request has "{s}" for the subject.
_CREATIVE_TRAIN = [
    (
        "Write a short slogan for a {s}.",
        "slogan",
        [
            ("bakery", "Fresh bread, warm hearts, every morning."),
            ("bike shop", "Ride further, smile wider."),
            ("library", "Every page opens a door."),
            ("flower shop", "Say it with a garden."),
            ("coffee cart", "Good mornings start on the corner."),
            ("swimming pool", "Dive in, cool off, come back."),
        ],
    ),
    (
        "Suggest a name for a {s}.",
        "name",
        [
            ("friendly robot dog", "Bolt"),
            ("small sailing boat", "Sea Lark"),
            ("tiny dragon", "Ember"),
            ("garden snail", "Sir Slowpoke"),
            ("moon base", "Silver Harbor"),
        ],
    ),
    (
        "Write a title for a story about {s}.",
        "title",
        [
            ("a lost key", "The Key Under the Mat"),
            ("a brave mouse", "Whiskers Against the Storm"),
            ("a secret garden", "Behind the Ivy Door"),
            ("a talking clock", "Time Has Something to Say"),
            ("a runaway kite", "The Kite That Wanted the Sky"),
        ],
    ),
]
# Added for the 10-step target comparison (issue 22). Kept apart and appended after the first 16 creative
# prompts' shuffle, so that train_prompts(32) is the same list as before they were added.
_CREATIVE_TRAIN_MORE = [
    (
        "Write a short motto for a {s}.",
        "motto",
        [
            ("school choir", "One song, many voices."),
            ("hiking club", "Every hill is a view."),
            ("night market", "Lights up, prices down."),
            ("chess team", "Think twice, move once."),
        ],
    ),
]
_CREATIVE_HELDOUT = [
    (
        "Write a one-line poem about {s}.",
        "poem",
        [
            ("the sea", "The sea keeps every secret the moon tells it."),
            ("autumn leaves", "Red letters falling from a tired tree."),
            ("a city at night", "A thousand windows hum the same soft song."),
            ("the first snow", "The world holds its breath in white."),
        ],
    ),
    (
        "Invent a name for a new {s}.",
        "name",
        [
            ("ice cream flavour", "Midnight Mango"),
            ("board game", "Castle Climbers"),
            ("planet", "Veloria"),
            ("kind of apple", "Crimson Snap"),
        ],
    ),
    (
        "Describe {s} in one sentence.",
        "sentence",
        [
            ("a busy kitchen", "Pans clatter while the soup bubbles and everyone talks at once."),
            ("an old lighthouse", "A white tower leans into the wind and still guards the rocks."),
            ("a quiet library", "Only the turning of pages breaks the warm silence."),
            ("a summer storm", "Thunder rolls in and the hot street steams under sudden rain."),
        ],
    ),
]


def _reasoning(templates: list, count: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(count):
        template, answer = templates[i % len(templates)]
        a, b = rng.randint(4, 19), rng.randint(2, 9)
        a = max(a, b + 1)
        text = template.format(n=rng.choice(_NAMES), a=a, b=b)
        rows.append({"input": text + REASONING_END, "label": str(answer(a, b)), "category": "reasoning"})
    return rows


def _creative(families: list) -> list[dict]:
    rows = []
    for request, what, subjects in families:
        for subject, reference in subjects:
            text = request.format(s=subject) + CREATIVE_END.format(what=what)
            rows.append({"input": text, "label": reference, "category": "creative"})
    return rows


MAX_TRAIN_PROMPTS = 2 * sum(len(s) for _, _, s in _CREATIVE_TRAIN + _CREATIVE_TRAIN_MORE)  # 40: half creative
TARGET = "task"  # the target's objective name: obj/task
TARGET_EVERY = 4  # one labelled training prompt in 4, in each family


def train_prompts(count: int = 32, seed: int = 0) -> list[dict]:
    """``count`` training prompts, half per family, interleaved (reasoning, creative, ...)."""
    creative, more = _creative(_CREATIVE_TRAIN), _creative(_CREATIVE_TRAIN_MORE)
    if count // 2 > len(creative) + len(more):
        raise ValueError(
            f"{count} training prompts need {count // 2} creative ones; there are {len(creative) + len(more)}"
        )
    reasoning = _reasoning(_REASONING_TRAIN, count - count // 2, random.Random(seed))  # a prefix for any count
    random.Random(seed + 1).shuffle(creative)
    random.Random(seed + 2).shuffle(more)
    creative += more
    rows = []
    for i in range(count):
        rows.append(reasoning[i // 2] if i % 2 == 0 else creative[i // 2])
    return rows


def heldout_prompts(reasoning: int = 16, seed: int = 100) -> list[dict]:
    """Held-out prompts: ``reasoning`` arithmetic problems and every held-out creative prompt (12)."""
    return _reasoning(_REASONING_HELDOUT, reasoning, random.Random(seed)) + _creative(_CREATIVE_HELDOUT)


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands commas dropped), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def reference_match(response: str, label: str) -> float:
    """1.0 when the response's last number equals the reference number, else 0.0."""
    value = last_number(response)
    return float(value is not None and value == float(label))


def distinct_in_band(responses: list[str], n: int = 2, band: tuple[int, int] = BAND) -> float:
    """(fraction of responses with band[0] <= words <= band[1]) × distinct-n over those responses' n-grams.

    distinct-n = |unique n-grams| / |n-grams|, pooled over the in-band responses (lower-cased words).
    0.0 when no response is in the band.
    """
    if not responses:
        raise ValueError("distinct_in_band needs at least one response")
    in_band = [r.lower().split() for r in responses if band[0] <= len(r.split()) <= band[1]]
    grams = [tuple(words[i : i + n]) for words in in_band for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return len(in_band) / len(responses) * len(set(grams)) / len(grams)


def target_labelled(index: int) -> bool:
    """Whether training prompt ``index`` (its position in ``train_prompts``) has a target: the first of every
    TARGET_EVERY prompts of its family. The families alternate (reasoning at even positions), so the prompt is
    number index // 2 of its family."""
    return (index // 2) % TARGET_EVERY == 0


def labelled_train_prompts(count: int = MAX_TRAIN_PROMPTS) -> list[dict]:
    """The training prompts among the first ``count`` that have a target (``target_labelled``)."""
    return [row for i, row in enumerate(train_prompts(count)) if target_labelled(i)]


def target_value(response: str, label: str, category: str) -> float:
    """The target on one response: reference match (reasoning) or its one-response distinct-2 in band (creative)."""
    if category == "reasoning":
        return reference_match(response, label)
    if category == "creative":
        return distinct_in_band([response])
    raise ValueError(f"category must be 'reasoning' or 'creative', got {category!r}")
