"""The learning benchmark's task: splits, training rewards, held-out metrics and the pre-training text."""

from __future__ import annotations

import learning_task as task
import pytest


def test_splits_are_disjoint_and_cover_the_sizes() -> None:
    splits = task.topic_splits()
    assert {k: len(v) for k, v in splits.items()} == task.SPLIT_SIZES
    seen = [w for words in splits.values() for w in words]
    assert len(seen) == len(set(seen)) and set(seen) <= set(task.WORDS)
    assert task.topic_splits() == splits  # a fixed shuffle
    test = task.prompts("test")
    assert [p.family for p in test] == ["echo"] * 16 + ["story"] * 16
    assert test[0].text == f"echo {splits['test'][0]} ->"


@pytest.mark.parametrize(
    ("family", "response", "expected"),
    [
        ("echo", " river", [1.0, 0.1, 1 - 5 / 6]),
        ("echo", "river stone cloud apple tiger window", [2 / 7, 0.6, 1.0]),
        ("echo", "", [0.0, 0.0, 0.0]),
        ("story", "river river river", [0.5, 0.1, 0.5]),
        ("story", " ".join(task.WORDS[1:13]), [0.0, 1.0, 0.0]),
    ],
)
def test_objective_rewards(family: str, response: str, expected: list[float]) -> None:
    assert task.objective_rewards(task.Prompt(family, "river"), response) == pytest.approx(expected)


def test_metrics_are_not_the_training_rewards() -> None:
    echo, story = task.Prompt("echo", "river"), task.Prompt("story", "river")
    # Exact match, not F1: a copy with anything after it scores 0 although `match` still pays for it.
    assert task.family_metric(echo, " river") == 1.0
    assert task.family_metric(echo, "river river") == 0.0 and task.objective_rewards(echo, "river river")[0] > 0
    # Repetition is penalized by the metric; `variety` only counts distinct words.
    ten = " ".join(task.WORDS[:10])
    assert task.family_metric(story, ten) == 1.0
    assert (
        task.family_metric(story, ten + " " + ten) == 0.5 and task.objective_rewards(story, ten + " " + ten)[1] == 1.0
    )
    assert task.family_metric(story, "river stone") == 2 / 8
    with pytest.raises(ValueError, match="unknown family 'poem'"):
        task.family_metric(task.Prompt("poem", "river"), "x")


def test_summarize_per_family_and_refuses_a_missing_family() -> None:
    ps = [task.Prompt("echo", "river"), task.Prompt("echo", "stone"), task.Prompt("story", "river")]
    out = task.summarize(ps, ["river", "stone stone", "a b c d e f g h"])
    assert out == pytest.approx(
        {"echo/metric": 0.5, "echo/words": 1.5, "story/metric": 1.0, "story/words": 8.0, "score": 0.75}
    )
    with pytest.raises(ValueError, match="no story prompts"):
        task.summarize(ps[:2], ["river", "stone"])


def test_pretraining_corpus_is_seeded_and_has_both_families_and_behaviours() -> None:
    lines = task.pretraining_corpus(2000, seed=1)
    assert lines == task.pretraining_corpus(2000, seed=1) and lines != task.pretraining_corpus(2000, seed=2)
    echo = [line.split(" ", 3) for line in lines if line.startswith("echo ")]
    exact = sum(len(parts) == 4 and parts[3] == parts[1] for parts in echo) / len(echo)
    assert 0.3 < exact < 0.5  # 40 % exact copies, the rest longer or wrong
    assert sum(line.startswith("story ") for line in lines) > 800
