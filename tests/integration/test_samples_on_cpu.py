"""Objective values checked before OpenRLHF's own SamplesGenerator tensorizes them (the real class, no mock)."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from openrlhf_maestro.runtime import standin_finder

standin_finder.install()  # OpenRLHF imports flash_attn unconditionally; the CPU runtime's stand-in serves it

from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from openrlhf_maestro.integration.experience import InvalidSampleError
from openrlhf_maestro.integration.samples import ObjectiveCheckingSamplesGenerator, is_one_number, malformed_objectives


def response(**extra_logs) -> dict:
    """One vLLM rollout as OpenRLHF 0.11.2's agent executor returns it (4 tokens, the last 2 generated)."""
    return {
        "observation_tokens": [11, 12, 13, 14],
        "action_ranges": [(2, 4)],
        "reward": 0.5,
        "scores": 0.5,
        "rollout_log_probs": None,
        "prompt": "What is 2 + 2?",
        "label": "4",
        "extra_logs": extra_logs,
    }


def generator(cls=ObjectiveCheckingSamplesGenerator, **kwargs):
    strategy = SimpleNamespace(args=SimpleNamespace())
    return cls(
        strategy=strategy, prompts_dataloader=None, eval_dataloader=None, tokenizer=None, vllm_engines=[], **kwargs
    )


def test_what_one_number_means() -> None:
    for good in (1, 0.5, math.nan, torch.tensor(2.0), torch.tensor([3])):
        assert is_one_number(good), good
    for bad in ("0.5", None, [1.0], True, torch.tensor([1.0, 2.0]), torch.tensor(True)):
        assert not is_one_number(bad), bad
    logs = {"obj/a": "x", "obj/b": 1.0, "obj/c": [1, 2], "other": "not an objective"}
    assert malformed_objectives(logs, ["a", "b", "c", "missing"]) == {"obj/a": "x", "obj/c": [1, 2]}


def test_openrlhf_alone_fails_on_a_string_without_naming_it() -> None:
    # The upstream behaviour the check exists for; if this starts passing, OpenRLHF has changed.
    with pytest.raises(ValueError, match="too many dimensions 'str'"):
        generator(SamplesGenerator)._process_response_into_experience(response(**{"obj/length": "0.5"}))


def test_a_malformed_objective_stops_with_the_key_value_type_and_prompt() -> None:
    gen = generator(objectives=["match", "length"], drop_invalid=False)
    with pytest.raises(InvalidSampleError) as err:
        gen._process_response_into_experience(response(**{"obj/match": 1.0, "obj/length": "0.5"}))
    message = str(err.value)
    for part in ("obj/length = '0.5' (str)", "'What is 2 + 2?'", "--reward.failure_policy drop_response"):
        assert part in message, message


def test_with_dropping_the_value_becomes_nan_and_the_rest_is_kept(caplog) -> None:
    gen = generator(objectives=["match", "length"], drop_invalid=True)
    with caplog.at_level(logging.WARNING, logger="openrlhf_maestro.integration.samples"):
        for _ in range(3):
            exp = gen._process_response_into_experience(response(**{"obj/match": 1.0, "obj/length": [1, 2]}))
    assert math.isnan(exp.info["obj/length"].item()) and exp.info["obj/match"].item() == 1.0
    assert exp.rewards.item() == 0.5 and exp.sequences.tolist() == [[11, 12, 13, 14]]
    assert sum("obj/length" in r.getMessage() for r in caplog.records) == 1  # warned once, not per response


def test_valid_values_pass_through_unchanged() -> None:
    gen = generator(objectives=["match"], drop_invalid=False)
    exp = gen._process_response_into_experience(response(**{"obj/match": torch.tensor([0.25]), "note": 3}))
    assert exp.info["obj/match"].item() == 0.25 and exp.info["note"].item() == 3


def test_dynamic_filtering_can_score_responses_with_the_aggregators_weights() -> None:
    """--reward.filter_score aggregator_weights: the score OpenRLHF's dynamic filter averages per group is the
    weighted mean of the response's objectives; without it, the reward function's own score stays."""
    logs = {"obj/match": 1.0, "obj/length": 0.25}
    kept = generator(objectives=["match", "length"], drop_invalid=False)._process_response_into_experience(
        response(**logs)
    )
    assert kept.scores.item() == 0.5  # the reward function's
    gen = generator(objectives=["match", "length"], drop_invalid=True, filter_weights=[3.0, 1.0])
    scored = gen._process_response_into_experience(response(**logs))
    assert scored.scores.item() == pytest.approx((3 * 1.0 + 0.25) / 4)
    missing = gen._process_response_into_experience(response(**{"obj/match": math.nan, "obj/length": 0.25}))
    assert missing.scores.item() == pytest.approx(0.25)  # the objectives it has
    none = gen._process_response_into_experience(response(**{"obj/match": "x"}))
    assert math.isnan(none.scores.item())  # nothing to score: outside every filtering range
