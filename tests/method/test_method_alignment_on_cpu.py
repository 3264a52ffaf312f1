"""meta_reward='alignment': per-group emphasis, counterfactual advantages, G_i(a) = Σ_j Â_ij(a)·u_ij, the
full-information Conductor step, refusals, resume. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import io
import math

import pytest
import torch

from openrlhf_maestro.method import (
    Conductor,
    GDPOAggregator,
    MaestroAggregator,
    MaestroConfig,
    RandomEmphasisAggregator,
    SumAggregator,
    group_norm,
)
from openrlhf_maestro.method.aggregation import alignment_values, check_target, counterfactual_advantages
from openrlhf_maestro.method.meta_update import MetaUpdater

NAN = float("nan")
OBJ = ["a", "b"]


def _aligned(**kwargs) -> MaestroAggregator:
    options = {"meta_reward": "alignment", "target": "judge", **kwargs}
    return MaestroAggregator(OBJ, **options)


# One group of 3 responses (group 7), K = 2, r̃ = r (normalization 'none'), uniform prior, β = 0.5:
#   w(0) = (0.75, 0.25), w(1) = (0.25, 0.75); r = [[1, 0], [0, 1], [0, 0]]
#   R(0) = (0.75, 0.25, 0): mean 1/3, deviations (5, −1, −4)/12, unbiased var (25+1+16)/144/2 = 21/144
#        -> Â(0) = (5, −1, −4)/√21;  likewise R(1) = (0.25, 0.75, 0) -> Â(1) = (−1, 5, −4)/√21
#   target t = (1, 0, NaN): mean over the present two 0.5, u = (0.5, −0.5, 0)
#   G(0) = 0.5·5/√21 + (−0.5)(−1/√21) = 3/√21;  G(1) = 0.5·(−1/√21) + (−0.5)(5/√21) = −3/√21
# Group 3: a single target value (no centred signal) -> no G. Group 5: no target at all -> no G.
REWARDS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.2, 0.9], [0.4, 0.1], [0.3, 0.3], [0.8, 0.5]])
GROUPS = torch.tensor([7, 7, 7, 3, 3, 5, 5])
TARGET = torch.tensor([1.0, 0.0, NAN, 0.6, NAN, NAN, NAN])
W = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
ROOT21 = math.sqrt(21.0)


def test_counterfactual_advantages_by_hand() -> None:
    adv = counterfactual_advantages(REWARDS[:3], GROUPS[:3], W)
    expected = torch.tensor([[5.0, -1.0], [-1.0, 5.0], [-4.0, -4.0]]) / ROOT21
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=1e-6)


def test_alignment_values_by_hand_with_missing_targets() -> None:
    gain, labelled = alignment_values(REWARDS, GROUPS, TARGET, W)
    # torch.unique orders the groups 3, 5, 7.
    assert labelled.tolist() == [False, False, True]
    torch.testing.assert_close(gain[2], torch.tensor([3.0, -3.0]) / ROOT21, atol=1e-6, rtol=1e-6)
    assert gain[:2].abs().sum() == 0


def test_aggregator_uses_the_hand_worked_g_and_shares_the_action_in_the_group() -> None:
    agg = _aligned(normalization="none", hidden_size=4, min_prob=0.0)
    hidden = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    out = agg.aggregate(REWARDS, GROUPS, hidden, target=TARGET)
    for rows in ([0, 1, 2], [3, 4], [5, 6]):  # every response of a group has its group's weights
        assert all(torch.equal(out.weights[rows[0]], out.weights[r]) for r in rows)
    a7 = int(out.weights[0].argmax())  # the emphasis drawn for group 7
    assert out.metrics["maestro/target_fraction"] == pytest.approx(1 / 3)
    assert out.metrics["maestro/target_gain"] == pytest.approx((3.0 if a7 == 0 else -3.0) / ROOT21, abs=1e-6)
    # The trainer's GRPO advantage is the chosen action's counterfactual one.
    torch.testing.assert_close(
        group_norm(out.rewards[:3], GROUPS[:3]), counterfactual_advantages(REWARDS[:3], GROUPS[:3], W)[:, a7]
    )


def test_the_action_reads_h_of_the_groups_first_response_only() -> None:
    gen = torch.Generator().manual_seed(1)
    rewards, groups = torch.rand(8, 2, generator=gen), torch.arange(8) // 4
    hidden = torch.randn(8, 4, generator=gen)
    other = hidden.clone()
    other[[1, 2, 3, 5, 6, 7]] = torch.randn(6, 4, generator=gen)  # every response but the first of each group
    a, b = _aligned(hidden_size=4, seed=5), _aligned(hidden_size=4, seed=5)
    for agg in (a, b):  # a non-uniform π so that h matters
        torch.nn.init.normal_(agg.conductor.output_layer.weight, std=3.0, generator=torch.Generator().manual_seed(2))
    target = torch.rand(8, generator=gen)
    out_a, out_b = (
        a.aggregate(rewards, groups, hidden, target=target),
        b.aggregate(rewards, groups, other, target=target),
    )
    assert torch.equal(out_a.weights, out_b.weights) and torch.equal(out_a.expected_weights, out_b.expected_weights)
    changed = hidden.clone()
    changed[[0, 4]] = torch.randn(2, 4, generator=gen)
    c = _aligned(hidden_size=4, seed=5)
    c.conductor.load_state_dict(a.conductor.state_dict())
    assert not torch.equal(
        c.aggregate(rewards, groups, changed, target=target).expected_weights, out_a.expected_weights
    )


def test_full_information_loss_by_hand() -> None:
    conductor = _aligned(hidden_size=2, min_prob=0.0, entropy_coef=0.1).conductor
    updater = MetaUpdater(conductor, entropy_coef=0.1)
    # π = (0.25, 0.75), (0.75, 0.25), (0.5, 0.5); M = 3 rows, K = 2 actions, so no axis can stand in for the other
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0], [0.0, 0.0]])
    values = torch.tensor([[2.0, -1.0], [0.5, 1.0], [1.0, 3.0]])  # G_i(a): not ±1, so π·G and π/G differ
    loss, entropy = updater.loss(logits, torch.tensor([0, 0, 0]), values)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # rows 1 and 2; row 3: log 2
    mean_entropy = (2 * h + math.log(2.0)) / 3
    # Σ_a π_a G_a per row: 0.25·2 − 0.75·1 = −0.25, 0.75·0.5 + 0.25·1 = 0.625, 0.5·1 + 0.5·3 = 2; loss = −mean − λ H
    assert float(entropy) == pytest.approx(mean_entropy, abs=1e-6)
    assert float(loss) == pytest.approx(-(-0.25 + 0.625 + 2.0) / 3 - 0.1 * mean_entropy, abs=1e-6)


def test_full_information_loss_needs_the_discrete_conductor() -> None:
    conductor = Conductor(2, 2, mode="dirichlet")
    with pytest.raises(ValueError) as err:
        MetaUpdater(conductor).loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    assert str(err.value) == "a value per action (M, K) needs the discrete Conductor (mode='discrete')"


def _two_families(gen: torch.Generator, groups: int = 8, size: int = 4) -> tuple[torch.Tensor, ...]:
    """Family 0 (h ≈ e_0) has target = objective 0, family 1 (h ≈ e_1) target = objective 1; half the groups."""
    n = groups * size
    family = (torch.arange(n) // size) % 2
    hidden = torch.nn.functional.one_hot(family, 4).float() * 3 + 0.1 * torch.randn(n, 4, generator=gen)
    rewards = torch.rand(n, 2, generator=gen)
    target = torch.where(family == 0, rewards[:, 0], rewards[:, 1])
    target = torch.where((torch.arange(n) // size) % 4 < 2, target, torch.full_like(target, NAN))  # half labelled
    return rewards, torch.arange(n) // size, hidden, target, family


def test_update_moves_each_family_to_the_emphasis_with_the_largest_g() -> None:
    agg = _aligned(hidden_size=4, lr=0.05, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        rewards, groups, hidden, target, _ = _two_families(gen)
        out = agg.aggregate(rewards, groups, hidden, target=target)
        agg.feedback(group_norm(out.rewards, groups))
    probs = agg.conductor.probs(torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0]]))
    assert probs[0, 0] > 0.8 and probs[1, 1] > 0.8, probs


def test_a_batch_without_a_labelled_group_leaves_the_conductor_unchanged() -> None:
    agg = _aligned(hidden_size=4, lr=0.1)
    gen = torch.Generator().manual_seed(3)
    rewards, groups, hidden, target, _ = _two_families(gen)
    target[groups % 4 == 0] = NAN  # group 0, 4: no target; groups 1, 5: one value each
    target[(groups % 4 == 1) & (torch.arange(32) % 4 != 0)] = NAN
    before = [p.detach().clone() for p in agg.conductor.parameters()]
    out = agg.aggregate(rewards, groups, hidden, target=target)
    assert out.metrics["maestro/target_fraction"] == 0.0 and math.isnan(out.metrics["maestro/target_gain"])
    metrics = agg.feedback(group_norm(out.rewards, groups))
    assert metrics["maestro/updates"] == 0.0 and metrics["maestro/skipped_updates"] == 0.0  # no update tried
    assert all(torch.equal(p, q) for p, q in zip(before, agg.conductor.parameters(), strict=True))


def test_resume_between_aggregate_and_feedback_matches_uninterrupted() -> None:
    a = _aligned(hidden_size=4, lr=0.05, update_every=2, meta_steps=2)
    gen = torch.Generator().manual_seed(4)
    batches = [_two_families(gen) for _ in range(6)]
    for rewards, groups, hidden, target, _ in batches[:3]:
        a.feedback(group_norm(a.aggregate(rewards, groups, hidden, target=target).rewards, groups))
    rewards, groups, hidden, target, _ = batches[3]
    out = a.aggregate(rewards, groups, hidden, target=target)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _aligned(update_every=2, meta_steps=2, lr=0.05)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert a.feedback(group_norm(out.rewards, groups)) == b.feedback(group_norm(out.rewards, groups))
    for rewards, groups, hidden, target, _ in batches[4:]:
        out_a, out_b = (x.aggregate(rewards, groups, hidden, target=target) for x in (a, b))
        assert torch.equal(out_a.weights, out_b.weights)
        assert a.feedback(group_norm(out_a.rewards, groups)) == b.feedback(group_norm(out_b.rewards, groups))
    assert all(torch.equal(p, q) for p, q in zip(a.conductor.parameters(), b.conductor.parameters(), strict=True))
    assert a.updater.updates == 3  # 6 batches, update_every=2


def test_state_of_one_meta_reward_is_refused_by_the_other() -> None:
    a = _aligned(hidden_size=4)
    with pytest.raises(ValueError, match="meta_reward='alignment'.*meta_reward='advantage'"):
        MaestroAggregator(OBJ).load_state_dict(a.state_dict())


def test_a_state_saved_before_the_option_loads_as_advantage() -> None:
    a = MaestroAggregator(OBJ, hidden_size=4)
    state = a.state_dict()
    del state["config"]["meta_reward"], state["config"]["target"], state["pending_values"], state["pending_n"]
    b = MaestroAggregator(OBJ)
    b.load_state_dict(state)
    assert b.conductor is not None and b.config.meta_reward == "advantage"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"meta_reward": "alignment"}, r"needs a target objective.*--maestro.target NAME"),
        ({"target": "judge"}, r"target='judge' is only read by meta_reward='alignment'.*drop the target"),
        ({"meta_reward": "judge"}, r"meta_reward must be one of \['advantage', 'alignment'\], got 'judge'"),
        ({"meta_reward": "alignment", "target": ""}, r"target must be an objective name"),
        ({"meta_reward": "alignment", "target": "judge", "mode": "dirichlet"}, r"needs mode='discrete'"),
    ],
)
def test_config_refusals(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaestroConfig(**options)


def test_default_is_the_papers_rule() -> None:
    assert MaestroConfig().meta_reward == "advantage" and MaestroConfig().target is None


def test_target_that_is_a_training_objective_is_refused() -> None:
    with pytest.raises(ValueError, match=r"target 'b' is also a training objective"):
        MaestroAggregator(OBJ, meta_reward="alignment", target="b")


def test_bad_target_tensors_are_refused() -> None:
    agg = _aligned(hidden_size=4)
    hidden = torch.randn(7, 4)
    with pytest.raises(ValueError, match=r"needs the target 'judge'"):
        agg.aggregate(REWARDS, GROUPS, hidden)
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(7,\)"):
        agg.aggregate(REWARDS, GROUPS, hidden, target=torch.zeros(6))
    with pytest.raises(ValueError, match=r"infinite at row 2; mark a missing value with NaN"):
        agg.aggregate(REWARDS, GROUPS, hidden, target=torch.tensor([0, 1, math.inf, 0, 0, 0, 0.0]))


@pytest.mark.parametrize(
    "agg",
    [SumAggregator(OBJ), GDPOAggregator(OBJ), RandomEmphasisAggregator(OBJ), MaestroAggregator(OBJ, hidden_size=4)],
    ids=["sum", "gdpo", "random", "maestro-advantage"],
)
def test_aggregators_that_do_not_learn_from_a_target_refuse_one(agg) -> None:
    with pytest.raises(ValueError, match=r"does not read a target"):
        agg.aggregate(REWARDS, GROUPS, torch.randn(7, 4), target=TARGET)


def test_the_target_gain_is_the_mean_g_of_the_chosen_emphases_over_the_labelled_groups() -> None:
    agg = _aligned(hidden_size=4, lr=0.1)
    rewards, groups, hidden, target, _ = _two_families(torch.Generator().manual_seed(5))
    out = agg.aggregate(rewards, groups, hidden, target=target)
    _, actions, _ = agg._pending  # what feedback() will learn from: the labelled groups' rows only
    values = agg._pending_values
    assert values.shape == (4, 2) and actions.shape == (4,)  # 4 of the 8 groups are labelled, K = 2
    chosen = [float(values[i, int(actions[i])]) for i in range(4)]
    assert len({round(c, 6) for c in chosen}) > 1  # distinct gains, so a wrong row or column would show
    assert out.metrics["maestro/target_gain"] == pytest.approx(sum(chosen) / 4, abs=1e-6)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            None,
            "meta_reward='alignment' needs the target 'judge' as aggregate(..., target=(N,) tensor), NaN where it "
            "is missing; got none",
        ),
        (
            torch.zeros(3, dtype=torch.long),
            "target 'judge' must be a float tensor of shape (N,) = (4,), NaN where missing; got ((3,), torch.int64)",
        ),
        ([0.0] * 4, "target 'judge' must be a float tensor of shape (N,) = (4,), NaN where missing; got list"),
        (
            torch.tensor([0.0, float("inf"), 0.0, 0.0]),
            "target 'judge' is infinite at row 1; mark a missing value with NaN",
        ),
    ],
)
def test_a_bad_target_is_refused_whole(target, message) -> None:
    agg = _aligned(hidden_size=2)
    with pytest.raises(ValueError) as err:
        agg.aggregate(torch.rand(4, 2), torch.tensor([0, 0, 1, 1]), torch.rand(4, 2), target=target)
    assert str(err.value) == message


def test_a_target_given_to_another_aggregator_or_named_as_an_objective_is_refused_whole() -> None:
    with pytest.raises(ValueError) as err:
        SumAggregator(OBJ).aggregate(torch.rand(4, 2), torch.tensor([0, 0, 1, 1]), target=torch.zeros(4))
    assert str(err.value) == (
        "the 'sum' aggregator does not read a target objective; a target is only learnt from by maestro with "
        "meta_reward='alignment' (--maestro.meta_reward alignment --maestro.target NAME). Pass target=None, or "
        "train on the objective as one of the rewards"
    )
    with pytest.raises(ValueError) as err:
        check_target("a", ["a", "b"])
    assert str(err.value) == (
        "target 'a' is also a training objective ['a', 'b']: the alignment meta-reward keeps the target out of R; "
        "drop it from the objectives or name another target"
    )
