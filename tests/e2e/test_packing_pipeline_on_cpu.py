"""Packed samples and dynamic batching on OpenRLHF's real pipeline (CPU): the same seeded MAESTRO step, three ways.

One GRPO step each, with the ``entropy`` channel and the recording MAESTRO of ``tests/e2e/recording_maestro.py``
(MAESTRO itself, plus a file per step with the objectives, the Conductor's contexts h and its weights, in sample
order):

- padded: OpenRLHF's default layout;
- packed: ``--ds.packing_samples`` (OpenRLHF then asks for flash_attention_2; the CPU runtime serves sdpa, whose
  mask transformers builds block-diagonal from the packed position ids);
- dynamic: ``--train.dynamic_batch_enable`` (OpenRLHF switches packing on itself after parsing and regroups the
  micro-batches by length, so the rows reach the experience maker in another order).

vLLM generates the same responses in all three (same seed; packing only changes the training-side forwards),
so the step-1 rows must agree, before any update: the reward function's objectives exactly; what the policy
forward computes (entropy, h) within bf16's rounding, since the model runs in bf16 (``--ds.param_dtype``) and
a packed forward adds up the same products in other kernels and orders.

Tolerance, justified: bf16 keeps 8 significant bits, so one rounding is at most 2^-8 = 0.0039 relative. The
tiny model has 2 layers; h passes through about 10 rounded operations, so per-row differences of a few
2^-8 are rounding, and a wrong row (another sample's state, a padded position, a stale cache) differs by
order 1 (rows of h are nearly orthogonal). The test allows 0.05 relative per row of h and 0.05 nats per
response's mean entropy (entropies here are about 5 nats: 1 %), and prints the largest differences seen.
"""

from __future__ import annotations

import math

import pytest
import torch
from _support import REPO, log_tail, run_example

from openrlhf_maestro.report import latest_run_scalars

pytestmark = pytest.mark.e2e

OBJECTIVES = ["format", "length", "match", "entropy"]
FUNCTION_OBJECTIVES = 3  # the first three come from examples/rewards/demo_reward.py
LAYOUTS = {
    "padded": (),
    "packed": ("--ds.packing_samples",),
    "dynamic": ("--train.dynamic_batch_enable", "--train.max_tokens_per_gpu", "96"),
}
H_TOLERANCE = 0.05  # relative, per row (module docstring)
ENTROPY_TOLERANCE = 0.05  # nats, per response


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, dict]:
    out = {}
    for name, flags in LAYOUTS.items():
        root = tmp_path_factory.mktemp(f"layout-{name}")
        record = root / "record"
        record.mkdir()
        run = run_example(
            root / "run",
            tiny_model_dir,
            "--reward.plugins",
            str(REPO / "tests/e2e/recording_maestro.py"),
            "--maestro.lr",
            "1e-2",
            *flags,
            AGGREGATOR="maestro_recording",
            OBJECTIVES=",".join(OBJECTIVES),
            STEPS_PROMPTS="4",  # one step
            VERIFY_WEIGHT_SYNC="0",
            MAESTRO_RECORD_DIR=str(record),
        )
        run["record"] = record
        out[name] = run
    return out


def _step1(run: dict) -> dict:
    assert run["returncode"] == 0, log_tail(run)
    return torch.load(run["record"] / "step1.pt", weights_only=True)


@pytest.mark.parametrize("layout", ["packed", "dynamic"])
def test_packed_step_reads_the_same_objectives_and_contexts_as_the_padded_one(runs, layout, capsys):
    padded, other = _step1(runs["padded"]), _step1(runs[layout])
    log = log_tail(runs[layout], 400_000)
    if layout == "dynamic":  # OpenRLHF's own post-parse switch, which the plugin's checks now see
        assert "Please --packing_samples to accelerate when --use_dynamic_batch is enabled" in log
    assert torch.equal(other["group_ids"], padded["group_ids"])
    k = FUNCTION_OBJECTIVES
    assert torch.equal(other["rewards"][:, :k], padded["rewards"][:, :k]), "vLLM generated other responses"
    entropy_diff = (other["rewards"][:, k] - padded["rewards"][:, k]).abs().max().item()
    h, h_ref = other["hidden"], padded["hidden"]
    relative = ((h - h_ref).norm(dim=1) / h_ref.norm(dim=1)).max().item()
    # What a wrong row would look like: h of one response against another's, the gap the tolerance must catch.
    wrong = ((h_ref.roll(1, dims=0) - h_ref).norm(dim=1) / h_ref.norm(dim=1)).min().item()
    with capsys.disabled():
        print(
            f"\n{layout} vs padded, step 1: max |Δ entropy| {entropy_diff:.2e} nats, max relative |Δh| "
            f"{relative:.2e} (another response's h: at least {wrong:.2f})"
        )
    assert entropy_diff <= ENTROPY_TOLERANCE
    assert relative <= H_TOLERANCE < wrong
    # The per-objective means OpenRLHF logged for step 1 agree too.
    scalars = {name: latest_run_scalars(runs[name]["out"] / "tensorboard") for name in ("padded", layout)}
    for name in OBJECTIVES:
        a, b = (scalars[n][f"train/reward/{name}"][1] for n in ("padded", layout))
        assert math.isclose(a, b, abs_tol=ENTROPY_TOLERANCE if name == "entropy" else 1e-6), (name, a, b)
