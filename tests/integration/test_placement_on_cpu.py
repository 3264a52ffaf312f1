"""The placement checks: OpenRLHF's chunked dispatch, the uneven-forward refusal, the placement line's format."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from openrlhf_maestro.integration.placement import (
    forwards_per_rank,
    parse_placement,
    ranges,
    uneven_forward_problems,
)
from openrlhf_maestro.runtime import standin_finder

standin_finder.install()  # OpenRLHF's launcher module imports flash_attn (ring attention); CPU has none


class _Handle:
    """A Ray actor handle stand-in: OpenRLHF's real ``async_run_method_batch`` needs actors, which need Ray and
    GPUs; this records the slice each actor is given instead."""

    def __init__(self) -> None:
        self.items = None
        self.execute_batch = self

    def remote(self, method_name, chunk, start, end):
        self.items = len(chunk["sequences"][start:end]) if end > start else 0
        return self.items


def openrlhf_chunks(num_items: int, ranks: int, monkeypatch) -> list[int]:
    """How many items OpenRLHF 0.11.2's own ``RayActorGroup.async_run_method_batch`` gives each of ``ranks``."""
    import ray
    from openrlhf.trainer.ray.launcher import RayActorGroup

    monkeypatch.setattr(ray, "put", lambda value: value)
    group = object.__new__(RayActorGroup)  # no __init__: it would start Ray actors
    group._actor_handlers = [_Handle() for _ in range(ranks)]
    group.duplicate_actors = 1
    group.async_run_method_batch("forward", sequences=list(range(num_items)))
    return [h.items for h in group._actor_handlers]


# (micro-batches, ranks) -> forwards per rank, worked by hand: chunks of ceil(M / E), the last ranks get the rest.
WORKED = {
    (6, 4): [2, 2, 2, 0],  # the case: 4 reward ranks, 6 micro-batches (6 actor ranks, dynamic batching)
    (12, 4): [3, 3, 3, 3],
    (6, 3): [2, 2, 2],
    (7, 2): [4, 3],
    (9, 6): [2, 2, 2, 2, 1, 0],
}


@pytest.mark.parametrize("micro_batches, ranks", sorted(WORKED))
def test_forwards_per_rank_is_openrlhfs_chunking(micro_batches, ranks, monkeypatch):
    expected = WORKED[(micro_batches, ranks)]
    assert forwards_per_rank(micro_batches, ranks) == expected
    assert openrlhf_chunks(micro_batches, ranks, monkeypatch) == expected


def nested_args(**flags) -> SimpleNamespace:
    """The nested namespace ``train(args)`` receives, with the fields the check reads (OpenRLHF's defaults)."""
    values = {
        "ds.zero_stage": 3,
        "ds.ring_attn_size": 1,
        "ds.tensor_parallel_size": 1,
        "train.dynamic_batch_enable": True,
        "train.agent_func_path": None,
        "rollout.batch_size": 16,
        "rollout.n_samples_per_prompt": 4,
        "rollout.micro_batch_size": 8,
        "algo.kl.init_coef": 0.001,
        "critic.model_name_or_path": None,
        "reward.remote_url": None,  # OpenRLHF's own reward model
        "reward.model_name_or_path": "rm",
        **{f"{role}.num_nodes": 1 for role in ("actor", "ref", "critic", "reward")},
        **{f"{role}.num_gpus_per_node": 8 for role in ("actor", "ref", "critic", "reward")},
    }
    values.update({k.replace("__", "."): v for k, v in flags.items()})
    root = SimpleNamespace()
    for dotted, value in values.items():
        node = root
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not hasattr(node, part):
                setattr(node, part, SimpleNamespace())
            node = getattr(node, part)
        setattr(node, leaf, value)
    return root


def six_actor_gpus(reward_gpus: int, **flags) -> SimpleNamespace:
    return nested_args(
        actor__num_gpus_per_node=6, ref__num_gpus_per_node=6, reward__num_gpus_per_node=reward_gpus, **flags
    )


def test_four_reward_gpus_beside_six_actor_gpus_are_refused_naming_both_and_a_fix():
    problems = uneven_forward_problems(six_actor_gpus(4))
    assert len(problems) == 1
    message = problems[0]
    assert "the reward model has 4 ZeRO-3 ranks (4 GPUs) beside the actor's 6 (6 GPUs)" in message
    assert "its ranks would run 2, 2, 2, 0 forwards" in message
    assert "Fix: a reward model rank count that divides 6 (1, 2, 3, 6;" in message
    assert "--reward.num_gpus_per_node" in message


@pytest.mark.parametrize("reward_gpus", [1, 2, 3, 6])
def test_reward_gpu_counts_that_divide_the_actors_are_accepted(reward_gpus):
    assert uneven_forward_problems(six_actor_gpus(reward_gpus)) == []


def test_twelve_reward_gpus_beside_six_are_refused_too():
    # M = 6 < 12 ranks fails mid-step (async_run_method_batch raises); M = 18 would run 2 or 1 forwards per rank.
    assert len(uneven_forward_problems(six_actor_gpus(12))) == 1


def test_without_zero3_a_forward_needs_no_peer_and_nothing_is_refused():
    assert uneven_forward_problems(six_actor_gpus(4, ds__zero_stage=2)) == []


def test_a_reward_function_alone_starts_no_reward_model_so_nothing_is_checked():
    assert uneven_forward_problems(six_actor_gpus(4, reward__remote_url=["r.py"])) == []
    # the patched CLI starts one beside the function when an aggregator reads it
    assert len(uneven_forward_problems(six_actor_gpus(4, reward__remote_url=["r.py"], reward__aggregator="m"))) == 1


def test_ring_attention_copies_count_once():
    # 8 actor GPUs in rings of 2 -> 4 effective ranks; 4 reward GPUs in rings of 2 -> 2 ranks: 2 divides 4.
    assert uneven_forward_problems(nested_args(ds__ring_attn_size=2, reward__num_gpus_per_node=4)) == []
    # 6 reward GPUs in rings of 2 -> 3 ranks against 4 micro-batches: refused.
    problems = uneven_forward_problems(nested_args(ds__ring_attn_size=2, reward__num_gpus_per_node=6))
    assert len(problems) == 1 and "3 ZeRO-3 ranks (6 GPUs) beside the actor's 4 (8 GPUs)" in problems[0]


def test_without_dynamic_batching_the_count_is_the_rollout_over_the_micro_batch_size():
    # 16 prompts x 4 samples / 8 per micro-batch = 8 micro-batches: 4 reward ranks divide it, 3 do not.
    assert uneven_forward_problems(nested_args(train__dynamic_batch_enable=False, reward__num_gpus_per_node=4)) == []
    problems = uneven_forward_problems(nested_args(train__dynamic_batch_enable=False, reward__num_gpus_per_node=3))
    assert len(problems) == 1 and "3, 3, 2 forwards" in problems[0]
    # the same holds for the actor and reference themselves: 6 ranks do not divide 8 micro-batches
    problems = uneven_forward_problems(
        nested_args(train__dynamic_batch_enable=False, actor__num_gpus_per_node=6, ref__num_gpus_per_node=6)
    )
    assert [p.split(" has ")[0] for p in problems] == ["the actor", "the reference model"]


def test_placement_line_round_trips():
    assert ranges([0, 1, 2, 5, 7, 6]) == "0-2,5-7"
    assert ranges([3]) == "3"
    assert parse_placement("actor=0-2,5 reward=7") == {"actor": {0, 1, 2, 5}, "reward": {7}}
