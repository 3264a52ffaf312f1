"""Model channels and failure handling, on real OpenRLHF objects without Ray."""

from __future__ import annotations

import pytest
import torch

from openrlhf_maestro.runtime import standin_finder

standin_finder.install()  # OpenRLHF imports flash_attn unconditionally; the CPU runtime's stand-in serves it

from openrlhf.trainer.ppo_utils.experience import Experience

from openrlhf_maestro.channels import (
    ModelChannel,
    chunk_rows,
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


def _rollout_sample(prompt: str, rewards: torch.Tensor | None, **objectives: float) -> Experience:
    info = {f"obj/{name}": torch.tensor([value]) for name, value in objectives.items()}
    return Experience(rewards=rewards, prompts=[prompt], info=info)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"format": 1.0, "length": float("nan")}, "objective 'length': value nan is not finite"),
        (
            {"format": 1.0, "match": 0.0},
            "objective 'length' (declared in --reward.objectives): the reward function's extra_logs has no "
            "'obj/length'; it reported ['obj/format', 'obj/match']",
        ),
    ],
)
def test_a_bad_sample_under_stop_names_its_prompt_its_problem_and_the_ways_out(bad, problem):
    """The pipeline's check of each rollout sample (``split_rollout_samples``) on OpenRLHF's own Experience rows.

    The experience maker is built without ``__init__``: its OpenRLHF base needs Ray actor groups, and the check
    runs before anything reaches them. That such an error stops a real run before step 1 and reaches the log is
    shown once end to end (tests/e2e/test_reward_channels_pipeline_on_cpu.py, a raising reward function)."""
    from openrlhf_maestro.integration.experience import AggregatingExperienceMaker, InvalidSampleError

    maker = object.__new__(AggregatingExperienceMaker)
    maker.function_objectives, maker.drop_invalid, maker.skip_objective = ["format", "length"], False, False
    good = _rollout_sample("What is 2 + 2?", torch.tensor([1.0]), format=1.0, length=0.5)
    samples = [good, _rollout_sample("Write a slogan for a bakery.", torch.tensor([1.0]), **bad)]
    with pytest.raises(InvalidSampleError) as err:
        maker.split_rollout_samples(samples)
    assert str(err.value) == (
        f"response 1 of this rollout batch (prompt 'Write a slogan for a bakery.'): {problem}. Fix the reward "
        "function, or pass --reward.failure_policy drop_response (zero advantage for such responses) or "
        "skip_objective (leave out only the missing objectives)."
    )


def test_info_keys_are_aligned_before_openrlhf_concatenates_them():
    from openrlhf_maestro.integration.experience import _align_info_keys

    ok = Experience(rewards=torch.tensor([1.0]), info={"score": torch.tensor([2.0]), "obj/x": torch.tensor([1.0])})
    ok2 = Experience(rewards=torch.tensor([1.0]), info={"score": torch.tensor([4.0]), "obj/x": torch.tensor([0.0])})
    failed = Experience(rewards=torch.zeros(1), info={"obj/x": torch.tensor([float("nan")])})
    _align_info_keys([ok, failed, ok2])
    merged = Experience.concat_experiences([ok, failed, ok2], pad_token_id=0)
    assert merged.info["score"].tolist() == [2.0, 3.0, 4.0]  # row 1 filled, rows 0 and 2 stay in place


def test_chunked_bf16_entropy_at_temperature_0_6_equals_the_float32_full_computation():
    """The probe hands the channels the model's bf16 logits and the temperature; each chunk is upcast, then
    divided, as OpenRLHF does with the whole tensor (actor.py 265-270). Reference: that whole float32 tensor
    divided by 0.6, and the entropy OpenRLHF computes from it (``compute_entropy``, models/utils.py 216-219:
    logsumexp(x) - sum softmax(x) x), written out here on all positions at once.

    Tolerance: both sides reduce the same float32 values row by row; chunking changes only which rows are
    computed together, so any difference is the last bits of a reduction whose terms reach max |x| ~ 47 here:
    a float32 ulp at 47 is 3.8e-6, and 2e-5 allows five of them. (Against a float64 computation both sides are
    3e-4 nats off on these logits; that is float32 cancellation in logsumexp - sum p x, not the chunking, and
    OpenRLHF's own entropy has it too.)"""
    vocab, temperature = 151936, 0.6
    generator = torch.Generator().manual_seed(0)
    logits = (2 * torch.randn(3, 40, vocab, generator=generator)).to(torch.bfloat16)
    logits[0, :5] *= 3  # sharper positions too: entropies from about 0.5 to 7.5 nats
    x = logits.float() / temperature
    expected = torch.logsumexp(x, dim=-1) - (torch.softmax(x, dim=-1) * x).sum(-1)
    got = token_entropy(logits, temperature)  # default chunks: ceil(120 / 16) = 8 positions each
    assert got.dtype == torch.float32 and got.shape == (3, 40)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(token_entropy(logits, temperature, chunk=7), expected, rtol=0, atol=2e-5)
    assert logits.dtype == torch.bfloat16  # the caller's tensor is neither upcast nor divided in place
    upcast = logits.float()
    torch.testing.assert_close(token_entropy(upcast, temperature), expected, rtol=0, atol=2e-5)
    assert torch.equal(upcast, logits.float())  # a float32 input is not divided in place either


def test_any_channel_reads_bf16_logits_in_chunks_as_it_would_read_the_float32_scaled_ones():
    """ModelChannel.per_token_in_chunks for a channel that defines only per_token (the example in
    docs/integration.md): the same values as per_token on the whole float32 logits / temperature, whatever the
    chunking."""

    class MaxProb(ModelChannel):
        name, source = "max_prob_test", "policy_logits"

        def per_token(self, logits):
            return torch.softmax(logits, dim=-1).amax(dim=-1)

    logits = torch.randn(2, 37, 1000, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    channel = MaxProb()
    expected = channel.per_token(logits.float() / 0.6)
    torch.testing.assert_close(channel.per_token_in_chunks(logits, 0.6), expected, rtol=1e-6, atol=1e-7)
    assert chunk_rows(74) == 5 and chunk_rows(100_000) == 256 and chunk_rows(3) == 1
