"""``AggregatorHook``: the plugin's integration with OpenRLHF, the same object on both paths.

Per rollout batch, between OpenRLHF's model forwards and its advantages:

    policy_probe                                   what the experience maker's policy forward should read
                                                   (h, policy_logits channels), or None; its per-sample
                                                   values arrive in each experience's ``info``
    before_advantages(experiences, experience_maker)
                                                   the model channels' objectives (``model_channels``), then
                                                   (N, K) objectives from info["obj/<name>"] -> R (N,) into
                                                   experience.rewards and info["reward"]; a response whose
                                                   reward function failed stops the step, gets its group's
                                                   mean (zero advantage: drop_response), or has only its
                                                   missing objectives left out (skip_objective)
    after_advantages(experiences)                  the group-relative advantages of the final R (after
                                                   OpenRLHF's length penalties) -> the aggregator's feedback
    state_dict / load_state_dict                   the spec's record + the aggregator's state (checkpoints)

Both calls return their logs {name: float} and also write them into every experience's ``info``, which
OpenRLHF logs as ``train/<name>`` (as it logs a reward function's ``extra_logs``). Every name comes from
``openrlhf_maestro.metric_names`` (listed with its meaning in docs/reference.md).

- **Patched OpenRLHF** (``patches/openrlhf-0.11.2-reward-aggregator.patch`` and ``-policy-probe.patch``):
  ``--reward.aggregator`` names a Python file that OpenRLHF loads like a ``reward_func`` file, and builds
  ``RewardAggregator(args)`` from it; ``openrlhf_maestro/integration/reward_aggregator.py`` is that file
  (``RewardAggregator`` is this class), configured by ``--reward.aggregator_args`` (JSON).
- **Unpatched OpenRLHF** (the launcher): the driver parses the flags into a spec once and writes its JSON into
  ``--reward.aggregator_args``; ``AggregatingPPOTrainer`` builds ``AggregatorHook(args, spec=...)`` from that
  JSON, and ``AggregatingExperienceMaker`` calls the same methods at the same two points.

The aggregator itself comes from the spec and the registry (``openrlhf_maestro.method``): this module never
compares an aggregator's name.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

import torch

from openrlhf_maestro.channels import is_channel
from openrlhf_maestro.integration.model_channels import compute_model_channels
from openrlhf_maestro.method import RewardAggregator, group_advantages
from openrlhf_maestro.metric_names import (
    DROPPED_SAMPLES,
    INVALID,
    OBJECTIVE_PREFIX,
    SECONDS_AGGREGATE,
    SECONDS_FEEDBACK,
    objective_key,
    reward_key,
    skipped_key,
)
from openrlhf_maestro.probe import HIDDEN, PolicyProbe
from openrlhf_maestro.spec import AggregatorSpec, SpecError

logger = logging.getLogger(__name__)

CLIENT_STATE_KEY = "reward_aggregator"  # the checkpoint's client_states key, as in the upstream patch
STANDALONE_NAME = "reward_aggregator"


class MissingObjectiveError(KeyError):
    """The reward function did not report a declared objective."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidSampleError(ValueError):
    """A response whose reward or objective is missing, None or non-finite (and dropping is not enabled)."""


def hidden_size_of(pretrain: str) -> int:
    """H of the policy: ``hidden_size`` of its (text) config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pretrain, trust_remote_code=True)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def objective_matrix(experiences: list, objectives: list[str]) -> torch.Tensor:
    """(N, K) float32: column k holds ``info["obj/<objectives[k]>"]`` of every response, in experience order."""
    columns = []
    for name in objectives:
        key = objective_key(name)
        if not all(key in e.info for e in experiences):
            reported = sorted({k for e in experiences for k in e.info if k.startswith(OBJECTIVE_PREFIX)})
            raise MissingObjectiveError(
                f"the reward function reported no '{key}' for objective '{name}' of the aggregator's objectives; it "
                f"reported {reported or f'no {OBJECTIVE_PREFIX}* keys'}. Put extra_logs['{key}'] = <float> in its "
                f"return value, or drop '{name}' from the objectives."
            )
        columns.append(torch.cat([e.info[key].reshape(-1).float() for e in experiences]))
    return torch.stack(columns, dim=1)


def target_column(experiences: list, name: str) -> torch.Tensor:
    """(N,) float32 ``info["obj/<name>"]`` in experience order, NaN where it is missing or not finite: a target is
    optional per response (an experience without the key contributes NaN rows).

    Raises:
        InvalidSampleError: the key holds a number of values other than the experience's sample count.
    """
    key, pieces = objective_key(name), []
    for e in experiences:
        values = e.info.get(key)
        if values is None:
            pieces.append(torch.full((len(e.index),), float("nan")))
            continue
        values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
        if values.numel() != len(e.index):
            raise InvalidSampleError(
                f"the target {key} has {values.numel()} values for {len(e.index)} responses; report it for every "
                f"response (extra_logs['{key}'] = float('nan') where it is missing)"
            )
        pieces.append(torch.where(torch.isfinite(values), values, torch.full_like(values, float("nan"))))
    return torch.cat(pieces)


def sample_index_of(experiences: list) -> torch.Tensor:
    """(N,) index of every response in its rollout batch (``Experience.index``), in experience order."""
    return torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))


def group_ids_of(experiences: list, n_samples_per_prompt: int) -> torch.Tensor:
    """(N,) prompt-group id of every response: rollout samples are prompt-major, n per prompt."""
    return sample_index_of(experiences) // n_samples_per_prompt


def fill_with_group_means(values: torch.Tensor, invalid: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(N, ...) values: the rows of dropped responses become the mean of their group's valid rows (0 if none).

    Applied to the objective matrix it keeps the per-objective normalization of the group unchanged; applied to
    the scalar R it leaves the group mean as it was, so a dropped response's group-relative advantage is exactly
    0 (group_norm, dr_grpo, reinforce_baseline, and rloo with one dropped response per group).
    """
    flat = values.reshape(values.shape[0], -1)
    absent = invalid.reshape(-1, 1).expand_as(flat)
    return fill_absent_entries(flat, absent, group_ids).reshape(values.shape)


def fill_absent_entries(values: torch.Tensor, absent: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(N, K) values: each absent entry becomes the mean of the present entries of its objective in its group (0
    if none), so a filled entry leaves its group's mean as it was."""
    if not absent.any():
        return values
    out = values.clone()
    for gid in torch.unique(group_ids[absent.any(dim=1)]):
        rows = group_ids == gid
        for k in absent[rows].any(dim=0).nonzero().flatten().tolist():
            present = rows & ~absent[:, k]
            out[rows & absent[:, k], k] = values[present, k].mean() if present.any() else 0.0
    return out


def set_objective(experiences: list, name: str, values: torch.Tensor) -> None:
    for experience, piece in zip(experiences, values.split([len(e.index) for e in experiences]), strict=True):
        experience.info[objective_key(name)] = piece.float()


def log_into_info(experiences: list, logs: dict[str, float]) -> None:
    """Each log as a (B,) constant in every experience's ``info``: OpenRLHF's actor logs the sample mean of
    every ``info`` tensor as ``train/<name>``, so the logs reach TensorBoard and wandb on either path."""
    for experience in experiences:
        for name, value in logs.items():
            experience.info[name] = torch.full((len(experience.index),), float(value))


def policy_outputs_of(experiences: list, probe: PolicyProbe | None) -> list[dict[str, torch.Tensor]] | None:
    """What ``probe.per_sample`` read in the policy forward, per experience, taken out of ``info`` (where the
    policy-probe patch, or the launcher, put it; left there, OpenRLHF would log h as a metric)."""
    if probe is None:
        return None
    keys = ([HIDDEN] if probe.needs_hidden else []) + list(probe.channels)
    missing = sorted({k for e in experiences for k in keys if k not in e.info})
    if missing:
        raise RuntimeError(
            f"OpenRLHF put no policy-probe values {missing} into the experiences: apply "
            "patches/openrlhf-0.11.2-policy-probe.patch (after -reward-aggregator.patch), or use the plugin's launcher"
        )
    return [{k: e.info.pop(k) for k in keys} for e in experiences]


def check_resumable(saved: dict, current: dict) -> None:
    """Refuse to load an aggregator state saved for another aggregator, other objectives or another model width."""
    for key in ("aggregator", "objectives", "hidden_size"):
        if saved.get(key) != current.get(key):
            raise ValueError(
                f"cannot resume: the checkpoint's reward aggregator has {key}={saved.get(key)!r}, this run's has "
                f"{current.get(key)!r}; resume with the same aggregator flags and model, or start a new --ckpt.path"
            )


class AggregatorHook:
    """One run's reward aggregation as an OpenRLHF reward-aggregator hook (module docstring).

    Args:
        args: OpenRLHF's nested args (``args.rollout``, ``args.algo``, ``args.actor``, ...).
        spec: the aggregation (the launcher's trainer passes the one it read from ``--reward.aggregator_args``,
            whose notes the driver printed); without it the spec comes from ``--reward.aggregator_args`` here (the
            patched OpenRLHF builds ``RewardAggregator(args)``) and its notes are logged.
    """

    def __init__(self, args, spec: AggregatorSpec | None = None) -> None:
        from openrlhf_maestro.integration.flags import openrlhf_notes, openrlhf_problems, spec_from_aggregator_args

        if spec is None:  # the patched OpenRLHF: its CLI has no launcher to print the notes
            spec = spec_from_aggregator_args(args)
            for note in openrlhf_notes(spec, args):
                logger.warning(note)
        problems = openrlhf_problems(spec, args)
        if problems:
            raise SpecError("; ".join(problems))
        self.args = args
        self.spec = spec
        self.hidden_size = hidden_size_of(args.actor.model_name_or_path) if spec.needs_hidden else None
        self.aggregator: RewardAggregator = spec.build(self.hidden_size)
        self.policy_probe: PolicyProbe | None = PolicyProbe.of(spec)  # read by the experience maker's forward
        self.steps = 0  # before_advantages calls, for the weights log (checkpointed)

    # -- what OpenRLHF reads before it runs the forwards: ``policy_probe`` (set in __init__) --------------

    @property
    def record(self) -> dict:
        """What identifies this aggregation: the spec, plus the policy width for a hidden-state aggregator."""
        return {**self.spec.to_json(), "hidden_size": self.hidden_size}

    # -- the two calls per rollout batch ---------------------------------------------------------------------

    def before_advantages(self, experiences: list, experience_maker=None) -> dict[str, float]:
        """R into every experience, from its objectives (reward function and model channels).

        Args:
            experiences: the rollout batch's micro-batches, after OpenRLHF's model forwards; with a
                ``policy_probe``, each one's ``info`` holds what ``policy_probe.per_sample`` read in the policy
                forward (taken out here).
            experience_maker: OpenRLHF's ``RemoteExperienceMaker``, whose model groups compute the
                ``policy_forward`` and ``reward_model`` channels.
        """
        t0 = time.perf_counter()
        spec = self.spec
        policy_outputs = policy_outputs_of(experiences, self.policy_probe)
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        logs: dict[str, float] = {}
        if spec.model_channels:
            clash = [n for n in spec.model_channels if any(objective_key(n) in e.info for e in experiences)]
            if clash:
                raise InvalidSampleError(
                    f"the reward function reports {clash}, which are model channels the plugin computes itself; "
                    "rename the reward function's objective"
                )
            if experience_maker is None:
                raise RuntimeError(
                    f"OpenRLHF passed no experience maker, so the model channels {spec.model_channels} cannot run: "
                    "apply patches/openrlhf-0.11.2-reward-aggregator.patch, or use the plugin's launcher"
                )
            values, channel_logs = compute_model_channels(
                spec, experiences, policy_outputs, experience_maker, group_ids
            )
            logs.update(channel_logs)
            for name, column in values.items():
                set_objective(experiences, name, column)
        rewards = objective_matrix(experiences, list(spec.objectives))
        invalid, missing = self._invalid_rows(experiences, rewards)
        if spec.failure_policy != "stop":
            logs[DROPPED_SAMPLES] = float(invalid.sum())
        if spec.failure_policy == "skip_objective":
            for k, name in enumerate(spec.objectives):
                logs[skipped_key(name)] = float((missing[:, k] & ~invalid).sum())
        absent = missing | invalid.unsqueeze(1)
        filled = fill_absent_entries(rewards, absent, group_ids)
        if absent.any():  # keep OpenRLHF's own obj/* logs finite
            for k, name in enumerate(spec.objectives):
                set_objective(experiences, name, filled[:, k])
        # skip_objective: the aggregator leaves each absent entry out of its response's R (NaN); otherwise
        # dropped rows carry their group's means, which keeps the group's per-objective statistics as they were.
        if spec.failure_policy == "skip_objective":
            rewards = torch.where(absent, torch.full_like(rewards, float("nan")), rewards)
        else:
            rewards = filled
        hidden = None
        if spec.needs_hidden:  # the probe then reads h, and policy_outputs_of refused a batch without it
            hidden = torch.cat([o[HIDDEN] for o in policy_outputs])
        # The aggregator sees the batch in sample order, whatever micro-batches OpenRLHF made (dynamic batching
        # regroups them by length), so a seeded run draws the same emphasis for the same response either way.
        order = torch.argsort(sample_index_of(experiences))
        extra = {}
        if self.aggregator.target_objective is not None:  # kept out of R; NaN where missing or dropped
            name = self.aggregator.target_objective
            target = target_column(experiences, name)
            target = torch.where(invalid, torch.full_like(target, float("nan")), target)
            extra["target"] = target[order]
            # Logged like an objective but over the responses that report it: OpenRLHF's own mean of the info
            # entry would be NaN on every step where some prompt has no target, so the entry leaves info.
            for experience in experiences:
                experience.info.pop(objective_key(name), None)
            if not torch.isnan(target).all():
                logs[reward_key(name)] = float(target.nanmean())
        out = self.aggregator.aggregate(
            rewards[order], group_ids[order], None if hidden is None else hidden[order], **extra
        )
        scalar = torch.empty_like(out.rewards)
        scalar[order] = out.rewards
        scalar = fill_with_group_means(scalar, invalid, group_ids)  # dropped rows: zero advantage
        for experience, piece in zip(experiences, scalar.split([len(e.index) for e in experiences]), strict=True):
            experience.rewards = piece.float()  # R is real-valued even when the reward function returned ints
            experience.info["reward"] = experience.rewards.clone()
        self.steps += 1
        if spec.weights_log and out.weights is not None:
            prompts = [p for e in experiences for p in e.prompts]
            prompts = [prompts[i] for i in order.tolist()]
            append_weights_log(
                spec.weights_log, self.steps, list(spec.objectives), prompts, out.weights, out.expected_weights
            )
        logs.update(out.metrics)
        logs[SECONDS_AGGREGATE] = time.perf_counter() - t0
        log_into_info(experiences, logs)
        return logs

    def after_advantages(self, experiences: list) -> dict[str, float]:
        if not self.aggregator.learns_from_advantages:  # any estimator: nothing to feed back
            return {}
        t0 = time.perf_counter()
        rewards = torch.cat([e.rewards.reshape(-1).float() for e in experiences])  # R after length penalties
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        advantages = group_advantages(rewards, group_ids, self.args.algo.advantage.estimator)
        logs = dict(self.aggregator.feedback(advantages[torch.argsort(sample_index_of(experiences))]))
        logs[SECONDS_FEEDBACK] = time.perf_counter() - t0
        log_into_info(experiences, logs)
        return logs

    def _invalid_rows(self, experiences: list, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which responses and objectives failed, by the failure policy.

        Returns (N,) bool ``invalid``: responses left out whole (zero advantage): their reward function failed
        (flagged before the forwards), or any objective is not finite under ``drop_response``, or every
        function objective is missing under ``skip_objective``; and (N, K) bool ``missing``: single objectives
        left out of their response's R (``skip_objective`` only). Raises under ``stop``; a non-finite model
        channel always raises.
        """
        spec = self.spec
        flagged = torch.cat([e.info.get(INVALID, torch.zeros(len(e.index))).reshape(-1) for e in experiences]).bool()
        bad = ~torch.isfinite(rewards)
        for k, name in enumerate(spec.objectives):
            rows = bad[:, k] & ~flagged
            if rows.any() and (name in spec.model_channels or spec.failure_policy == "stop"):
                row = int(rows.nonzero()[0])
                raise InvalidSampleError(
                    f"objective '{name}' is {rewards[row, k].item()} (not finite) for response {row} of this batch. "
                    + (
                        "It is a model channel: this is a bug or a numerical overflow in the policy."
                        if name in spec.model_channels
                        else "Fix the reward function, or pass --reward.failure_policy drop_response (zero "
                        "advantage for such responses) or skip_objective (leave out only that objective)."
                    )
                )
        if spec.failure_policy != "skip_objective":
            return flagged | bad.any(dim=1), torch.zeros_like(bad)
        function = torch.tensor([not is_channel(name) for name in spec.objectives])
        invalid = flagged | (bad | ~function).all(dim=1)
        return invalid, bad & ~invalid.unsqueeze(1)

    # -- checkpoints and the standalone file -----------------------------------------------------------------

    def state_dict(self) -> dict:
        """The record and the aggregator's whole state (``torch.load(weights_only=True)``-safe)."""
        return {**self.record, "steps": self.steps, "state": self.aggregator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_resumable(state, self.record)
        self.aggregator.load_state_dict(state["state"])
        self.steps = int(state.get("steps", 0))

    def save_standalone(self, output_dir: str | os.PathLike) -> Path:
        """Write ``reward_aggregator.pt`` (record + state, loadable with ``weights_only=True``) and its ``.json``."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), out / f"{STANDALONE_NAME}.pt")
        (out / f"{STANDALONE_NAME}.json").write_text(json.dumps(self.record, indent=2))
        return out / f"{STANDALONE_NAME}.pt"


def load_standalone(path: str | os.PathLike) -> RewardAggregator:
    """Rebuild an aggregator from ``reward_aggregator.pt`` (e.g. to inspect a trained Conductor offline)."""
    saved = torch.load(path, weights_only=True)
    aggregator = AggregatorSpec.from_json(saved).build(saved.get("hidden_size"))
    aggregator.load_state_dict(saved["state"])
    return aggregator


def append_weights_log(
    path: str,
    step: int,
    objectives: list[str],
    prompts: list[str],
    weights: torch.Tensor,
    expected: torch.Tensor | None = None,
) -> None:
    """One JSON line per response: {"step", "prompt", "weights": {name: w}, "emphasis": argmax name}, and
    "expected": {name: E[w]} when the aggregator draws its weights from a policy (maestro's Conductor)."""
    expected_rows = [None] * len(prompts) if expected is None else expected.tolist()
    if not len(prompts) == len(weights) == len(expected_rows):  # before writing: no half-written step
        raise ValueError(
            f"weights log: {len(prompts)} prompts, {len(weights)} weight rows, {len(expected_rows)} expected rows"
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for prompt, row, mean in zip(prompts, weights.tolist(), expected_rows, strict=True):
            record = {
                "step": step,
                "prompt": prompt,
                "weights": dict(zip(objectives, row, strict=True)),
                "emphasis": objectives[max(range(len(row)), key=row.__getitem__)],
            }
            if mean is not None:
                record["expected"] = dict(zip(objectives, mean, strict=True))
            fh.write(json.dumps(record) + "\n")
