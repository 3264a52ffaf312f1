"""Packed samples and dynamic batching on OpenRLHF's real pipeline (CPU): the same seeded MAESTRO step, three ways.

One GRPO step each, with the ``entropy`` channel and the recording MAESTRO of ``tests/e2e/recording_maestro.py``
(MAESTRO itself, plus a file per step with the objectives, the Conductor's contexts h and its weights, in sample
order):

- padded: OpenRLHF's default layout;
- packed: ``--ds.packing_samples`` (OpenRLHF then asks for flash_attention_2; the CPU runtime serves sdpa, whose
  mask transformers builds block-diagonal from the packed position ids);
- dynamic: ``--train.dynamic_batch_enable`` (OpenRLHF switches packing on itself after parsing and regroups the
  micro-batches by length, so the rows reach the experience maker in another order).

vLLM must generate the same responses in all three runs: its sampling is seeded, but OpenRLHF submits the
requests asynchronously, so the draws differ from run to run. ``--rollout.top_p 1e-9`` keeps only the most
likely token at each step (greedy), with the temperature left at 1, so the policy forward's entropy is that of
the sampling policy. Packing only changes the training-side forwards, so the step-1 rows must agree, before
any update: the reward function's objectives exactly; what the policy
forward computes (entropy, h) within bf16's rounding, since the model runs in bf16 (``--ds.param_dtype``) and
a packed forward adds up the same products in other kernels and orders.

OpenRLHF numbers the rollout samples as their generations come back, so the prompt groups reach the
aggregator in another order in each run; the rows are matched by prompt, from ``--reward.weights_log``
(one line per response, in the same sample order as the recording).

Tolerance, justified from what the runs show: the model runs in bf16 (``--ds.param_dtype``), whose rounding
is 2^-8 = 0.0039 relative per operation, and a packed forward adds the same products in other kernels and
orders. Measured here (2026-11-29, this CPU): h of the same response differs by at most 0.0043 relative between
layouts, h of another prompt's response by 0.108 or more (the random tiny model's last-token states are alike),
and the mean entropies by 1.4e-6 nats.
The test allows 0.02 relative per row of h, and checks that every other prompt's row lies beyond it. The mean
entropies of different prompts differ by only 1e-4 to 4e-4 nats on this model, so entropy is compared within
1e-3 nats per response (a padding mistake that reads pad or another sample's positions moves it far more),
and the per-objective means OpenRLHF logs within the same figure.
"""

from __future__ import annotations

import json
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
    # About 66 tokens per sample: micro-batches of two or three packed samples, regrouped by length.
    "dynamic": ("--train.dynamic_batch_enable", "--train.max_tokens_per_gpu", "200"),
}
H_TOLERANCE = 0.02  # relative, per row (module docstring)
ENTROPY_TOLERANCE = 1e-3  # nats, per response


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
            "--maestro_recording.lr",  # the plugin aggregator's own option flags
            "1e-2",
            "--rollout.top_p",
            "1e-9",  # greedy: the same responses in every run (module docstring)
            "--reward.weights_log",
            str(root / "weights.jsonl"),
            *flags,
            AGGREGATOR="maestro_recording",
            OBJECTIVES=",".join(OBJECTIVES),
            STEPS_PROMPTS="4",  # one step
            VERIFY_WEIGHT_SYNC="0",
            MAESTRO_RECORD_DIR=str(record),
        )
        run["record"], run["weights_log"] = record, root / "weights.jsonl"
        out[name] = run
    return out


def _step1_by_prompt(run: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Step 1's recorded rows, keyed by prompt: its objectives (n, K) and contexts (n, H)."""
    assert run["returncode"] == 0, log_tail(run)
    record = torch.load(run["record"] / "step1.pt", weights_only=True)
    lines = [json.loads(line) for line in run["weights_log"].read_text().splitlines()]
    prompts = [line["prompt"] for line in lines if line["step"] == 1]
    assert len(prompts) == record["rewards"].shape[0]
    rows: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        rows.setdefault(prompt, []).append(i)
    return {p: {"rewards": record["rewards"][r], "hidden": record["hidden"][r]} for p, r in rows.items()}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("layout", ["packed", "dynamic"])
def test_packed_step_reads_the_same_objectives_and_contexts_as_the_padded_one(runs, layout, capsys):
    padded, other = _step1_by_prompt(runs["padded"]), _step1_by_prompt(runs[layout])
    if layout == "dynamic":  # OpenRLHF's own post-parse switch, which the plugin's checks now see
        assert (
            "Please --packing_samples to accelerate when --use_dynamic_batch is enabled"
            in runs[layout]["log"].read_text()
        )
    assert sorted(other) == sorted(padded) and len(padded) == 4
    k = FUNCTION_OBJECTIVES
    entropy_diff, h_diff, wrong = 0.0, 0.0, math.inf
    for prompt, ref in padded.items():
        got = other[prompt]
        # Greedy: the group's responses are one response, so every row of the group must agree.
        assert torch.equal(got["rewards"][:, :k], ref["rewards"][:, :k]), prompt
        entropy_diff = max(entropy_diff, float((got["rewards"][:, k] - ref["rewards"][:, k]).abs().max()))
        h_diff = max(h_diff, max(_relative(g, r) for g, r in zip(got["hidden"], ref["hidden"], strict=True)))
        for other_prompt, other_ref in padded.items():  # the gap a misplaced row would show
            if other_prompt != prompt:
                wrong = min(wrong, _relative(got["hidden"][0], other_ref["hidden"][0]))
    with capsys.disabled():
        print(
            f"\n{layout} vs padded, step 1: max |Δ entropy| {entropy_diff:.2e} nats, max relative |Δh| "
            f"{h_diff:.2e}; h against another prompt's: at least {wrong:.3f}"
        )
    assert entropy_diff <= ENTROPY_TOLERANCE
    assert h_diff <= H_TOLERANCE < wrong
    # The per-objective means OpenRLHF logged for step 1 agree too.
    scalars = {name: latest_run_scalars(runs[name]["out"] / "tensorboard") for name in ("padded", layout)}
    forwards = {n: scalars[n]["train/reward/policy_forwards"][1] for n in scalars}
    if layout == "dynamic":  # regrouped: other micro-batches than the padded run's 4, several samples each
        assert forwards[layout] != forwards["padded"] and 16 / forwards[layout] > 1, forwards
    for name in OBJECTIVES:
        a, b = (scalars[n][f"train/reward/{name}"][1] for n in ("padded", layout))
        assert math.isclose(a, b, abs_tol=ENTROPY_TOLERANCE if name == "entropy" else 1e-6), (name, a, b)
