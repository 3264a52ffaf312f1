"""Model channels and failure handling, on real OpenRLHF objects without Ray."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.runtime import standin_finder

standin_finder.install()  # OpenRLHF imports flash_attn unconditionally; the CPU runtime's stand-in serves it

from openrlhf.trainer.ppo_utils.experience import Experience

from openrlhf_maestro.channels import (
    group_rank,
    reasoning_text,
    reference_batch,
    response_mean,
    token_entropy,
)
from openrlhf_maestro.integration.experience import sample_problems
from openrlhf_maestro.integration.hook import fill_with_group_means
from openrlhf_maestro.method import group_advantages


def test_token_entropy_matches_the_definition_in_chunks():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    probs = torch.softmax(logits / 0.7, dim=-1)
    expected = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(token_entropy(logits, temperature=0.7, chunk=3), expected, rtol=1e-5, atol=1e-5)


def test_response_mean_reads_the_positions_that_predict_response_tokens():
    # T = 5; A = 4; action i predicts token i + 1, read at position i.
    per_position = torch.tensor([[10.0, 20.0, 30.0, 40.0, 99.0]])
    action_mask = torch.tensor([[0, 1, 1, 0]])
    assert response_mean(per_position, action_mask).tolist() == [25.0]


def test_group_rank_is_one_for_the_best_and_shares_ties():
    values = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 5.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    ranks = group_rank(values, groups, higher_is_better=False)  # perplexity: lower is better
    assert ranks[:4].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.5])
    assert ranks[4:].tolist() == [0.5, 0.5]


def test_reasoning_stops_after_the_marker_and_reference_tokens_are_marked():
    assert reasoning_text("<think>a</think><answer>b</answer>", "</think>") == "<think>a</think>"
    assert reasoning_text("no tags", "</think>") == "no tags"
    seqs, attn, action = reference_batch([[1, 2]], [[3, 4, 5]], [[6, 7]], [[8]], pad_id=0, max_len=6)
    # 8 tokens > 6: the reasoning loses its first 2 tokens; the prompt and the reference stay whole
    assert seqs.tolist() == [[1, 2, 5, 6, 7, 8]]
    assert attn.tolist() == [[1] * 6]
    assert action.tolist() == [[False, False, True, True, False]]  # predictions of tokens 6 and 7


def test_dropped_rows_get_zero_advantage_and_do_not_move_the_group():
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    invalid = torch.tensor([False, True, False, False, False, False, False, False])
    matrix = torch.tensor([[1.0, 0.0], [float("nan"), float("nan")], [3.0, 2.0], [2.0, 1.0]] + [[0.0, 0.0]] * 4)
    filled = fill_with_group_means(matrix, invalid, groups)
    assert filled[1].tolist() == [2.0, 1.0]
    scalar = fill_with_group_means(torch.tensor([1.0, 9.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0]), invalid, groups)
    for estimator in ("group_norm", "dr_grpo", "rloo", "reinforce_baseline"):
        assert group_advantages(scalar, groups, estimator)[1].item() == pytest.approx(0.0, abs=1e-6)


def test_sample_problems_name_the_objective():
    ok = Experience(rewards=torch.tensor([1.0]), info={"obj/format": torch.tensor([1.0])})
    assert sample_problems(ok, ["format"]) == []
    nan = Experience(rewards=torch.tensor([1.0]), info={"obj/format": torch.tensor([float("nan")])})
    assert sample_problems(nan, ["format"]) == ["objective 'format': value nan is not finite"]
    missing = Experience(rewards=torch.tensor([1.0]), info={})
    assert sample_problems(missing, ["format"]) == [
        "objective 'format' (declared in --reward.objectives): the reward function's extra_logs has no "
        "'obj/format'; it reported no obj/* keys"
    ]
    raised = Experience(rewards=None, info={})
    assert "raised or returned no 'rewards'" in sample_problems(raised, ["format"])[0]


def test_info_keys_are_aligned_before_openrlhf_concatenates_them():
    from openrlhf_maestro.integration.experience import _align_info_keys

    ok = Experience(rewards=torch.tensor([1.0]), info={"score": torch.tensor([2.0]), "obj/x": torch.tensor([1.0])})
    ok2 = Experience(rewards=torch.tensor([1.0]), info={"score": torch.tensor([4.0]), "obj/x": torch.tensor([0.0])})
    failed = Experience(rewards=torch.zeros(1), info={"obj/x": torch.tensor([float("nan")])})
    _align_info_keys([ok, failed, ok2])
    merged = Experience.concat_experiences([ok, failed, ok2], pad_token_id=0)
    assert merged.info["score"].tolist() == [2.0, 3.0, 4.0]  # row 1 filled, rows 0 and 2 stay in place
