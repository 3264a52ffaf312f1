"""Every key the plugin reads from or writes into OpenRLHF's logs, and what each means: one place for them all.

OpenRLHF logs the batch mean of every tensor in an experience's ``info`` as ``train/<key>`` (TensorBoard,
wandb), and a reward function's ``extra_logs`` land in that ``info`` too; the plugin writes its own figures
there the same way. So each key below shows in a run's logs as ``train/<key>``. Namespaces:

    obj/<objective>                 each response's objective value: the reward function's ``extra_logs``, and
                                    the model channels' values, which the plugin writes back
    reward/<objective>              each objective's batch mean, beside the hook's own counts and timings
                                    (``reward/invalid``, ``reward/dropped_samples``, ...); an objective may not
                                    be named like one of those (``colliding_key``)
    aggregator/...                  the weights and emphasis an aggregator chose, whichever aggregator it is
    maestro/...                     the Conductor's own figures (the ``maestro`` aggregator only)
    model_channel/<channel>/...     a model channel's own figures (its cost, its raw value)

``METRICS`` describes each key, with ``<objective>`` and ``<channel>`` standing for a name; ``docs/reference.md``
is generated from it (``python -m openrlhf_maestro.cli.reference``).

Bottom layer: imports nothing, so the method (pure torch), the text rewards (run in the vLLM actor) and the
integration all take their names from here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

TRAIN_PREFIX = "train/"
"""OpenRLHF's prefix of each ``info`` key in TensorBoard and wandb."""

OBJECTIVE_PREFIX = "obj/"
"""Key prefix of each objective in the reward function's ``extra_logs`` (and in an experience's ``info``)."""

REWARD_PREFIX = "reward/"
AGGREGATOR_WEIGHT_PREFIX = "aggregator/weight/"
AGGREGATOR_EMPHASIS_PREFIX = "aggregator/emphasis/"
CONDUCTOR_PREFIX = "maestro/"
MODEL_CHANNEL_PREFIX = "model_channel/"

# The hook's own keys under reward/ (beside reward/<objective>).
INVALID = REWARD_PREFIX + "invalid"
DROPPED_SAMPLES = REWARD_PREFIX + "dropped_samples"
SKIPPED_PREFIX = REWARD_PREFIX + "skipped/"
POLICY_FORWARDS = REWARD_PREFIX + "policy_forwards"
SECONDS_AGGREGATE = REWARD_PREFIX + "seconds_aggregate"
SECONDS_FEEDBACK = REWARD_PREFIX + "seconds_feedback"

# The Conductor's figures.
CONDUCTOR_ENTROPY = CONDUCTOR_PREFIX + "entropy"
META_LOSS = CONDUCTOR_PREFIX + "meta_loss"
GRAD_NORM = CONDUCTOR_PREFIX + "grad_norm"
UPDATES = CONDUCTOR_PREFIX + "updates"
SKIPPED_UPDATES = CONDUCTOR_PREFIX + "skipped_updates"
TARGET_FRACTION = CONDUCTOR_PREFIX + "target_fraction"
TARGET_GAIN = CONDUCTOR_PREFIX + "target_gain"

CHANNEL_SECONDS = "seconds"
"""``model_channel/<channel>/seconds``: what a ``policy_forward`` channel's forward took."""


def train_tag(key: str) -> str:
    """``train/<key>``: the TensorBoard / wandb tag under which OpenRLHF logs an ``info`` key."""
    return TRAIN_PREFIX + key


def objective_key(objective: str) -> str:
    """``obj/<objective>``."""
    return OBJECTIVE_PREFIX + objective


def reward_key(objective: str) -> str:
    """``reward/<objective>``: the objective's batch mean, logged by every aggregator."""
    return REWARD_PREFIX + objective


def skipped_key(objective: str) -> str:
    """``reward/skipped/<objective>``: responses whose objective was left out (``skip_objective``)."""
    return SKIPPED_PREFIX + objective


def weight_key(objective: str) -> str:
    """``aggregator/weight/<objective>``: the batch mean of the weight the aggregator gave the objective."""
    return AGGREGATOR_WEIGHT_PREFIX + objective


def emphasis_key(objective: str) -> str:
    """``aggregator/emphasis/<objective>``: the share of responses whose action emphasized the objective."""
    return AGGREGATOR_EMPHASIS_PREFIX + objective


def model_channel_key(channel: str, name: str) -> str:
    """``model_channel/<channel>/<name>``: one of a model channel's own figures."""
    return f"{MODEL_CHANNEL_PREFIX}{channel}/{name}"


_HOOK_KEYS = (INVALID, DROPPED_SAMPLES, POLICY_FORWARDS, SECONDS_AGGREGATE, SECONDS_FEEDBACK)
_HOOK_NAMESPACES = (SKIPPED_PREFIX,)
RESERVED_OBJECTIVES: tuple[str, ...] = tuple(
    key.removeprefix(REWARD_PREFIX).rstrip("/") for key in (*_HOOK_KEYS, *_HOOK_NAMESPACES)
)
"""The objective names ``colliding_key`` refuses."""


def colliding_key(objective: str) -> str | None:
    """The hook's own key that ``reward/<objective>`` would be, or would sit on top of; None if it is free.

    ``reward/<objective>`` shares its namespace with the hook's keys: an objective ``invalid`` would overwrite
    ``reward/invalid``, and one named ``skipped`` would log ``reward/skipped`` over the per-objective counts
    ``reward/skipped/<objective>``.
    """
    key = reward_key(objective)
    if key in _HOOK_KEYS:
        return key
    for namespace in _HOOK_NAMESPACES:
        if key + "/" == namespace:
            return namespace + "<objective>"
    return None


class Metric(NamedTuple):
    """One logged key (``<objective>``, ``<channel>`` stand for a name), who logs it and what it means."""

    key: str
    logged_by: str
    meaning: str


METRICS: tuple[Metric, ...] = (
    Metric(
        objective_key("<objective>"),
        "the reward function (`extra_logs`); the plugin for a model channel",
        "the objective's value for each response (OpenRLHF logs the batch mean). A model channel's values are "
        "written here by the plugin; a response left out under a failure policy holds its group's mean, so the "
        "logged mean stays finite",
    ),
    Metric(
        reward_key("<objective>"),
        "every aggregator",
        "batch mean of the objective's raw value, over the responses that have it, before any normalization "
        "or weighting; also the alignment meta-reward's target (`--maestro.target`), which never enters R",
    ),
    Metric(
        INVALID,
        "the launcher's experience maker",
        "share of the batch's responses whose reward function failed as a whole (raised, returned None, or left "
        "an objective missing or not finite, except under `skip_objective`, where only a missing reward does)",
    ),
    Metric(
        DROPPED_SAMPLES,
        "the hook, `--reward.failure_policy drop_response` or `skip_objective`",
        "responses of this step given zero advantage (their group's mean reward) because their reward failed",
    ),
    Metric(
        skipped_key("<objective>"),
        "the hook, `--reward.failure_policy skip_objective`",
        "responses of this step whose `<objective>` was left out of their reward (the other weights renormalized)",
    ),
    Metric(
        POLICY_FORWARDS,
        "the launcher's experience maker, when the aggregator reads h or a `policy_logits` channel",
        "policy forwards this step that carried the policy probe; equal to the micro-batches when reading h "
        "costs no extra forward",
    ),
    Metric(
        SECONDS_AGGREGATE,
        "the hook",
        "seconds in `before_advantages`: the model channels, the aggregation and the weights log",
    ),
    Metric(
        SECONDS_FEEDBACK,
        "the hook, aggregators that learn from advantages (maestro)",
        "seconds in `after_advantages`: the group-relative advantages and the aggregator's feedback (the "
        "Conductor's update)",
    ),
    Metric(
        weight_key("<objective>"),
        "aggregators that draw weights per response (maestro, random)",
        "batch mean of the weight w_k the responses got (the drawn action's, not its expectation); sums to 1 "
        "over the objectives",
    ),
    Metric(
        emphasis_key("<objective>"),
        "aggregators that draw weights per response (maestro, random)",
        "share of responses whose action emphasized `<objective>` (maestro `dirichlet` mode: whose sample has "
        "its largest entry there); sums to 1 over the objectives",
    ),
    Metric(
        CONDUCTOR_ENTROPY,
        "maestro",
        "mean entropy of the Conductor's policy π_φ(· | h) over the batch, in nats (log K: uniform, 0: "
        "deterministic); in `dirichlet` mode the differential entropy of Dir(α), which can be negative",
    ),
    Metric(
        META_LOSS,
        "maestro, when an update ran",
        "the Conductor's loss L(φ) at the update's first step (the on-policy estimate); Â has zero group mean, "
        "so it hovers around −λ_ent·H and is noisy, not a progress measure; `nan`/`inf` when the update was "
        "skipped",
    ),
    Metric(
        GRAD_NORM,
        "maestro, when an update ran",
        "global gradient norm of the Conductor's loss at the update's first step, before clipping",
    ),
    Metric(UPDATES, "maestro", "Conductor updates completed so far (each `meta_steps` Adam steps)"),
    Metric(
        SKIPPED_UPDATES,
        "maestro",
        "Conductor updates abandoned because the loss or its gradient norm was not finite (e.g. non-finite "
        "advantages); the first one also raises a `RuntimeWarning`",
    ),
    Metric(
        TARGET_FRACTION,
        "maestro, `--maestro.meta_reward alignment`",
        "share of this step's prompt groups with 2 or more target values, the groups the Conductor learns from; "
        "0 on every step means the target never arrives (check the reward function's `obj/<target>`)",
    ),
    Metric(
        TARGET_GAIN,
        "maestro, `--maestro.meta_reward alignment`",
        "mean G_i(a) = Σ_j Â_ij(a)·u_ij of the chosen emphasis over the labelled groups (u: the target centred in "
        "its group): how well this step's update points at the target; `nan` when no group had a target",
    ),
    Metric(
        model_channel_key("<channel>", CHANNEL_SECONDS),
        "the hook, for a `policy_forward` model channel (perplexity)",
        "seconds of the channel's teacher-forced policy forward this step",
    ),
    Metric(
        model_channel_key("perplexity", "mean"),
        "the perplexity model channel",
        "batch mean of the reference's perplexity exp(mean NLL) (the objective `obj/perplexity` is its rank in "
        "the group)",
    ),
)

_PLACEHOLDER = re.compile(r"<[a-z]+>")


def documented(key: str) -> Metric | None:
    """The ``METRICS`` entry that describes ``key`` (a placeholder matches one name without '/'), or None.

    An exact key wins over a pattern: ``reward/invalid`` is the hook's, not an objective's mean."""
    for metric in sorted(METRICS, key=lambda m: len(_PLACEHOLDER.findall(m.key))):
        pattern = "".join(
            "[^/]+" if _PLACEHOLDER.fullmatch(part) else re.escape(part)
            for part in re.split(r"(<[a-z]+>)", metric.key)
        )
        if re.fullmatch(pattern, key):
            return metric
    return None
