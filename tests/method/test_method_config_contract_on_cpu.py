"""MaestroConfig's contract: each bad value is refused with its whole message (the option, its range, the value),
each boundary value of a range is accepted, and to_dict() is the plain-python view of every field."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from openrlhf_maestro.method import MaestroConfig

INF, NAN = float("inf"), float("nan")

# (field, value, the whole message). The messages are written out here, not read from the code.
REFUSED = [
    ("tau", 0.0, "tau must be a finite number > 0, got 0.0"),
    ("tau", INF, "tau must be a finite number > 0, got inf"),
    ("tau", True, "tau must be a finite number > 0, got True"),  # a bool is not a number here
    ("min_prob", 1.0, "min_prob must be in [0, 1) (and < 1/K for K objectives), got 1.0"),
    ("min_prob", -0.01, "min_prob must be in [0, 1) (and < 1/K for K objectives), got -0.01"),
    ("min_prob", NAN, "min_prob must be in [0, 1) (and < 1/K for K objectives), got nan"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("lr", INF, "lr must be a finite number > 0, got inf"),
    ("update_every", 0, "update_every must be an integer >= 1, got 0"),
    ("update_every", 2.0, "update_every must be an integer >= 1, got 2.0"),
    ("update_every", True, "update_every must be an integer >= 1, got True"),
    ("meta_steps", 0, "meta_steps must be an integer >= 1, got 0"),
    ("meta_steps", 1.5, "meta_steps must be an integer >= 1, got 1.5"),
    ("entropy_coef", -0.1, "entropy_coef must be a finite number >= 0, got -0.1"),
    ("entropy_coef", NAN, "entropy_coef must be a finite number >= 0, got nan"),
    ("grad_clip", 0.0, "grad_clip must be a finite number > 0 or None (no clipping), got 0.0"),
    ("grad_clip", INF, "grad_clip must be a finite number > 0 or None (no clipping), got inf"),
    ("beta", -0.1, "beta must be in [0, 1], got -0.1"),
    ("beta", 1.5, "beta must be in [0, 1], got 1.5"),
    ("beta", NAN, "beta must be in [0, 1], got nan"),
    ("prior", (), "need at least one objective, got K=0"),  # the prior gives K; validate_prior refuses K = 0
    ("prior", (1.0, -2.0), "prior[1] must be a finite number >= 0, got -2.0"),
    ("prior", (INF, 1.0), "prior[0] must be a finite number >= 0, got inf"),
    ("prior", (0, 0), "prior must have a positive sum, got [0.0, 0.0]"),
    ("normalization", "zscore", "normalization must be one of ['group', 'batch', 'none'], got 'zscore'"),
    ("norm_eps", 0.0, "norm_eps must be > 0, got 0.0"),
    ("norm_eps", INF, "norm_eps must be > 0, got inf"),
    ("mode", "gaussian", "mode must be one of ['discrete', 'dirichlet'], got 'gaussian'"),
    ("hidden_sizes", (8, 0), "hidden_sizes entries must be integers >= 1, got [8, 0]"),
    ("hidden_sizes", [4.0], "hidden_sizes entries must be integers >= 1, got [4.0]"),
    ("input_norm", "layer", "input_norm must be one of ['rms', 'none'], got 'layer'"),
    ("concentration_eps", 0.0, "concentration_eps must be a finite number > 0, got 0.0"),
    ("concentration_eps", INF, "concentration_eps must be a finite number > 0, got inf"),
    ("seed", "x", "seed must be an int, got 'x'"),
    ("seed", 1.0, "seed must be an int, got 1.0"),
    ("seed", False, "seed must be an int, got False"),
]


@pytest.mark.parametrize("field,value,message", REFUSED, ids=[f"{f}={v!r}" for f, v, _ in REFUSED])
def test_each_bad_value_is_refused_with_its_whole_message(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MaestroConfig(**{field: value})


# The ends of each range that are inside it: a strict comparison where the docs say <= (or the reverse) fails here.
ACCEPTED = [
    ("tau", 1e-9),
    ("min_prob", 0.0),
    ("lr", 1e-12),
    ("update_every", 1),
    ("meta_steps", 1),
    ("entropy_coef", 0.0),
    ("grad_clip", None),
    ("grad_clip", 1e-9),
    ("beta", 0.0),
    ("beta", 1.0),
    ("prior", (2.0,)),  # one objective
    ("prior", (0.0, 1.0)),  # a zero weight is allowed as long as the sum is positive
    ("norm_eps", 1e-12),
    ("hidden_sizes", (1,)),
    ("concentration_eps", 1e-12),
    ("seed", -3),
    ("seed", 2**40),
]


@pytest.mark.parametrize("field,value", ACCEPTED, ids=[f"{f}={v!r}" for f, v in ACCEPTED])
def test_the_ends_of_each_range_are_accepted(field: str, value: object) -> None:
    config = MaestroConfig(**{field: value})
    assert getattr(config, field) == value


@pytest.mark.parametrize("name", ["batch", "none", "group"])
def test_every_listed_normalization_mode_and_input_norm_is_accepted(name: str) -> None:
    assert MaestroConfig(normalization=name).normalization == name
    for norm in ("rms", "none"):
        assert MaestroConfig(input_norm=norm).input_norm == norm
    assert MaestroConfig(mode="dirichlet").mode == "dirichlet"


# The defaults of docs/method.md's table "Defaults the paper leaves open", written out from it.
DOCUMENTED_DEFAULTS = {
    "tau": 1.0,
    "min_prob": 0.02,
    "lr": 3e-4,
    "update_every": 1,
    "meta_steps": 1,
    "entropy_coef": 0.01,
    "grad_clip": 1.0,
    "beta": 0.5,
    "prior": None,
    "normalization": "group",
    "norm_eps": 1e-6,
    "mode": "discrete",
    "hidden_sizes": [],
    "input_norm": "rms",
    "concentration_eps": 1e-3,
    "seed": 0,
}


def test_to_dict_is_every_field_as_plain_python_with_the_documented_defaults() -> None:
    """Every field is in to_dict(); the documented ones hold their documented default; prior -> floats and the
    sequences -> lists (a field added later only has to be in to_dict())."""
    d = MaestroConfig().to_dict()
    assert set(d) == {f.name for f in fields(MaestroConfig)}
    assert {k: d[k] for k in DOCUMENTED_DEFAULTS} == DOCUMENTED_DEFAULTS
    config = MaestroConfig(prior=[1, 3], hidden_sizes=[16, 8])
    assert config.prior == (1.0, 3.0) and all(isinstance(p, float) for p in config.prior)
    assert config.hidden_sizes == (16, 8)
    d = config.to_dict()
    assert d["prior"] == [1.0, 3.0] and type(d["prior"]) is list
    assert d["hidden_sizes"] == [16, 8] and type(d["hidden_sizes"]) is list
