"""metric_names: which objective names collide with the hook's keys, and every key the plugin logs is described."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.method import build_aggregator
from openrlhf_maestro.metric_names import METRICS, RESERVED_OBJECTIVES, colliding_key, documented


@pytest.mark.parametrize(
    "objective, key",
    [
        ("invalid", "reward/invalid"),
        ("dropped_samples", "reward/dropped_samples"),
        ("policy_forwards", "reward/policy_forwards"),
        ("seconds_aggregate", "reward/seconds_aggregate"),
        ("seconds_feedback", "reward/seconds_feedback"),
        ("skipped", "reward/skipped/<objective>"),  # reward/skipped would sit on the per-objective counts
    ],
)
def test_the_hooks_own_reward_keys_collide(objective, key):
    assert colliding_key(objective) == key
    assert objective in RESERVED_OBJECTIVES  # the list the reference prints


@pytest.mark.parametrize("objective", ["format", "length", "invalid_answer", "skipped_steps", "seconds", "obj"])
def test_other_names_are_free(objective):
    assert colliding_key(objective) is None


def test_an_exact_key_is_described_as_itself_not_as_an_objective_mean():
    assert documented("reward/invalid").key == "reward/invalid"
    assert documented("reward/format").key == "reward/<objective>"
    assert documented("reward/skipped/format").key == "reward/skipped/<objective>"
    assert documented("model_channel/perplexity/seconds").key == "model_channel/<channel>/seconds"
    # A placeholder stands for one name; the keys before the renames are not described.
    for key in ("aggregator/weight/a/b", "maestro/weight/format", "maestro/action/format", "perplexity/mean"):
        assert documented(key) is None, key


def test_every_described_key_is_distinct():
    keys = [m.key for m in METRICS]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sum", {}),
        ("gdpo", {}),
        ("random", {}),
        ("maestro", {"hidden_size": 4}),
        ("maestro", {"hidden_size": 4, "mode": "dirichlet"}),
    ],
)
def test_every_key_an_aggregator_logs_is_described(name, kwargs):
    """What aggregate() and feedback() return reaches the logs as is, so each key has a line in the reference."""
    gen = torch.Generator().manual_seed(0)
    aggregator = build_aggregator(name, ["format", "length"], **kwargs)
    out = aggregator.aggregate(torch.rand(8, 2, generator=gen), torch.arange(8) // 4, torch.randn(8, 4, generator=gen))
    logs = {**out.metrics, **aggregator.feedback(torch.randn(8, generator=gen))}
    assert "reward/format" in logs
    assert [k for k in logs if documented(k) is None] == []
