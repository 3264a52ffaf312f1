"""The integration's pieces on real OpenRLHF objects, without Ray: flags, hidden states, objectives, advantages."""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import pytest
import torch

from openrlhf_maestro.runtime import standin_finder

# OpenRLHF imports flash_attn unconditionally; on this CPU-only machine the CPU runtime's stand-in serves it.
standin_finder.install()

from openrlhf.models import Actor
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
from transformers import AutoModelForCausalLM

from openrlhf_maestro.channels import token_entropy
from openrlhf_maestro.integration.actor import _ChannelPolicyModelActor
from openrlhf_maestro.integration.flags import add_plugin_arguments, spec_from_flags, validate
from openrlhf_maestro.integration.hook import (
    AggregatorHook,
    InvalidSampleError,
    MissingObjectiveError,
    append_weights_log,
    fill_absent_entries,
    group_ids_of,
    load_standalone,
    objective_matrix,
    policy_outputs_of,
)
from openrlhf_maestro.integration.model_channels import ChannelInputError, reward_model_scores
from openrlhf_maestro.integration.probing import local_context_rows, pad_packed, probing
from openrlhf_maestro.method import (
    GROUP_ESTIMATORS,
    AggregateOutput,
    GDPOAggregator,
    RewardAggregator,
    group_advantages,
)
from openrlhf_maestro.metric_names import INVALID, documented
from openrlhf_maestro.probe import PolicyProbe, context_rows, gather_rows, terminal_positions


def parse(*flags: str) -> argparse.Namespace:
    """The plugin's flags plus the OpenRLHF flags validate() reads, with OpenRLHF's defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollout.n_samples_per_prompt", type=int, default=4)
    parser.add_argument("--algo.advantage.estimator", default="group_norm")
    for flag in (
        "--train.async_enable",
        "--ds.packing_samples",
        "--ckpt.disable_ds",
        "--algo.dynamic_filtering_enable",
    ):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--ds.ring_attn_size", type=int, default=1)
    parser.add_argument("--train.agent_func_path", default=None)
    parser.add_argument("--reward.remote_url", default="reward.py")
    parser.add_argument("--reward.model_name_or_path", default=None)
    add_plugin_arguments(parser)
    return parser.parse_args(list(flags))


def test_valid_flags_pass_and_no_aggregator_means_no_checks():
    assert (
        validate(parse("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--maestro.tau", "0.5")) == []
    )
    assert validate(parse()) == []
    assert (
        validate(parse("--reward.aggregator", "sum", "--reward.objectives", "a,b", "--reward.weights", "0.7,0.3"))
        == []
    )
    # Packed samples and ring attention with every kind of aggregator and a logit channel: no refusal.
    packed = ("--ds.packing_samples", "--ds.ring_attn_size", "2", "--reward.objectives", "a,entropy")
    for aggregator in ("maestro", "sum", "gdpo", "random"):
        assert validate(parse("--reward.aggregator", aggregator, *packed)) == [], aggregator


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--reward.aggregator", "maestro"], "needs --reward.objectives"),
        (["--reward.aggregator", "sum", "--reward.objectives", "a,a"], "name ['a'] more than once"),
        (
            ["--reward.aggregator", "sum", "--reward.objectives", "a,b", "--reward.weights", "1"],
            "2 finite numbers, one per",
        ),
        (
            ["--reward.aggregator", "sum", "--reward.objectives", "a", "--reward.weights", "x"],
            "comma-separated numbers",
        ),
        (
            ["--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.weights", "1,-1"],
            "maestro's prior: prior[1] must be a finite number >= 0",
        ),
        (
            ["--reward.aggregator", "gdpo", "--reward.objectives", "a", "--rollout.n_samples_per_prompt", "1"],
            "--rollout.n_samples_per_prompt 1",
        ),
        (
            ["--reward.aggregator", "maestro", "--reward.objectives", "a", "--algo.advantage.estimator", "gae"],
            "the maestro aggregator learns from the group-relative advantage of its reward",
        ),
        (
            ["--reward.aggregator", "random", "--reward.objectives", "a", "--rollout.n_samples_per_prompt", "1"],
            "the random aggregator reads prompt-group statistics",
        ),
        (["--reward.aggregator", "maestro", "--reward.objectives", "a", "--ckpt.disable_ds"], "--ckpt.disable_ds"),
        (["--reward.aggregator", "maestro", "--reward.objectives", "a", "--maestro.tau", "0"], "--maestro.*"),
        (["--reward.objectives", "a"], "given without --reward.aggregator"),
        (["--reward.aggregator", "sum", "--reward.objectives", "a", "--reward.remote_url", ""], "--reward.remote_url"),
        (
            ["--reward.aggregator", "maestro", "--reward.objectives", "format,preference"],
            "--reward.model_name_or_path",
        ),
        (
            [
                "--reward.aggregator",
                "maestro",
                "--reward.objectives",
                "perplexity",
                "--perplexity.reference_template",
                "x",
            ],
            "must contain {reference}",
        ),
    ],
)
def test_each_bad_combination_is_named(flags, expected):
    problems = validate(parse(*flags))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("estimator", ["gae", "reinforce", "flash_reinforce", *GROUP_ESTIMATORS])
def test_static_aggregators_run_with_every_estimator(estimator):
    """sum reads no groups (PPO's one sample per prompt is fine); gdpo and random need groups, not a group
    estimator; only an aggregator that learns from Â needs a group-relative estimator."""
    given = ("--reward.objectives", "a,b", "--algo.advantage.estimator", estimator)
    assert validate(parse("--reward.aggregator", "sum", *given, "--rollout.n_samples_per_prompt", "1")) == []
    assert validate(parse("--reward.aggregator", "gdpo", *given)) == []
    assert validate(parse("--reward.aggregator", "random", *given)) == []
    no_groups = ("--random.normalization", "none", "--rollout.n_samples_per_prompt", "1")
    assert validate(parse("--reward.aggregator", "random", *given, *no_groups)) == []
    assert (validate(parse("--reward.aggregator", "maestro", *given)) == []) == (estimator in GROUP_ESTIMATORS)


def test_a_static_aggregator_with_single_samples_feeds_nothing_back():
    hook = _hook("--reward.aggregator", "sum", "--reward.objectives", "a,b", "--reward.weights", "2,1")
    experiences = [
        _experience([0.0, 0.0], [0, 1], {"obj/a": torch.tensor([1.0, 0.0]), "obj/b": torch.tensor([0.5, 1])})
    ]
    hook.args.rollout.n_samples_per_prompt = 1  # one response per prompt, as PPO with a critic runs
    hook.before_advantages(experiences)
    assert experiences[0].rewards.tolist() == [2.5, 1.0]
    assert hook.after_advantages(experiences) == {}  # no group advantages computed, whatever the estimator


def test_unknown_aggregator_is_named_with_the_valid_ones():
    # checked after parsing, once --reward.plugins (which may register it) are imported
    (problem,) = validate(parse("--reward.aggregator", "median", "--reward.objectives", "a"))
    assert "--reward.aggregator: unknown reward aggregator 'median'; valid names: ['gdpo', 'maestro'" in problem


def test_terminal_positions_follow_openrlhfs_action_mask_layout():
    # T = 6: prompt tokens 0-2, response tokens 3-4 (row 0) or 3-5 (row 1); action_mask = mask[1:], A = 5.
    action_mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
    assert terminal_positions(action_mask, 6, "response").tolist() == [4, 5]
    assert terminal_positions(action_mask, 6, "prompt").tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"rows \[0\] have no response token"):
        terminal_positions(torch.tensor([[0, 0], [1, 0]]), 3, "response")


def test_the_launchers_probe_reads_h_and_channels_from_openrlhfs_own_forward(tiny_model_dir):
    """The launcher's lm_head hooks hand the probe what the upstream patch hands it inside Actor.forward: h
    (the final-normed last layer) and the logits divided by the rollout temperature, from the one forward."""
    temperature = 0.7
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    actor = Actor(model, temperature=temperature)
    actor.packing_samples = False  # set only when Actor loads a model by name (actor.py 98-170)
    calls = []
    sequences = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10]])
    attention_mask = torch.ones_like(sequences)
    action_mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
    probe = PolicyProbe(context="response", channels={"entropy": {}})
    with probing(actor, probe, calls=calls) as per_token:  # no context rows: the whole h, as the patch reads it
        log_probs = actor(sequences, action_mask, attention_mask)
    assert len(calls) == 1  # read from the forward that ran, not a second one
    out = model(sequences, output_hidden_states=True)
    last = out.hidden_states[-1]  # HF's last entry is after the final norm, as lm_head sees it
    torch.testing.assert_close(per_token["hidden"], last)
    torch.testing.assert_close(per_token["entropy"], token_entropy(out.logits / temperature))
    read = probe.per_sample(per_token, action_mask)
    assert torch.equal(read["hidden"], torch.stack([last[0, 4], last[1, 5]]))
    expected = token_entropy(out.logits, temperature)[:, :-1]  # position p predicts token p + 1: actions 0..4
    torch.testing.assert_close(read["entropy"], (expected * action_mask).sum(1) / action_mask.sum(1))
    torch.testing.assert_close(log_probs, actor(sequences, action_mask, attention_mask))
    assert len(calls) == 1 and not model.lm_head._forward_hooks  # hooks only inside the block


def test_a_packed_forward_equals_the_padded_one_in_log_probs_h_and_channels(tiny_model_dir):
    """OpenRLHF's packed path on CPU (sdpa, block-diagonal mask from the packed position_ids, the CPU runtime's
    mapping of flash_attention_2) against its padded path: the same log-probs, and the same h and entropy
    after the launcher pads the probe's packed values back. Rows are left-padded prompts + right-padded
    responses, as OpenRLHF lays them out."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    # As Actor.__init__ does (actor.py 208-210): without it transformers builds a KV cache and then ignores the
    # packed position ids (masking_utils 851-859), so the packed rows would attend across samples.
    model.config.use_cache = False
    sequences = torch.tensor(
        [[0, 0, 5, 6, 7, 8, 9, 0], [0, 11, 12, 13, 14, 15, 16, 17], [21, 22, 23, 24, 25, 0, 0, 0]]
    )
    attention_mask = (torch.arange(8) >= torch.tensor([[2], [1], [0]])) & (
        torch.arange(8) < torch.tensor([[7], [8], [5]])
    )
    attention_mask = attention_mask.long()
    action_mask = attention_mask[:, 4:].bool()  # A = 4 (T - 1 = 7 predictions): the last four positions
    probe = PolicyProbe(context="response", channels={"entropy": {}})
    read = {}
    for packing in (False, True):
        actor = Actor(model, temperature=0.9)
        actor.packing_samples = packing
        with probing(actor, probe) as per_token:
            log_probs = actor(sequences, action_mask, attention_mask)
        if packing:
            assert per_token["hidden"].shape[:2] == (1, int(attention_mask.sum()))  # lm_head saw the packed row
            per_token = pad_packed(per_token, sequences, attention_mask)
        read[packing] = (log_probs, probe.per_sample(per_token, action_mask))
    (padded_lp, padded), (packed_lp, packed) = read[False], read[True]
    torch.testing.assert_close(packed_lp, padded_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed["hidden"], padded["hidden"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed["entropy"], padded["entropy"], rtol=1e-5, atol=1e-5)


def test_context_rows_index_the_rows_lm_head_reads_padded_and_packed():
    # T = 5. Row 0: tokens at 1..4 (left pad 1), response 3..4; row 1: tokens 0..2 (right pad 2), response 2.
    attention_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    action_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])  # A = 4: action i predicts token 1 + i
    # padded: b * T + position; response context = last response token (4 and 2), prompt = the token before
    assert context_rows(action_mask, attention_mask, "response", packed=False).tolist() == [4, 7]
    assert context_rows(action_mask, attention_mask, "prompt", packed=False).tolist() == [2, 6]
    # packed row = the 7 attended tokens in order: (0,1) (0,2) (0,3) (0,4) (1,0) (1,1) (1,2)
    assert context_rows(action_mask, attention_mask, "response", packed=True).tolist() == [3, 6]
    assert context_rows(action_mask, attention_mask, "prompt", packed=True).tolist() == [1, 5]
    with pytest.raises(ValueError, match=r"rows \[1\]: the response context position is padding"):
        context_rows(torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]), attention_mask, "response", packed=True)
    hidden = torch.arange(14.0).reshape(1, 7, 2)
    assert gather_rows(hidden, torch.tensor([3, -1, 6])).tolist() == [[6.0, 7.0], [0.0, 0.0], [12.0, 13.0]]


def _probed_policy(model, temperature: float, packing: bool) -> _ChannelPolicyModelActor:
    policy = _ChannelPolicyModelActor.__new__(_ChannelPolicyModelActor)  # no Ray: the forward only
    policy.actor = Actor(model, temperature=temperature)
    policy.actor.packing_samples = packing
    policy.strategy = SimpleNamespace(ring_attn_group=None)
    policy._channel_records, policy._probed_forwards = [], 0
    return policy


def test_the_launchers_forward_reads_h_rows_and_bf16_entropy_without_padding_h(tiny_model_dir, monkeypatch):
    """The whole launcher path, PolicyModelActor.forward -> Actor.forward with the lm_head hook, on a bf16 model
    at temperature 0.6, padded and packed: h is read at each sample's context row (never (B, T, H)), equal to
    HF's own final-normed state there; the entropy equals the float32 one from OpenRLHF's upcast-then-divide
    logits; lm_head runs once per forward. ``torch.cuda.current_device`` is the only stand-in: OpenRLHF's
    PolicyModelActor.forward asks it for the device, and a CPU build of torch cannot answer."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.config.use_cache = False  # as Actor.__init__ does (see the packed test above)
    sequences = torch.tensor(
        [[0, 0, 5, 6, 7, 8, 9, 0], [0, 11, 12, 13, 14, 15, 16, 17], [21, 22, 23, 24, 25, 0, 0, 0]]
    )
    attention_mask = (torch.arange(8) >= torch.tensor([[2], [1], [0]])) & (
        torch.arange(8) < torch.tensor([[7], [8], [5]])
    )
    attention_mask = attention_mask.long()
    action_mask = attention_mask[:, 4:].bool()
    probe = PolicyProbe(context="response", channels={"entropy": {}})
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # as Actor.forward
    with torch.no_grad():
        out = model(sequences, attention_mask=attention_mask, position_ids=position_ids, output_hidden_states=True)
    last = out.hidden_states[-1]
    expected_h = torch.stack([last[0, 6], last[1, 7], last[2, 4]]).float()  # each row's last response token
    x = out.logits.float() / 0.6
    entropy = (torch.logsumexp(x, -1) - (torch.softmax(x, -1) * x).sum(-1))[:, :-1][:, -4:]
    expected_entropy = (entropy * action_mask).sum(1) / action_mask.sum(1)
    records, seen = {}, []
    for packing in (False, True):
        policy = _probed_policy(model, 0.6, packing)
        seen.clear()
        hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.dtype)))
        log_probs = policy.forward(sequences, action_mask, attention_mask, policy_probe=probe)
        hook.remove()
        (record,), forwards = policy.pop_channel_records()
        assert forwards == 1 and len(seen) == 1 and seen[0][1] == torch.bfloat16  # one lm_head call, bf16 out
        assert seen[0][0][:2] == ((1, 17) if packing else (3, 8))  # 5 + 7 + 5 attended tokens
        assert record["hidden"].dtype == torch.float32 and record["hidden"].device.type == "cpu"
        assert log_probs.shape == action_mask.shape
        records[packing] = record
    for packing, record in records.items():
        # the padded forward is HF's own, so h is equal to the bf16 bit; the packed one attends within each
        # sample through a different mask path: bf16 rounding of the states (2**-8 relative) bounds it
        tol = dict(rtol=2e-2, atol=2e-2) if packing else dict(rtol=0, atol=0)
        torch.testing.assert_close(record["hidden"], expected_h, **tol)
        torch.testing.assert_close(record["entropy"], expected_entropy, rtol=0, atol=2e-5 if not packing else 5e-2)
    torch.testing.assert_close(records[True]["entropy"], records[False]["entropy"], rtol=2e-2, atol=5e-2)


def test_ring_ranks_each_read_the_contexts_in_their_slice_and_their_sum_is_the_whole(monkeypatch):
    """Ring attention splits the packed row into equal slices, one per rank (ring_attn_utils 80-93); each
    rank's lm_head sees only its slice. A ring of 3 ranks needs 3 processes and ring_flash_attn, which cannot
    run here, so ``dist.get_rank``/``get_world_size`` are stood in for, per simulated rank."""
    from openrlhf_maestro.integration import probing as probing_module

    attention_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # nnz = 7: slices of 3, 3, 1 (+2 pad)
    action_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    packed_h = torch.arange(2.0 * 9).reshape(1, 9, 2)  # 7 packed states + 2 ring padding rows
    full = gather_rows(packed_h, context_rows(action_mask, attention_mask, "response", packed=True))
    monkeypatch.setattr(probing_module.dist, "get_world_size", lambda group: 3)
    total = torch.zeros_like(full)
    for rank in range(3):
        monkeypatch.setattr(probing_module.dist, "get_rank", lambda group, rank=rank: rank)
        rows = local_context_rows("response", action_mask, attention_mask, packed=True, ring_attn_group="ring")
        total += gather_rows(packed_h[:, 3 * rank : 3 * rank + 3], rows)  # what this rank's lm_head saw
    assert torch.equal(total, full) and full.tolist() == [[6.0, 7.0], [12.0, 13.0]]


def _experience(rewards, index, info=None, num_actions=3):
    b = len(rewards)
    return Experience(
        rewards=torch.tensor(rewards, dtype=torch.float32),
        kl=torch.zeros(b, num_actions),
        action_mask=torch.ones(b, num_actions, dtype=torch.bool),
        index=list(index),
        info=dict(info or {}),
    )


def _openrlhf_advantages(estimator: str, n: int) -> RemoteExperienceMaker:
    """OpenRLHF's real experience maker, only for its ``compute_advantages_and_returns`` (KL off, no length
    penalties): no models, no Ray."""
    args = SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=n, max_new_tokens=8),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator=estimator, gamma=1.0, no_std_norm=False)),
        reward=SimpleNamespace(clip_range=(-100, 100), overlong_buffer_len=None, stop_properly_penalty_coef=None),
        data=SimpleNamespace(max_len=16),
    )
    return RemoteExperienceMaker(None, None, None, None, FixedKLController(0.0), SimpleNamespace(args=args), None)


@pytest.mark.parametrize("estimator", GROUP_ESTIMATORS)
def test_feedback_advantages_equal_openrlhfs_own(estimator):
    """OpenRLHF's real compute_advantages_and_returns with KL off: the per-response return is its advantage."""
    n = 4
    torch.manual_seed(0)
    rewards = torch.randn(12).tolist()
    order = [5, 0, 9, 3, 11, 1, 7, 2, 10, 4, 8, 6]  # micro-batches hold samples out of prompt order
    experiences = [_experience([rewards[i] for i in order[k : k + 3]], order[k : k + 3]) for k in range(0, 12, 3)]
    maker = _openrlhf_advantages(estimator, n)
    ours = group_advantages(torch.cat([e.rewards for e in experiences]), group_ids_of(experiences, n), estimator)
    theirs = torch.cat([e.info["return"] for e in maker.compute_advantages_and_returns(experiences)])
    if estimator == "reinforce_baseline":  # OpenRLHF then whitens over the batch (experience_maker.py 323-338)
        theirs = torch.cat([e.advantages[:, -1] for e in experiences])
        ours = (ours - ours.mean()) / ours.std(unbiased=False).clamp(min=1e-4)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)


def test_gdpo_under_its_estimator_gives_the_gdpo_advantage_written_out_independently():
    """GDPO (TRL, verl, NeMo-RL): z-score each objective inside its group, weight and sum, whiten over the batch.
    ``gdpo`` + OpenRLHF's real ``reinforce_baseline`` must give exactly that; OpenRLHF whitens over the batch's
    tokens, so a response weighs as many times as it has tokens (written out below as such)."""
    n, weights = 4, [2.0, 0.5]
    torch.manual_seed(1)
    objectives = torch.rand(12, 2).round(decimals=1)
    objectives[4:8, 1] = 0.3  # a constant objective in group 1: GDPO gives it 0 there
    lengths = [3, 1, 2, 3, 2, 3, 1, 1, 3, 2, 2, 3]
    groups = torch.arange(12) // n
    scalar = GDPOAggregator(["a", "b"], weights).aggregate(objectives, groups).rewards
    experiences = []
    for k in range(0, 12, 3):
        rows = range(k, k + 3)
        exp = _experience([float(scalar[i]) for i in rows], rows)
        exp.action_mask = torch.tensor([[t < lengths[i] for t in range(3)] for i in rows])
        experiences.append(exp)
    maker = _openrlhf_advantages("reinforce_baseline", n)
    theirs = [
        float(e.advantages[b, t])
        for e in maker.compute_advantages_and_returns(experiences)
        for b in range(3)
        for t in range(3)
        if e.action_mask[b, t]
    ]

    # Independently: per-objective group z-scores (unbiased std, eps 1e-6, 0 for a constant), weighted sum.
    values = objectives.tolist()
    summed = []
    for i in range(12):
        g = range(i // n * n, i // n * n + n)
        total = 0.0
        for k, w in enumerate(weights):
            column = [values[j][k] for j in g]
            mu = sum(column) / n
            sd = math.sqrt(sum((x - mu) ** 2 for x in column) / (n - 1))
            total += w * (0.0 if max(column) == min(column) else (values[i][k] - mu) / (sd + 1e-6))
        summed.append(total)
    tokens = [summed[i] for i in range(12) for _ in range(lengths[i])]  # one entry per response token
    mean = sum(tokens) / len(tokens)
    std = math.sqrt(sum((x - mean) ** 2 for x in tokens) / len(tokens))
    expected = [(x - mean) / std for x in tokens]
    assert theirs == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_objectives_are_read_in_experience_order_and_a_missing_one_is_named():
    experiences = [
        _experience(
            [0.0, 0.0], [0, 1], {"obj/format": torch.tensor([1.0, 0.0]), "obj/length": torch.tensor([0.5, 0.25])}
        ),
        _experience([0.0], [2], {"obj/format": torch.tensor([1.0]), "obj/length": torch.tensor([0.75])}),
    ]
    matrix = objective_matrix(experiences, ["length", "format"])
    assert matrix.tolist() == [[0.5, 1.0], [0.25, 0.0], [0.75, 1.0]]
    with pytest.raises(MissingObjectiveError, match=r"no 'obj/preference' for objective 'preference'.*obj/format"):
        objective_matrix(experiences, ["format", "preference"])
    with pytest.raises(MissingObjectiveError, match=r"it reported no obj/\* keys\. Put extra_logs\['obj/format'\]"):
        objective_matrix([_experience([0.0], [0])], ["format"])
    assert group_ids_of(experiences, 2).tolist() == [0, 0, 1]


def _hook(*flags: str, hidden_size: int | None = None) -> AggregatorHook:
    """The hook the launcher builds from these flags (nested args as OpenRLHF passes them; no model loads)."""
    from openrlhf.utils.config import hierarchize

    ns = parse(*flags)
    args = hierarchize(ns)
    args.actor = SimpleNamespace(model_name_or_path=None)
    spec = spec_from_flags(ns)
    hook = AggregatorHook.__new__(AggregatorHook)  # __init__ would read H from the model's config
    hook.args, hook.spec, hook.hidden_size, hook.steps = args, spec, hidden_size, 0
    hook.aggregator, hook.policy_probe = spec.build(hidden_size), PolicyProbe.of(spec)
    return hook


def test_standalone_aggregator_file_round_trips(tmp_path):
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "format,length", "--reward.weights", "3,1")
    hook = _hook(*flags, "--maestro.lr", "0.05", hidden_size=8)
    aggregator = hook.aggregator
    torch.manual_seed(0)
    out = aggregator.aggregate(torch.rand(8, 2), torch.arange(8) // 4, torch.randn(8, 8))
    aggregator.feedback(group_advantages(out.rewards, torch.arange(8) // 4, "group_norm"))
    path = hook.save_standalone(tmp_path)
    assert torch.load(path, weights_only=True)["objectives"] == ["format", "length"]
    restored = load_standalone(path)
    assert restored.config.lr == 0.05 and list(restored.config.prior) == [3.0, 1.0]
    h = torch.randn(3, 8)
    assert torch.equal(restored.conductor.expected_weights(h), aggregator.conductor.expected_weights(h))


def test_random_ablation_from_its_own_flags_round_trips(tmp_path):
    flags = ("--reward.aggregator", "random", "--reward.objectives", "format,length", "--reward.weights", "3,1")
    hook = _hook(*flags, "--random.beta", "1.0", "--random.seed", "7", "--random.normalization", "none")
    aggregator = hook.aggregator
    rewards = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [3.0, 1.0]])
    out = aggregator.aggregate(rewards, torch.tensor([0, 0, 1, 1]))
    # beta = 1 and no normalization: each response is scored by exactly one raw objective.
    assert all(sorted(row) == [0.0, 1.0] for row in out.weights.tolist()), out.weights
    assert torch.equal(out.rewards, (out.weights * rewards).sum(-1))
    path = hook.save_standalone(tmp_path)
    restored = load_standalone(path)
    assert torch.equal(
        restored.aggregate(rewards, torch.tensor([0, 0, 1, 1])).rewards,
        aggregator.aggregate(rewards, torch.tensor([0, 0, 1, 1])).rewards,
    )


def test_model_channels_a_run_cannot_compute_are_named_with_the_fix():
    hook = _hook("--reward.aggregator", "sum", "--reward.objectives", "format,preference")
    assert hook.policy_probe is None  # a reward-model channel reads nothing from the policy forward
    experiences = [_experience([0.0, 0.0], [0, 1], {"obj/format": torch.ones(2)})]
    message = (
        r"^OpenRLHF passed no experience maker, so the model channels \['preference'\] cannot run: apply "
        r"patches/openrlhf-0\.11\.2-reward-aggregator\.patch, or use the plugin's launcher$"
    )
    with pytest.raises(RuntimeError, match=message):
        hook.before_advantages(experiences, None)
    # OpenRLHF's real experience maker, as an unpatched OpenRLHF builds it beside a reward function: no RM group.
    maker = RemoteExperienceMaker(
        None, None, None, None, FixedKLController(0.0), SimpleNamespace(args=hook.args), None
    )
    with pytest.raises(ChannelInputError, match="--reward.model_name_or_path"):
        hook.before_advantages(experiences, maker)
    experiences[0].info["obj/preference"] = torch.ones(2)
    with pytest.raises(
        InvalidSampleError,
        match=r"reports \['preference'\], which are model channels the plugin comp"
        r"utes itself; rename the reward function's objective$",
    ):
        hook.before_advantages(experiences, maker)


def test_the_probe_asks_only_for_what_the_spec_reads():
    assert _hook("--reward.aggregator", "sum", "--reward.objectives", "format,length").policy_probe is None
    probe = _hook("--reward.aggregator", "sum", "--reward.objectives", "format,entropy").policy_probe
    assert (probe.needs_hidden, probe.needs_logits, dict(probe.channels)) == (False, True, {"entropy": {}})
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "format,perplexity", "--reward.context")
    probe = _hook(*flags, "prompt", hidden_size=8).policy_probe
    assert (probe.needs_hidden, probe.context, probe.needs_logits) == (True, "prompt", False)


def test_filter_score_needs_dynamic_filtering_and_takes_the_spec_weights():
    from openrlhf_maestro.integration.flags import filter_weights

    base = ("--reward.aggregator", "maestro", "--reward.objectives", "a,entropy,b", "--reward.weights", "2,1,3")
    (problem,) = validate(parse(*base, "--reward.filter_score", "aggregator_weights"))
    assert "--algo.dynamic_filtering_enable" in problem
    ns = parse(*base, "--reward.filter_score", "aggregator_weights", "--algo.dynamic_filtering_enable")
    assert validate(ns) == [] and filter_weights(spec_from_flags(ns), ns) == [2.0, 3.0]  # channels not scored yet
    assert filter_weights(spec_from_flags(parse(*base)), parse(*base)) is None


def test_weights_log_records_the_drawn_and_the_expected_weights(tmp_path) -> None:
    """One line per response in the given order; "expected" only when the aggregator gives it."""
    import json

    log = tmp_path / "w.jsonl"
    drawn = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    append_weights_log(str(log), 3, ["a", "b"], ["p0", "p1"], drawn, torch.tensor([[0.6, 0.4], [0.45, 0.55]]))
    append_weights_log(str(log), 4, ["a", "b"], ["p2"], drawn[:1])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["step"], r["prompt"], r["emphasis"]) for r in rows] == [(3, "p0", "a"), (3, "p1", "b"), (4, "p2", "a")]
    assert rows[1]["weights"] == pytest.approx({"a": 0.2, "b": 0.8})
    assert rows[1]["expected"] == pytest.approx({"a": 0.45, "b": 0.55})
    assert "expected" not in rows[2]
    with pytest.raises(ValueError, match="2 prompts, 2 weight rows, 1 expected rows"):
        append_weights_log(str(log), 5, ["a", "b"], ["p3", "p4"], drawn, torch.tensor([[0.5, 0.5]]))
    assert len(log.read_text().splitlines()) == 3  # nothing of the refused step written


def test_the_probes_values_are_taken_out_of_info_and_a_missing_one_names_the_patch():
    """The policy-probe patch (and the launcher) put what the probe read into each experience's info; the hook
    takes it out there (OpenRLHF would log h as a metric) and names the patch when it is missing."""
    hook = _hook("--reward.aggregator", "sum", "--reward.objectives", "format,entropy")
    experiences = [
        _experience([0.0, 0.0], [0, 1], {"obj/format": torch.ones(2), "entropy": torch.tensor([0.5, 1.5])}),
        _experience([0.0, 0.0], [2, 3], {"obj/format": torch.ones(2)}),
    ]
    with pytest.raises(RuntimeError, match=r"no policy-probe values \['entropy'\].*openrlhf-0.11.2-policy-probe"):
        policy_outputs_of(experiences, hook.policy_probe)
    experiences[1].info["entropy"] = torch.tensor([2.5, 3.5])
    outputs = policy_outputs_of(experiences, hook.policy_probe)
    assert [o["entropy"].tolist() for o in outputs] == [[0.5, 1.5], [2.5, 3.5]]
    assert not any("entropy" in e.info for e in experiences)
    assert policy_outputs_of(experiences, None) is None


def test_the_hooks_logs_ride_in_info_as_constants_per_sample():
    hook = _hook("--reward.aggregator", "sum", "--reward.objectives", "a,b", "--reward.weights", "2,1")
    experiences = [_experience([0.0] * 3, [0, 1, 2], {"obj/a": torch.ones(3), "obj/b": torch.zeros(3)})]
    logs = hook.before_advantages(experiences)
    assert logs["reward/a"] == 1.0 and logs["reward/b"] == 0.0
    for name, value in logs.items():  # OpenRLHF logs the sample mean of each info tensor as train/<name>
        assert experiences[0].info[name].tolist() == [pytest.approx(value)] * 3, name


def test_a_reward_model_score_openrlhf_already_computed_is_read_not_recomputed():
    experiences = [
        _experience([0.0, 0.0], [0, 1], {"reward_model": torch.tensor([0.25, -1.0])}),
        _experience([0.0], [2], {"reward_model": torch.tensor([3.0])}),
    ]
    # No experience maker: reading the score OpenRLHF put in info must not dispatch anything.
    assert reward_model_scores("preference", experiences, None).tolist() == [0.25, -1.0, 3.0]


# ---- the hook's sample order and its failure policies, against values worked out by hand --------------------
SHUFFLED = [5, 0, 9, 3, 11, 1, 7, 2, 10, 4, 8, 6]  # micro-batches of 3 out of sample order (dynamic batching)


class _RecordingAggregator(RewardAggregator):
    """Records what the hook hands it; R = a + 10·h₀, so each R names the objectives and the h it was given."""

    needs_hidden = True
    learns_from_advantages = True

    def __init__(self) -> None:
        super().__init__(["a", "b"])
        self.seen: dict[str, torch.Tensor] = {}

    def aggregate(self, rewards, group_ids, hidden=None) -> AggregateOutput:
        self.seen.update(rewards=rewards.clone(), group_ids=group_ids.clone(), hidden=hidden.clone())
        return AggregateOutput(torch.nan_to_num(rewards[:, 0]) + 10 * hidden[:, 0], weights=rewards.clone())

    def feedback(self, advantages) -> dict[str, float]:
        self.seen["advantages"] = advantages.clone()
        return {}


def _shuffled_batch(a: list[float], b: list[float], hidden: torch.Tensor, order: list[int], size: int):
    """Experiences of ``size`` samples in ``order`` with obj/a, obj/b, and the probe's h of each in their info."""
    experiences, outputs = [], []
    for k in range(0, len(order), size):
        rows = order[k : k + size]
        info = {"obj/a": torch.tensor([a[i] for i in rows]), "obj/b": torch.tensor([b[i] for i in rows])}
        outputs.append({"hidden": hidden[rows]})
        info.update(outputs[-1])  # where the policy-probe patch and the launcher put what the probe read
        experiences.append(_experience([0.0] * len(rows), rows, info))
    return experiences, outputs


def test_r_h_and_the_advantages_make_the_round_trip_through_sample_order():
    """The aggregator sees objectives and h in sample order; R goes back to each sample; the advantages fed back
    are in sample order again and equal OpenRLHF's own."""
    a = [((7 * i) % 5) / 4 for i in range(12)]
    b = [float(i) for i in range(12)]
    hidden = torch.tensor([[((5 * i) % 7) / 10 - 0.3, -float(i)] for i in range(12)])
    hook = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,b", hidden_size=2)
    hook.aggregator = recorder = _RecordingAggregator()
    experiences, outputs = _shuffled_batch(a, b, hidden, SHUFFLED, 3)
    hook.before_advantages(experiences)
    assert recorder.seen["rewards"].tolist() == [[a[i], b[i]] for i in range(12)]
    assert torch.equal(recorder.seen["hidden"], hidden)
    assert recorder.seen["group_ids"].tolist() == [i // 4 for i in range(12)]
    r = [a[i] + 10 * float(hidden[i, 0]) for i in range(12)]  # what each sample's R must be
    for e in experiences:
        assert e.rewards.tolist() == pytest.approx([r[i] for i in e.index], abs=1e-6)
        assert torch.equal(e.info["reward"], e.rewards)
    hook.after_advantages(experiences)
    expected = []  # group_norm by hand: (R − μ_g) / (σ_g + 1e-9), σ unbiased
    for i in range(12):
        group = r[i // 4 * 4 : i // 4 * 4 + 4]
        mu = sum(group) / 4
        sd = math.sqrt(sum((x - mu) ** 2 for x in group) / 3)
        expected.append((r[i] - mu) / (sd + 1e-9))
    assert recorder.seen["advantages"].tolist() == pytest.approx(expected, abs=1e-5)
    theirs = {}
    for e in _openrlhf_advantages("group_norm", 4).compute_advantages_and_returns(experiences):
        theirs.update(zip(e.index, e.advantages[:, -1].tolist(), strict=True))
    assert [theirs[i] for i in range(12)] == pytest.approx(expected, abs=1e-5)


def _failure_batch(policy: str, a: list[float], b: list[float], flagged: list[int]):
    """8 responses of 2 prompts through a real maestro hook under ``policy``, micro-batches out of sample order;
    ``flagged`` rows are the ones the experience maker marked as failed (their reward function raised)."""
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.failure_policy", policy)
    hook = _hook(*flags, hidden_size=4)
    hidden = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    experiences, outputs = _shuffled_batch(a, b, hidden, [3, 6, 1, 4, 0, 7, 2, 5], 2)
    for e in experiences:
        e.info[INVALID] = torch.tensor([float(i in flagged) for i in e.index])
    logs = hook.before_advantages(experiences)
    r = {i: float(v) for e in experiences for i, v in zip(e.index, e.rewards, strict=True)}
    return experiences, logs, r


def _advantages_by_sample(experiences: list, estimator: str) -> dict[int, list[float]]:
    """OpenRLHF's own per-token advantages of each response, by sample index."""
    maker = _openrlhf_advantages(estimator, 4)
    out = {}
    for e in maker.compute_advantages_and_returns(experiences):
        out.update(zip(e.index, e.advantages.tolist(), strict=True))
    return out


@pytest.mark.parametrize("estimator", GROUP_ESTIMATORS)
def test_a_dropped_response_gets_zero_advantage_from_openrlhf(estimator):
    """drop_response: a flagged response (NaN placeholders) and one with a NaN objective are dropped; each takes
    its group's mean R, so OpenRLHF's advantage of it is 0 at every token (to float32 rounding), while the
    maestro aggregator's own R of such a row (its normalized objectives are 0) is not that mean."""
    nan = float("nan")
    a = [0.2, nan, 0.9, 0.4, 0.1, 0.7, nan, 0.3]
    b = [1.0, nan, 0.0, 0.5, 0.25, 0.0, 1.0, 0.75]
    experiences, logs, r = _failure_batch("drop_response", a, b, flagged=[1])
    assert logs["reward/dropped_samples"] == 2.0
    assert r[1] == pytest.approx((r[0] + r[2] + r[3]) / 3, abs=1e-6)
    assert r[6] == pytest.approx((r[4] + r[5] + r[7]) / 3, abs=1e-6)
    advantages = _advantages_by_sample(experiences, estimator)
    for dropped in (1, 6):
        assert advantages[dropped] == pytest.approx([0.0] * 3, abs=1e-6), (dropped, advantages[dropped])
    assert max(abs(advantages[i][0]) for i in (0, 2, 3, 4, 5, 7)) > 0.1  # the others still carry a signal


def test_skip_objective_drops_a_row_with_every_objective_missing_and_skips_single_ones():
    """skip_objective: a response missing every objective is dropped whole (finite R, its group's mean, zero
    advantage); one missing only ``a`` keeps a finite R from ``b`` and is counted as a skip of ``a``."""
    nan = float("nan")
    a = [0.2, nan, 0.9, 0.4, 0.1, 0.7, nan, 0.3]
    b = [1.0, nan, 0.0, 0.5, 0.25, 0.0, 1.0, 0.75]
    # Row 5's reward function raised (flagged by the experience maker) although its placeholders are finite.
    experiences, logs, r = _failure_batch("skip_objective", a, b, flagged=[5])
    assert logs["reward/dropped_samples"] == 2.0
    assert (logs["reward/skipped/a"], logs["reward/skipped/b"]) == (1.0, 0.0)  # row 1 is dropped, not skipped
    assert [k for k in logs if documented(k) is None] == []  # every key the hook logs is in the reference
    assert all(math.isfinite(v) for v in r.values()), r
    assert r[1] == pytest.approx((r[0] + r[2] + r[3]) / 3, abs=1e-6)
    assert r[5] == pytest.approx((r[4] + r[6] + r[7]) / 3, abs=1e-6)
    advantages = _advantages_by_sample(experiences, "group_norm")
    assert advantages[1] == pytest.approx([0.0] * 3, abs=1e-6) and advantages[5] == pytest.approx([0.0] * 3, abs=1e-6)
    assert abs(advantages[6][0]) > 1e-3  # scored on b alone, not dropped
    # OpenRLHF's own obj/* logs stay finite: each absent entry holds its group's mean of that objective.
    obj_a = {i: float(v) for e in experiences for i, v in zip(e.index, e.info["obj/a"], strict=True)}
    assert obj_a[1] == pytest.approx((0.2 + 0.9 + 0.4) / 3)
    assert obj_a[6] == pytest.approx((0.1 + 0.3) / 2)  # row 5 is out too
    # What the aggregator is handed: NaN exactly where an objective is left out (it renormalizes the rest).
    hook = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.failure_policy",
                 "skip_objective", hidden_size=2)  # fmt: skip
    hook.aggregator = recorder = _RecordingAggregator()
    batch, outputs = _shuffled_batch(a, b, torch.zeros(8, 2), [3, 6, 1, 4, 0, 7, 2, 5], 2)
    hook.before_advantages(batch)
    missing = torch.isnan(recorder.seen["rewards"]).nonzero().tolist()
    assert missing == [[1, 0], [1, 1], [6, 0]]


def test_a_failed_objective_under_stop_names_the_row_the_value_and_the_ways_out():
    hook = _hook("--reward.aggregator", "sum", "--reward.objectives", "a,b")
    info = {"obj/a": torch.tensor([0.5, float("nan"), 0.25, 1.0]), "obj/b": torch.ones(4)}
    with pytest.raises(InvalidSampleError) as err:
        hook.before_advantages([_experience([0.0] * 4, [0, 1, 2, 3], info)])
    assert str(err.value) == (
        "objective 'a' is nan (not finite) for response 1 of this batch. Fix the reward function, or pass "
        "--reward.failure_policy drop_response (zero advantage for such responses) or skip_objective (leave out "
        "only that objective)."
    )
    info["obj/a"] = torch.tensor([0.5, 0.75, 0.25, 1.0])
    logs = hook.before_advantages([_experience([0.0] * 4, [0, 1, 2, 3], info)])
    assert not any(key.startswith("reward/dropped") or key.startswith("reward/skipped") for key in logs), logs


@pytest.mark.parametrize("policy", ["drop_response", "skip_objective"])
def test_a_non_finite_model_channel_always_stops(policy):
    """A policy_logits channel (entropy) comes from the policy forward; NaN there is a bug, never a dropped sample.
    Under skip_objective a response missing its only function objective is dropped whole, whatever its channels."""
    flags = ("--reward.aggregator", "sum", "--reward.objectives", "a,entropy", "--reward.failure_policy", policy)
    hook = _hook(*flags)
    maker = SimpleNamespace()  # the policy_logits channel reads only the probe's outputs, not the experience maker
    info = {"obj/a": torch.tensor([0.5, float("nan"), 0.25, 1.0])}
    entropy = torch.tensor([1.0, 2.0, float("nan"), 3.0])
    with pytest.raises(
        InvalidSampleError,
        match=r"objective 'entropy' is nan \(not finite\) for response 2 of this "
        r"batch. It is a model channel: this is a bug or a numerical overflow in the policy.$",
    ):
        hook.before_advantages([_experience([0.0] * 4, [0, 1, 2, 3], {**info, "entropy": entropy.clone()})], maker)
    entropy[2] = 4.0
    experiences = [_experience([0.0] * 4, [0, 1, 2, 3], {**info, "entropy": entropy})]
    logs = hook.before_advantages(experiences, maker)
    # The channel's values become its objective; the dropped row 1 holds its group's mean of them.
    assert experiences[0].info["obj/entropy"].tolist() == pytest.approx([1.0, 8 / 3, 4.0, 3.0])
    assert logs["reward/dropped_samples"] == 1.0  # row 1: its reward function's only objective failed
    r = experiences[0].rewards.tolist()
    assert r[1] == pytest.approx((r[0] + r[2] + r[3]) / 3)  # its group's mean


def test_the_weights_log_the_step_count_and_the_timings(tmp_path):
    """The weights log: one line per response in sample order with its prompt and the weights the aggregator drew;
    the step counter goes into the log, the state, and back; the two calls report their time."""
    import json

    log = tmp_path / "w.jsonl"
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.weights_log", str(log))
    hook = _hook(*flags, hidden_size=2)
    hook.aggregator = recorder = _RecordingAggregator()
    a, b = [float(i) for i in range(12)], [float(-i) for i in range(12)]
    for _ in (1, 2):
        experiences, outputs = _shuffled_batch(a, b, torch.zeros(12, 2), SHUFFLED, 3)
        for e in experiences:
            e.prompts = [f"prompt {i}" for i in e.index]
        logs = hook.before_advantages(experiences)
        assert 0 <= logs["reward/seconds_aggregate"] < 60
        assert 0 <= hook.after_advantages(experiences)["reward/seconds_feedback"] < 60
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in rows] == [(s, f"prompt {i}") for s in (1, 2) for i in range(12)]
    assert [r["weights"] for r in rows[:12]] == [{"a": a[i], "b": b[i]} for i in range(12)]  # the recorder's
    assert hook.steps == 2 and hook.state_dict()["steps"] == 2
    fresh = _hook(*flags, hidden_size=2)
    fresh.aggregator = _RecordingAggregator()
    fresh.load_state_dict(hook.state_dict())
    assert fresh.steps == 2
    old = {k: v for k, v in hook.state_dict().items() if k != "steps"}
    fresh.load_state_dict(old)  # a checkpoint from before the counter existed
    assert fresh.steps == 0
    assert recorder.seen["rewards"].shape == (12, 2)


def test_the_advantages_fed_back_follow_the_runs_estimator():
    hook = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--algo.advantage.estimator",
                 "dr_grpo", hidden_size=2)  # fmt: skip
    hook.aggregator = recorder = _RecordingAggregator()
    a = [((7 * i) % 5) / 4 for i in range(12)]
    experiences, outputs = _shuffled_batch(a, [0.0] * 12, torch.zeros(12, 2), SHUFFLED, 3)
    hook.before_advantages(experiences)
    hook.after_advantages(experiences)
    expected = [a[i] - sum(a[i // 4 * 4 : i // 4 * 4 + 4]) / 4 for i in range(12)]  # dr_grpo: R − group mean
    assert recorder.seen["advantages"].tolist() == pytest.approx(expected, abs=1e-6)


def test_resuming_refuses_another_aggregator_or_other_objectives_and_the_standalone_file_is_the_record(tmp_path):
    import json

    saved = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,b", hidden_size=4).state_dict()
    with pytest.raises(ValueError, match="aggregator='maestro', this run's has 'random'"):
        _hook("--reward.aggregator", "random", "--reward.objectives", "a,b").load_state_dict(saved)
    with pytest.raises(ValueError, match=r"objectives=\['a', 'b'\], this run's has \['a', 'c'\]"):
        _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,c", hidden_size=4).load_state_dict(saved)
    hook = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a,b", hidden_size=4)
    path = hook.save_standalone(tmp_path / "not" / "yet")  # made with its parents
    assert json.loads(path.with_suffix(".json").read_text()) == hook.record


def test_a_checkpoint_of_another_models_width_is_refused_naming_both():
    """check_resumable: the same aggregator and objectives, but a policy of another hidden size (another model)."""
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "format,length")
    saved = _hook(*flags, hidden_size=8).state_dict()
    with pytest.raises(ValueError, match=r"hidden_size=8, this run's has 16; resume with the same aggregator flags"):
        _hook(*flags, hidden_size=16).load_state_dict(saved)
    _hook(*flags, hidden_size=8).load_state_dict(saved)  # the same width resumes


def test_an_objective_absent_from_a_whole_group_is_filled_with_zero():
    nan = float("nan")
    values = torch.tensor([[1.0, 5.0], [2.0, nan], [3.0, 7.0], [4.0, nan]])
    absent = torch.tensor([[False, False], [False, True], [True, False], [True, True]])
    filled = fill_absent_entries(values, absent, torch.tensor([0, 0, 1, 1]))
    assert filled.tolist() == [[1.0, 5.0], [2.0, 5.0], [0.0, 7.0], [0.0, 7.0]]


def test_a_hidden_state_aggregator_without_hidden_states_names_the_fix():
    hook = _hook("--reward.aggregator", "maestro", "--reward.objectives", "a", hidden_size=2)
    experiences = [_experience([0.0] * 4, [0, 1, 2, 3], {"obj/a": torch.rand(4)})]
    message = (
        r"^OpenRLHF put no policy-probe values \['hidden'\] into the experiences: apply "
        r"patches/openrlhf-0.11.2-policy-probe.patch \(after -reward-aggregator.patch\), or use the plugin's launcher$"
    )
    with pytest.raises(RuntimeError, match=message):
        hook.before_advantages(experiences, None)


def test_the_weights_log_of_a_maestro_run_holds_each_responses_expected_weights(tmp_path):
    """With maestro's Conductor the weights log holds, per response in sample order, E[w | h] of its own h, worked
    out by hand: x = h / sqrt(mean(h²) + 1e-6), z = W·x, π = (1 − K·ε)·softmax(z) + ε (τ = 1, ε = 0.02),
    E[w] = (1 − β)·w_prior + β·π with β = 0.5 and the uniform prior; the drawn weights are one of w(a)."""
    import json

    log = tmp_path / "w.jsonl"
    flags = ("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.weights_log", str(log))
    hook = _hook(*flags, hidden_size=2)
    head = [[2.0, -1.0], [-1.0, 3.0]]
    with torch.no_grad():
        hook.aggregator.conductor.output_layer.weight.copy_(torch.tensor(head))
    hidden = torch.tensor([[1.0, (i - 5.5) / 3] for i in range(12)])  # every response its own preference
    a, b = [((7 * i) % 5) / 4 for i in range(12)], [float(i % 3) for i in range(12)]
    experiences, _ = _shuffled_batch(a, b, hidden, SHUFFLED, 3)
    for e in experiences:
        e.prompts = [f"prompt {i}" for i in e.index]
    hook.before_advantages(experiences)
    expected = []
    for h in hidden.tolist():
        scale = 1 / math.sqrt((h[0] ** 2 + h[1] ** 2) / 2 + 1e-6)
        z = [sum(w * v * scale for w, v in zip(row, h, strict=True)) for row in head]
        soft = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        pi = [(1 - 2 * 0.02) * p + 0.02 for p in soft]
        expected.append({"a": 0.5 * 0.5 + 0.5 * pi[0], "b": 0.5 * 0.5 + 0.5 * pi[1]})
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [f"prompt {i}" for i in range(12)]
    for row, mean in zip(rows, expected, strict=True):
        assert row["expected"] == pytest.approx(mean, abs=1e-5)
        assert sorted(row["weights"].values()) == pytest.approx([0.25, 0.75])  # w(a) = 0.25 + 0.5·e_a
    assert max(e["a"] for e in expected) - min(e["a"] for e in expected) > 0.3  # the order is visible
