"""bench_learning.py --comparison target: the labelled quarter, what each method sees of the target, the val
selections, the paired t interval. (The full comparison's runs are the benchmark itself: docs/results.md.)"""

from __future__ import annotations

import math

import bench_learning
import learning_report
import learning_task as task
import pytest
import torch


def test_the_labelled_quarter_is_fixed_and_inside_train() -> None:
    labelled = task.labelled_prompts()
    train = set(task.prompts("train"))
    assert len(labelled) == 28 and labelled <= train  # 14 of the 56 topics, both families
    for family in task.FAMILIES:
        assert sum(p.family == family for p in labelled) == 14
    assert {p.topic for p in labelled if p.family == "echo"} == {p.topic for p in labelled if p.family == "story"}
    assert labelled == task.labelled_prompts()  # the same quarter in every run


def _batch(labelled: bool):
    pool = sorted(
        task.labelled_prompts() if labelled else set(task.prompts("train")) - task.labelled_prompts(), key=str
    )
    rows = [pool[0]] * 2 + [pool[1]] * 2
    responses = [pool[0].topic, "a b c", pool[1].topic + " x", "y"]
    rewards = torch.tensor([task.objective_rewards(r, y) for r, y in zip(rows, responses, strict=True)])
    return rows, responses, rewards, torch.tensor([0, 0, 1, 1])


def test_sum_target_sees_the_target_only_on_the_labelled_quarter() -> None:
    agg = bench_learning.make_aggregator("sum-target:2,1,0,3", 0, 8, 1e-2)
    base = bench_learning.make_aggregator("sum:2,1,0", 0, 8, 1e-2)
    rows, responses, rewards, groups = _batch(labelled=False)
    r, _, _ = bench_learning.aggregate_step(agg, "sum-target:2,1,0,3", rows, responses, rewards, groups, None)
    # No target: the sum over the present objectives, rescaled by (2+1+0+3)/(2+1+0) (scalarize's renormalization).
    torch.testing.assert_close(r, base.aggregate(rewards, groups).rewards * 2.0)
    rows, responses, rewards, groups = _batch(labelled=True)
    r, _, _ = bench_learning.aggregate_step(agg, "sum-target:2,1,0,3", rows, responses, rewards, groups, None)
    metric = torch.tensor([task.family_metric(p, y) for p, y in zip(rows, responses, strict=True)])
    torch.testing.assert_close(r, base.aggregate(rewards, groups).rewards + 3.0 * metric)


def test_maestro_target_gets_g_only_on_labelled_groups() -> None:
    agg = bench_learning.make_aggregator("maestro-target:0.01", 0, 8, 1e-2)
    assert agg.config.meta_reward == "alignment" and agg.config.lr == 0.01
    hidden = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    for labelled, fraction in ((False, 0.0), (True, 1.0)):
        rows, responses, rewards, groups = _batch(labelled)
        _, weights, metrics = bench_learning.aggregate_step(
            agg, "maestro-target:0.01", rows, responses, rewards, groups, hidden
        )
        agg.feedback(torch.zeros(4))
        # Both labelled groups have 2 target values each, so each has a G; the unlabelled ones have none.
        assert metrics["maestro/target_fraction"] == fraction
        assert torch.equal(weights[0], weights[1]) and torch.equal(weights[2], weights[3])


def test_family_method_routes_each_row_to_its_familys_weights() -> None:
    method = "family:0,0,1+1,0,0"
    agg = bench_learning.make_aggregator(method, 0, 8, 1e-2)
    echo, story = task.Prompt("echo", "river"), task.Prompt("story", "river")
    rows, responses = [echo, echo, story, story], ["river", "river stone", "a b c d e f", "river"]
    rewards = torch.tensor([task.objective_rewards(r, y) for r, y in zip(rows, responses, strict=True)])
    r, weights, _ = bench_learning.aggregate_step(
        agg, method, rows, responses, rewards, torch.tensor([0, 0, 1, 1]), None
    )
    torch.testing.assert_close(r, torch.stack([rewards[0, 2], rewards[1, 2], rewards[2, 0], rewards[3, 0]]))
    assert weights is None


def _rec(score: float, echo: float = 0.0, story: float = 0.0) -> dict:
    return {"val": {"score": score, "echo/metric": echo, "story/metric": story}}


def test_every_selection_is_made_on_val_at_the_first_seed() -> None:
    runs = {
        ("sum:2,1,0", 0): _rec(0.5, echo=0.8, story=0.2),
        ("sum:0,1,0", 0): _rec(0.4, echo=0.0, story=0.9),
        ("sum:1,1,1", 0): _rec(0.3, echo=0.1, story=0.7),
        ("maestro-target:0.001", 0): _rec(0.2),
        ("maestro-target:0.01", 0): _rec(0.6),
        ("maestro-target:0.1", 0): _rec(0.4),
        ("sum-target:2,1,0,1", 0): _rec(0.3),
        ("sum-target:2,1,0,9", 0): _rec(0.7),
        ("maestro-target:0.1", 1): _rec(0.99),  # another seed takes no part
    }
    chosen = learning_report.target_choices(runs, 0)
    assert chosen["best"] == "sum:2,1,0"
    assert chosen["family"] == "family:2,1,0+0,1,0"  # echo's best grid point, story's best
    assert chosen["maestro-target"] == "maestro-target:0.01"
    assert chosen["sum-target"] == "sum-target:2,1,0,9"


def test_paired_interval_is_the_student_t_interval() -> None:
    # mean 2, sample sd 1, n = 3: half width t_{0.975, 2} · 1/√3 = 4.303/1.7321 = 2.4843
    mean, lo, hi = learning_report.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and lo == pytest.approx(2 - 2.4843, abs=1e-4) and hi == pytest.approx(2 + 2.4843, abs=1e-4)
    assert math.isnan(learning_report.paired_interval([1.0])[1])
