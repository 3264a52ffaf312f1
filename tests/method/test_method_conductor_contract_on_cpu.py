"""The Conductor and its meta-update, against values worked out by hand: per-row log-probs, an MLP head written
out, huge but finite hidden states, the sampling-time graph that spares the meta-update a forward pass, the
defaults shared with MaestroConfig, the construction errors and the skip warning, whole."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from openrlhf_maestro.method import Conductor, MaestroAggregator, MaestroConfig, MetaUpdater, group_norm


def _whole(message: str) -> str:
    return f"^{re.escape(message)}$"


def _set_head(c: Conductor, weight: list[list[float]], bias: list[float] | None = None) -> None:
    with torch.no_grad():
        c.output_layer.weight.copy_(torch.tensor(weight))
        c.output_layer.bias.copy_(torch.tensor(bias or [0.0] * len(weight)))


HEAD = [[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]]  # K = 3 logits from H = 2


def _hand_probs(h: list[float], tau: float = 1.0, eps: float = 0.0, head=HEAD) -> list[float]:
    """π = (1 − K·ε)·softmax(W·x / τ) + ε with x = h / sqrt(mean(h²) + 1e-6)."""
    scale = 1 / math.sqrt(sum(v * v for v in h) / len(h) + 1e-6)
    z = [sum(w * v * scale for w, v in zip(row, h, strict=True)) / tau for row in head]
    e = [math.exp(v - max(z)) for v in z]
    return [(1 - len(head) * eps) * v / sum(e) + eps for v in e]


def test_each_rows_log_prob_and_entropy_are_its_own_policys() -> None:
    """Distinct rows: the reported log π(a_n | h_n) and H(π(·|h_n)) are those of row n, by hand."""
    c = Conductor(2, 3, tau=0.5, min_prob=0.05, seed=4)
    _set_head(c, HEAD)
    hidden = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5], [0.3, -2.0]]
    s = c.sample(torch.tensor(hidden))
    for n, h in enumerate(hidden):
        pi = _hand_probs(h, tau=0.5, eps=0.05)
        a = int(s.actions[n])
        assert s.log_prob[n].item() == pytest.approx(math.log(pi[a]), abs=1e-5)
        assert s.entropy[n].item() == pytest.approx(-sum(p * math.log(p) for p in pi), abs=1e-5)
        assert s.emphasis[n].tolist() == [float(k == a) for k in range(3)]
    assert s.emphasis.dtype == torch.float32


def test_an_mlp_head_is_the_layers_written_out_with_relu() -> None:
    """hidden_sizes (3, 2): z = W3·relu(W2·relu(W1·x + b1) + b2) + b3, every layer kept and the ReLUs applied."""
    c = Conductor(2, 2, hidden_sizes=(3, 2), input_norm="none", seed=0)
    shapes = [tuple(p.shape) for p in c.parameters()]
    assert shapes == [(3, 2), (3,), (2, 3), (2,), (2, 2), (2,)]
    w1, b1 = [[1.0, -1.0], [-2.0, 0.5], [0.5, 0.5]], [0.0, 0.1, -3.0]
    w2, b2 = [[1.0, 1.0, 1.0], [-1.0, 2.0, 0.0]], [-0.5, 0.0]
    w3, b3 = [[1.0, -1.0], [0.5, 2.0]], [0.2, -0.2]
    with torch.no_grad():
        for param, value in zip(c.parameters(), (w1, b1, w2, b2, w3, b3), strict=True):
            param.copy_(torch.tensor(value))

    def layer(w, b, x, relu):
        out = [sum(wi * xi for wi, xi in zip(row, x, strict=True)) + bi for row, bi in zip(w, b, strict=True)]
        return [max(v, 0.0) for v in out] if relu else out

    for h in ([1.0, 2.0], [-3.0, 1.0]):
        expected = layer(w3, b3, layer(w2, b2, layer(w1, b1, h, True), True), False)
        assert c(c.features(torch.tensor([h]))).squeeze(0).tolist() == pytest.approx(expected, rel=1e-6)


def test_huge_but_finite_hidden_states_keep_the_scale_free_input_and_a_non_finite_row_is_named() -> None:
    """x = h / rms(h) for h of size 1e20 too (Σh² overflows float32, not the RMS): π(1e20·h) = π(h)."""
    c = Conductor(2, 3, seed=0)
    _set_head(c, HEAD)
    h = torch.tensor([[1.0, -0.5], [0.2, 0.9]])
    probs = c.probs(h * 1e20)
    for n in range(2):
        assert probs[n].tolist() == pytest.approx(_hand_probs(h[n].tolist(), eps=0.02), abs=1e-5)
    bad = torch.ones(6, 2)
    bad[2] = 1e20  # huge but finite: not the culprit
    bad[4, 1] = float("inf")
    with pytest.raises(ValueError, match=_whole("hidden state is not finite at row 4")):
        c.features(bad)


def test_sampling_keeps_the_heads_graph_only_when_asked() -> None:
    c = Conductor(2, 3, seed=0)
    _set_head(c, HEAD)
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    plain = c.sample(h)
    assert not plain.logits.requires_grad
    kept = c.sample(h, keep_graph=True)
    assert kept.logits.requires_grad
    assert torch.equal(kept.logits.detach(), c(c.features(h)).detach())
    assert not c.sample_from_features(c.features(h)).logits.requires_grad


def test_one_aggregate_and_feedback_run_the_head_once() -> None:
    """The meta-update's first step reuses the head output drawn at sampling time (docs/method.md): one (N, H)
    forward pass per rollout batch with meta_steps = 1, and one more per further step."""
    calls: list[int] = []
    for meta_steps, forwards in ((1, 1), (3, 3)):
        calls.clear()
        agg = MaestroAggregator(["a", "b", "c"], hidden_size=4, meta_steps=meta_steps)
        agg.conductor.register_forward_hook(lambda module, args, out: calls.append(1))
        r = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        g = torch.arange(8) // 4
        out = agg.aggregate(r, g, torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
        fb = agg.feedback(group_norm(out.rewards, g))
        assert fb["maestro/updates"] == 1.0 and len(calls) == forwards


def test_the_constructors_defaults_are_maestro_configs() -> None:
    """Conductor(H, K) and MetaUpdater(conductor) without options behave as MaestroConfig()'s documented defaults:
    the same draws, the same probabilities and, after two feedback rounds, the same parameters."""
    config = MaestroConfig(lr=0.05)  # a large lr so that a different default lr shows in the parameters
    h = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    plain, configured = Conductor(4, 3), Conductor.from_config(MaestroConfig(), 4, 3)
    for c in (plain, configured):
        _set_head(c, [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.5, -1.0], [-1.0, 0.5, 0.0, 1.0]])
    assert torch.equal(plain.sample(h).actions, configured.sample(h).actions)
    assert torch.equal(plain.probs(h), configured.probs(h))
    updaters = [
        MetaUpdater(plain, lr=0.05),
        MetaUpdater(
            configured,
            lr=config.lr,
            update_every=config.update_every,
            meta_steps=config.meta_steps,
            entropy_coef=config.entropy_coef,
            grad_clip=config.grad_clip,
        ),
    ]
    adv = torch.linspace(-30.0, 30.0, 64)  # large: a clip at another norm would show
    for _ in range(2):
        for c, updater in zip((plain, configured), updaters, strict=True):
            s = c.sample(h, keep_graph=True)
            updater.add(s.features, s.actions, adv, s.logits)
            updater.step()
    for p, q in zip(plain.parameters(), configured.parameters(), strict=True):
        assert torch.equal(p, q)
    assert updaters[0].updates == updaters[1].updates == 2
    # And the remaining defaults, read back: MaestroConfig's lr, entropy_coef and grad_clip.
    fresh = MetaUpdater(Conductor(4, 3))
    assert fresh.entropy_coef == MaestroConfig().entropy_coef and fresh.grad_clip == MaestroConfig().grad_clip
    assert fresh.optimizer.defaults["lr"] == MaestroConfig().lr


def test_the_prior_shapes_the_weights_and_is_configuration_not_state() -> None:
    """w_prior (3, 1) -> (0.75, 0.25); with β = 0.5 and the uniform start E[w] = 0.5·w_prior + 0.5·(1/2, 1/2)."""
    c = Conductor(2, 2, prior=(3.0, 1.0), beta=0.5)
    assert c.expected_weights(torch.ones(1, 2)).squeeze(0).tolist() == pytest.approx([0.625, 0.375])
    assert set(c.state_dict()) == {"head.0.weight", "head.0.bias"}  # a resumed run takes the prior from its flags


CONSTRUCTION_ERRORS = [
    ({"hidden_size": 0}, "hidden_size must be >= 1, got 0"),
    ({"mode": "gaussian"}, "mode must be one of ['discrete', 'dirichlet'], got 'gaussian'"),
    ({"input_norm": "layer"}, "input_norm must be one of ['rms', 'none'], got 'layer'"),
    ({"tau": 0.0}, "tau must be > 0, got 0.0"),
    (
        {"min_prob": 0.25},  # K·ε = 1 exactly: the floor would take all the mass
        "min_prob=0.25 is out of range for K=4 objectives: the floor needs 0 <= K*min_prob < 1, "
        "i.e. 0 <= min_prob < 0.25",
    ),
    ({"beta": 1.5}, "beta must be in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("options,message", CONSTRUCTION_ERRORS, ids=[m.split(" ")[0] for _, m in CONSTRUCTION_ERRORS])
def test_construction_errors_name_the_value_and_the_range(options: dict, message: str) -> None:
    args = {"hidden_size": 8, "num_objectives": 4, **options}
    with pytest.raises(ValueError, match=_whole(message)):
        Conductor(**args)


def test_the_smallest_valid_sizes_and_probs_in_dirichlet_mode() -> None:
    c = Conductor(1, 1)  # H = 1 and K = 1 are valid (one objective: its weight is 1)
    assert c.probs(torch.tensor([[2.0]])).tolist() == [[1.0]]
    message = "probs() is defined for mode='discrete'; use expected_emphasis() in dirichlet mode"
    with pytest.raises(ValueError, match=_whole(message)):
        Conductor(2, 3, mode="dirichlet").probs(torch.ones(1, 2))


def _skip_once(agg: MaestroAggregator) -> dict:
    r = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    agg.aggregate(r, torch.tensor([0, 0, 1, 1]), torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
    return agg.feedback(torch.tensor([float("nan"), 0.0, 0.0, 0.0]))


def test_a_skipped_update_warns_once_whole_leaves_no_gradient_and_the_warning_survives_a_resume() -> None:
    agg = MaestroAggregator(["a", "b"], hidden_size=4)
    message = (
        "MAESTRO Conductor update skipped: non-finite meta-loss nan (non-finite advantages?). Further skips are only "
        "counted in maestro/skipped_updates."
    )
    with pytest.warns(RuntimeWarning, match=_whole(message)):
        assert _skip_once(agg)["maestro/skipped_updates"] == 1.0
    assert all(p.grad is None for p in agg.conductor.parameters())
    resumed = MaestroAggregator(["a", "b"], hidden_size=4)
    resumed.load_state_dict(agg.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it warned before the checkpoint: not again after the resume
        assert _skip_once(resumed)["maestro/skipped_updates"] == 2.0
    never_warned = MaestroAggregator(["a", "b"], hidden_size=4)
    never_warned.load_state_dict(MaestroAggregator(["a", "b"], hidden_size=4).state_dict())
    with pytest.warns(RuntimeWarning, match="update skipped"):
        _skip_once(never_warned)


def test_an_overflowing_gradient_is_skipped_after_backward_and_leaves_neither_a_step_nor_a_gradient() -> None:
    """Â = ±3e37: the meta-loss is finite (the terms cancel, 0.01·log 2 of entropy bonus is what is left) but the
    gradient norm overflows: the update is skipped, φ is unchanged, and the overflowed gradient is dropped."""
    agg = MaestroAggregator(["a", "b"], hidden_size=4)
    r = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    agg.aggregate(r, torch.tensor([0, 0, 1, 1]), torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
    before = [p.detach().clone() for p in agg.conductor.parameters()]
    with pytest.warns(
        RuntimeWarning, match=r"^MAESTRO Conductor update skipped: non-finite Conductor gradient norm inf "
    ):
        fb = agg.feedback(torch.tensor([3e37, -3e37, 3e37, -3e37]))
    assert fb["maestro/meta_loss"] == pytest.approx(-0.01 * math.log(2), rel=1e-4)  # uniform π over K = 2
    assert fb["maestro/grad_norm"] == math.inf
    assert fb["maestro/updates"] == 0.0 and fb["maestro/skipped_updates"] == 1.0
    assert all(torch.equal(p, q) for p, q in zip(before, agg.conductor.parameters(), strict=True))
    assert all(p.grad is None for p in agg.conductor.parameters())
