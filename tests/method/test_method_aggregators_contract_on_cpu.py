"""The aggregators' public contract against values worked out by hand: what each returns (R, weights, expected
weights, metrics), the options it passes on (ε, prior, mode, widths, seed), its input checks and error messages
whole, its state checks, and the registry's plugin paths (entry points, files, a colon in a path)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from openrlhf_maestro.method import (
    Conductor,
    GDPOAggregator,
    MaestroAggregator,
    RandomEmphasisAggregator,
    RewardAggregator,
    SumAggregator,
    available_aggregators,
    get_aggregator,
    load_module,
    register_aggregator,
)
from openrlhf_maestro.method import aggregation as aggregation_module
from openrlhf_maestro.method.normalize import scalarize

# The metric key of the mean drawn weight per objective (one place, for a rename of the key).
WEIGHT_KEY = "aggregator/weight/{}"

S2, S8 = math.sqrt(2.0), math.sqrt(8.0)
# Two prompts of two responses, objectives a and b.
REWARDS = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
GROUPS = torch.tensor([0, 0, 1, 1])
# Their group z-scores with ε = 0.5, by hand: a is 1, 3 | 2, 0 (σ = √2 in both groups); b is 4, 0 (σ = √8) | 2, 2.
Z_A = [-1 / (S2 + 0.5), 1 / (S2 + 0.5), 1 / (S2 + 0.5), -1 / (S2 + 0.5)]
Z_B = [2 / (S8 + 0.5), -2 / (S8 + 0.5), 0.0, 0.0]


def _whole(message: str) -> str:
    return f"^{re.escape(message)}$"


# ---- what each aggregator returns -------------------------------------------------------------------------------
def test_sum_with_weights_summing_to_zero_is_their_difference_and_reports_its_weights() -> None:
    out = SumAggregator(["a", "b"], weights=[1.0, -1.0]).aggregate(REWARDS, GROUPS)
    assert out.rewards.tolist() == [-3.0, 3.0, 0.0, -2.0]  # a − b
    assert out.weights.tolist() == [[1.0, -1.0]] * 4
    assert out.metrics == {"reward/a": 1.5, "reward/b": 2.0}
    assert out.expected_weights is None


def test_gdpo_uses_its_eps_and_reports_its_weights_and_the_reward_means() -> None:
    out = GDPOAggregator(["a", "b"], weights=[2.0, -1.0], eps=0.5).aggregate(REWARDS, GROUPS)
    assert out.rewards.tolist() == pytest.approx([2 * za - zb for za, zb in zip(Z_A, Z_B, strict=True)], abs=1e-6)
    assert out.weights.tolist() == [[2.0, -1.0]] * 4
    assert out.metrics == {"reward/a": 1.5, "reward/b": 2.0}


def test_scalarize_gives_zero_when_the_present_weights_sum_to_zero() -> None:
    """Weights (1, −1, 1) with the third objective missing: the present weights sum to 0, nothing to renormalize."""
    assert scalarize(torch.tensor([1.0, -1.0, 1.0]), torch.tensor([[3.0, 1.0, float("nan")]])).tolist() == [0.0]


@pytest.mark.parametrize("cls", [RandomEmphasisAggregator, MaestroAggregator])
def test_beta_zero_is_the_prior_times_the_z_scores_with_the_given_eps(cls) -> None:
    """β = 0: w = w_prior = (0.75, 0.25) whatever the draw; R = 0.75·z_a + 0.25·z_b with ε = 0.5."""
    agg = cls.build(["a", "b"], [3.0, 1.0], {"beta": 0.0, "norm_eps": 0.5}, hidden_size=2)
    out = agg.aggregate(REWARDS, GROUPS, torch.randn(4, 2))
    expected = [0.75 * za + 0.25 * zb for za, zb in zip(Z_A, Z_B, strict=True)]
    assert out.rewards.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.weights.tolist() == [pytest.approx([0.75, 0.25])] * 4


def test_random_reports_the_mean_of_the_weights_it_drew_and_defaults_to_seed_zero() -> None:
    """w(a) ∈ {(0.75, 0.25), (0.25, 0.75)} (β = 0.5, uniform prior): mean weight of a = 0.25 + 0.5·share(a)."""
    rewards = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    groups = torch.arange(40) // 4
    out = RandomEmphasisAggregator(["a", "b"]).aggregate(rewards, groups)
    share_a = sum(row[0] == 0.75 for row in out.weights.tolist()) / 40
    assert 0 < share_a < 1
    assert out.metrics[WEIGHT_KEY.format("a")] == pytest.approx(0.25 + 0.5 * share_a)
    assert out.metrics[WEIGHT_KEY.format("b")] == pytest.approx(0.75 - 0.5 * share_a)
    seeded = RandomEmphasisAggregator(["a", "b"], seed=0).aggregate(rewards, groups)
    assert torch.equal(out.weights, seeded.weights)  # the default seed is maestro's: 0


HEAD = [[2.0, -1.0], [-1.0, 3.0]]
HIDDEN = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]]


def _x(h: list[float]) -> list[float]:
    scale = 1 / math.sqrt(sum(v * v for v in h) / len(h) + 1e-6)
    return [v * scale for v in h]


def _maestro(**options) -> MaestroAggregator:
    agg = MaestroAggregator.build(["a", "b"], [3.0, 1.0], options, hidden_size=2)
    with torch.no_grad():
        agg.conductor.output_layer.weight.copy_(torch.tensor(HEAD))
    return agg


def test_maestro_returns_the_drawn_weights_and_each_responses_expected_weights_under_its_prior() -> None:
    """Discrete: π = 0.96·softmax(W·x) + 0.02, E[w] = 0.5·(0.75, 0.25) + 0.5·π; a draw is 0.5·w_prior + 0.5·e_a."""
    out = _maestro().aggregate(REWARDS, GROUPS, torch.tensor(HIDDEN))
    for n, h in enumerate(HIDDEN):
        z = [sum(w * v for w, v in zip(row, _x(h), strict=True)) for row in HEAD]
        soft = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        pi = [0.96 * p + 0.02 for p in soft]
        assert out.expected_weights[n].tolist() == pytest.approx([0.375 + 0.5 * pi[0], 0.125 + 0.5 * pi[1]])
        assert out.weights[n].tolist() in ([0.875, 0.125], [0.375, 0.625])  # exact in binary floating point


def test_maestro_in_dirichlet_mode_uses_its_concentration_eps() -> None:
    """α = softplus(W·x + b) + ε_α with ε_α = 0.5 and the start b = softplus⁻¹(1 − ε_α) = log(e^0.5 − 1);
    E[s] = α / Σα and E[w] = 0.5·(0.75, 0.25) + 0.5·E[s]."""
    out = _maestro(mode="dirichlet", concentration_eps=0.5).aggregate(REWARDS, GROUPS, torch.tensor(HIDDEN))
    b = math.log(math.exp(0.5) - 1)
    for n, h in enumerate(HIDDEN):
        alpha = [math.log1p(math.exp(sum(w * v for w, v in zip(row, _x(h), strict=True)) + b)) + 0.5 for row in HEAD]
        mean = [v / sum(alpha) for v in alpha]
        assert out.expected_weights[n].tolist() == pytest.approx([0.375 + 0.5 * mean[0], 0.125 + 0.5 * mean[1]])
    assert out.weights.shape == (4, 2) and len({tuple(row) for row in out.weights.tolist()}) == 4  # continuous


def test_maestro_builds_the_configured_head_and_draws_from_the_configured_seed() -> None:
    agg = MaestroAggregator(["a", "b"], hidden_sizes=(5,), seed=7, hidden_size=3)
    shapes = {k: tuple(v.shape) for k, v in agg.state_dict()["conductor"].items()}
    assert shapes == {"head.0.weight": (5, 3), "head.0.bias": (5,), "head.2.weight": (2, 5), "head.2.bias": (2,)}
    hidden = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    rewards, groups = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)), torch.arange(64) // 4
    drawn = agg.aggregate(rewards, groups, hidden).weights.argmax(-1)
    assert torch.equal(drawn, Conductor(3, 2, hidden_sizes=(5,), seed=7).sample(hidden).actions)
    assert not torch.equal(drawn, Conductor(3, 2, hidden_sizes=(5,), seed=8).sample(hidden).actions)


# ---- input checks and messages, whole ---------------------------------------------------------------------------
STATIC = [SumAggregator, GDPOAggregator, RandomEmphasisAggregator]


@pytest.mark.parametrize("cls", STATIC)
def test_a_hidden_state_is_checked_even_by_an_aggregator_that_does_not_read_it(cls) -> None:
    agg = cls(["a", "b"])
    for hidden, got in ((torch.zeros(3, 2), "(3, 2)"), (torch.zeros(4, 2, 1), "(4, 2, 1)"), ([[0.0]] * 4, "list")):
        with pytest.raises(
            ValueError, match=_whole(f"hidden must have shape (N, H) = (4, H) to match rewards, got {got}")
        ):
            agg.aggregate(REWARDS, GROUPS, hidden)


def test_bad_rewards_and_group_ids_are_named_whole() -> None:
    agg = SumAggregator(["a", "b"])
    cases = [
        (REWARDS.tolist(), GROUPS, "rewards must have shape (N, K) = (N, 2) for objectives ['a', 'b'], got list"),
        (REWARDS.long(), GROUPS, "rewards must be a float tensor, got torch.int64"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "rewards is empty (N=0)"),
        (REWARDS, GROUPS.tolist(), "group_ids must be an integer tensor, got list"),
    ]
    for rewards, groups, message in cases:
        with pytest.raises(ValueError, match=_whole(message)):
            agg.aggregate(rewards, groups)
    # One response is a batch for `sum` (it reads no group statistics); float64 rewards give float32 R.
    assert agg.aggregate(torch.tensor([[1.0, 2.0]]), torch.tensor([0])).rewards.tolist() == [3.0]
    assert agg.aggregate(REWARDS.double(), GROUPS).rewards.dtype == torch.float32


def test_bad_objective_names_are_refused_whole() -> None:
    with pytest.raises(ValueError, match=_whole("objectives must name at least one objective, got []")):
        SumAggregator([])
    for names in ([""], ["a", 3]):
        with pytest.raises(ValueError, match=_whole(f"objectives must be distinct non-empty strings, got {names}")):
            SumAggregator(names)


def test_unknown_options_are_named_with_the_options_each_aggregator_reads() -> None:
    with pytest.raises(ValueError, match=_whole("the 'sum' aggregator has no options ['beta']; it reads none")):
        SumAggregator.build(["a"], None, {"beta": 0.5})
    message = "the 'random' aggregator has no options ['tau']; it reads ['beta', 'normalization', 'norm_eps', 'seed']"
    with pytest.raises(ValueError, match=_whole(message)):
        RandomEmphasisAggregator.build(["a"], None, {"tau": 1.0})
    prior_message = r"^the 'maestro' aggregator has no options \['prior'\] \(the prior is the weights\); it reads "
    with pytest.raises(ValueError, match=prior_message):
        MaestroAggregator.build(["a"], None, {"prior": [1.0]})
    tau_message = r"^the 'maestro' aggregator has no options \['temperature'\]; it reads \['tau', 'min_prob', "
    with pytest.raises(ValueError, match=tau_message):
        MaestroAggregator.build(["a"], None, {"temperature": 1.0})
    message = (
        "min_prob=0.25 is out of range for K=4 objectives: the floor needs 0 <= K*min_prob < 1, i.e. "
        "0 <= min_prob < 0.25"
    )
    with pytest.raises(ValueError, match=_whole(message)):
        MaestroAggregator(["a", "b", "c", "d"], min_prob=0.25)  # K·ε = 1 exactly


def test_feedback_needs_the_last_aggregates_batch_as_a_tensor() -> None:
    agg = MaestroAggregator(["a", "b"], hidden_size=2)  # built: a Conductor, but no aggregate() yet
    message = "feedback() needs a preceding aggregate() call whose advantages it receives"
    with pytest.raises(RuntimeError, match=_whole(message)):
        agg.feedback(torch.zeros(4))
    agg.aggregate(REWARDS, GROUPS, torch.randn(4, 2))
    with pytest.raises(
        ValueError, match=_whole("advantages must have shape (N,) = (4,) like the last aggregate() call, got list")
    ):
        agg.feedback([0.0] * 4)
    agg.feedback(torch.zeros(4))
    with pytest.raises(RuntimeError, match=_whole(message)):  # each aggregate() is fed back once
        agg.feedback(torch.zeros(4))


def test_a_state_of_another_aggregator_or_other_objectives_is_refused_whole() -> None:
    random_state = RandomEmphasisAggregator(["a", "b"]).state_dict()
    with pytest.raises(ValueError, match=_whole("state was saved by the 'random' aggregator, not 'maestro'")):
        MaestroAggregator(["a", "b"]).load_state_dict(random_state)
    with pytest.raises(ValueError, match=_whole("state was saved by the None aggregator, not 'maestro'")):
        MaestroAggregator(["a", "b"]).load_state_dict({})
    with pytest.raises(ValueError, match=_whole("state is for objectives ['a', 'b'], this aggregator has ['x', 'y']")):
        RandomEmphasisAggregator(["x", "y"]).load_state_dict(random_state)
    message = (
        "the 'sum' aggregator is stateless but got state with keys ['aggregator', 'rng'] "
        "(saved by the 'random' aggregator?)"
    )
    with pytest.raises(ValueError, match=_whole(message)):
        SumAggregator(["a"]).load_state_dict({"aggregator": "random", "rng": 1})
    message = "the 'gdpo' aggregator is stateless but got state with keys ['x'] (saved by the 'unknown' aggregator?)"
    with pytest.raises(ValueError, match=_whole(message)):
        GDPOAggregator(["a"]).load_state_dict({"x": 1})
    SumAggregator(["a"]).load_state_dict({})  # an empty state is a stateless aggregator's own


# ---- the registry's plugin paths ----------------------------------------------------------------------------------
PLUGIN = """
from openrlhf_maestro.method import RewardAggregator, SumAggregator


class Mine(SumAggregator):
    name = ""


class NotAnAggregator:
    pass
"""


def test_an_entry_point_aggregator_is_found_named_and_listed(tmp_path, monkeypatch) -> None:
    """A package that declares `openrlhf_maestro.aggregators` entry points (here a dist-info folder on sys.path,
    as pip installs one) is usable by name; the class takes the entry point's name; a non-aggregator is refused."""
    (tmp_path / "maestro_entry_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "maestro_entry_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: maestro-entry-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[openrlhf_maestro.aggregators]\n"
        "mine_ep = maestro_entry_plugin:Mine\n"
        "not_ep = maestro_entry_plugin:NotAnAggregator\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert {"mine_ep", "not_ep"} <= set(available_aggregators())
        cls = get_aggregator("mine_ep")
        assert cls.__name__ == "Mine" and cls.name == "mine_ep"
        assert cls(["a", "b"]).aggregate(REWARDS, GROUPS).rewards.tolist() == [5.0, 3.0, 4.0, 2.0]
        with pytest.raises(
            ValueError,
            match=r"^reward aggregator 'not_ep' resolved to <class 'maestro_entry_plugin\.NotAnAggregator'>, which is "
            r"not a RewardAggregator subclass$",
        ):
            get_aggregator("not_ep")
    finally:
        aggregation_module._AGGREGATORS.pop("mine_ep", None)


def test_file_plugins_load_once_per_file_even_with_a_colon_in_the_path(tmp_path) -> None:
    """Two files whose paths have the same length are two modules; a path may hold ':' (split at the last one)."""
    first, second = tmp_path / "p1.py", tmp_path / "p2.py"
    first.write_text("VALUE = 1\n")
    second.write_text("VALUE = 2\n")
    assert (load_module(str(first)).VALUE, load_module(str(second)).VALUE) == (1, 2)
    assert load_module(str(first)) is load_module(str(first))
    folder = tmp_path / "a:b"
    folder.mkdir()
    (folder / "plugin.py").write_text(PLUGIN)
    cls = get_aggregator(f"{folder}/plugin.py:Mine")
    try:
        assert cls.__name__ == "Mine" and cls.name == f"{folder}/plugin.py:Mine"
    finally:
        aggregation_module._AGGREGATORS.pop(cls.name, None)
    missing = tmp_path / "missing.py"
    with pytest.raises(
        ValueError, match=_whole(f"cannot load the file {str(missing)!r}: it does not exist or is not a Python file")
    ):
        load_module(str(missing))


def test_registering_names_the_class() -> None:
    try:

        @register_aggregator("test_named")
        class Named(RewardAggregator):
            pass

        assert Named.name == "test_named" and get_aggregator("test_named") is Named
    finally:
        aggregation_module._AGGREGATORS.pop("test_named", None)


def test_an_unknown_name_lists_the_names_and_the_two_plugin_spellings() -> None:
    message = (
        r"^unknown reward aggregator 'nope'; valid names: \[.*'gdpo'.*'maestro'.*'random'.*'sum'.*\], or a "
        r"RewardAggregator subclass as package\.module:Class or path/to/file\.py:Class$"
    )
    with pytest.raises(ValueError, match=message):
        get_aggregator("nope")


def test_a_subclass_keeps_the_option_names_it_declares_over_an_inherited_options_class() -> None:
    class FewerOptions(MaestroAggregator):  # inherits MaestroConfig, offers only two of its fields
        option_names = ("lr", "tau")

    class Derived(FewerOptions):  # declares nothing: inherits the parent's choice
        pass

    assert FewerOptions.option_names == ("lr", "tau") and Derived.option_names == ("lr", "tau")
    assert "seed" in MaestroAggregator.option_names and "prior" not in MaestroAggregator.option_names
