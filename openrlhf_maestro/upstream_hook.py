"""The plugin's aggregators (``sum``, ``gdpo``, ``maestro``, ``random``) behind OpenRLHF's proposed aggregator hook.

``patches/openrlhf-0.11.2-reward-aggregator.patch`` adds the hook (``openrlhf/trainer/reward_aggregator.py``) and
the flags ``--reward.aggregator`` / ``--reward.aggregator_args`` to OpenRLHF; ``setup.py`` registers the classes
below in the entry-point group ``openrlhf.reward_aggregators``, so OpenRLHF's own CLI finds them by name::

    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url my_reward.py --reward.aggregator maestro \\
        --reward.aggregator_args '{"objectives": ["format", "length"], "maestro": {"lr": 0.01}}'

``--reward.aggregator_args`` is a JSON object:

    objectives  names, required; the reward function reports each as ``extra_logs["obj/<name>"]`` (a float)
    weights     one number per objective: static weights (sum, gdpo; default 1 each) or the prior w_prior
                (maestro, random; default uniform)
    maestro     ``MaestroConfig`` options, e.g. {"lr": 0.01, "tau": 0.5, "update_every": 2} (maestro only)
    context     "response" (default) or "prompt": where the Conductor reads h (maestro only)

Hook method -> what runs (the same helpers as the launcher's integration, imported from it):

    before_advantages  (N, K) objectives from ``info["obj/<name>"]`` -> ``aggregate`` (with h from the policy
                       forward that already ran) -> R replaces ``rewards`` and ``info["reward"]``
    after_advantages   group-relative advantages of the final R (after OpenRLHF's length penalties) ->
                       ``feedback`` (the Conductor's meta-update)
    state_dict         identity (aggregator, objectives, H, options) + the aggregator's whole state; resuming
                       with other objectives, aggregator or model is refused

The classes duck-type OpenRLHF's ``RewardAggregator`` (its loader checks the four methods) instead of
subclassing it, so this module imports against an unpatched OpenRLHF too. Logged keys are those of the
launcher (README "What is logged"), minus ``maestro/policy_forwards``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import torch

from openrlhf_maestro.method import MaestroConfig

ARGS_FLAG = "--reward.aggregator_args"
KEYS = ("objectives", "weights", "maestro", "context")
CONTEXTS = ("response", "prompt")
_MAESTRO_OPTIONS = [f.name for f in dataclasses.fields(MaestroConfig) if f.name != "prior"]
_DEFAULT_OPTIONS = {name: getattr(MaestroConfig(), name) for name in _MAESTRO_OPTIONS}


class AggregatorArgsError(ValueError):
    """``--reward.aggregator_args`` does not describe a valid aggregator."""


def parse_aggregator_args(aggregator: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate the JSON object of ``--reward.aggregator_args`` for ``aggregator``; returns it with defaults.

    Raises:
        AggregatorArgsError: naming the key, the value and the fix.
    """
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise AggregatorArgsError(f"{ARGS_FLAG}: unknown keys {unknown}; valid keys: {list(KEYS)}")
    objectives = options.get("objectives")
    if not isinstance(objectives, list) or not objectives:
        raise AggregatorArgsError(
            f'{ARGS_FLAG} needs "objectives": a non-empty list of the names your reward function reports as '
            f'extra_logs["obj/<name>"], e.g. {{"objectives": ["format", "length"]}}; got {objectives!r}'
        )
    bad = [o for o in objectives if not isinstance(o, str) or not o or "," in o or "/" in o]
    if bad or len(set(objectives)) != len(objectives):
        raise AggregatorArgsError(
            f'{ARGS_FLAG}: "objectives" must be distinct non-empty strings without "," or "/", got {objectives}'
        )
    weights = options.get("weights")
    if weights is not None:
        numbers = isinstance(weights, list) and all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in weights
        )
        if not numbers or len(weights) != len(objectives):
            raise AggregatorArgsError(
                f'{ARGS_FLAG}: "weights" must be a list of {len(objectives)} finite numbers, one per objective '
                f"{objectives}; got {weights!r}"
            )
    context = options.get("context", "response")
    maestro = options.get("maestro", {})
    if aggregator != "maestro":
        given = [k for k in ("maestro", "context") if k in options]
        if given:
            raise AggregatorArgsError(f"{ARGS_FLAG}: {given} only apply to the maestro aggregator, not {aggregator!r}")
    if context not in CONTEXTS:
        raise AggregatorArgsError(f'{ARGS_FLAG}: "context" must be one of {list(CONTEXTS)}, got {context!r}')
    if not isinstance(maestro, dict):
        raise AggregatorArgsError(
            f'{ARGS_FLAG}: "maestro" must be an object of MaestroConfig options, got {maestro!r}'
        )
    unknown = sorted(set(maestro) - set(_MAESTRO_OPTIONS))
    if unknown:
        hint = ' (the prior is "weights")' if "prior" in unknown else ""
        raise AggregatorArgsError(f'{ARGS_FLAG}: unknown "maestro" options {unknown}{hint}; valid: {_MAESTRO_OPTIONS}')
    return {"objectives": list(objectives), "weights": weights, "maestro": dict(maestro), "context": context}


def check_openrlhf_args(args, aggregator: str) -> None:
    """The OpenRLHF flags the aggregators depend on (nested args, as the hook receives them)."""
    from openrlhf_maestro.integration.flags import GROUP_RELATIVE_ESTIMATORS

    n = args.rollout.n_samples_per_prompt
    if n < 2:
        raise AggregatorArgsError(
            f"--reward.aggregator {aggregator} needs --rollout.n_samples_per_prompt >= 2 (normalization and "
            f"meta-reward are relative to the prompt's group), got {n}"
        )
    estimator = args.algo.advantage.estimator
    if estimator not in GROUP_RELATIVE_ESTIMATORS:
        raise AggregatorArgsError(
            f"--reward.aggregator {aggregator} needs a group-relative --algo.advantage.estimator "
            f"({', '.join(GROUP_RELATIVE_ESTIMATORS)}), got {estimator}"
        )
    if aggregator == "maestro" and getattr(args.ckpt, "disable_ds", False):
        raise AggregatorArgsError(
            "--ckpt.disable_ds drops the checkpoint's client_states, where the Conductor's state is saved; remove it"
        )


class MethodAggregatorHook:
    """One ``openrlhf_maestro.method`` aggregator as an OpenRLHF reward-aggregator hook.

    Args:
        args: OpenRLHF's nested args (``args.rollout``, ``args.algo``, ``args.actor``, ...).
        **options: the JSON object of ``--reward.aggregator_args`` (see the module docstring).
    """

    aggregator: ClassVar[str] = ""
    needs_hidden_states: ClassVar[bool] = False

    def __init__(self, args, **options: Any) -> None:
        from openrlhf_maestro.integration.trainer import (
            aggregator_record,
            build_aggregator_from_args,
            hidden_size_of,
        )

        spec = parse_aggregator_args(self.aggregator, options)
        check_openrlhf_args(args, self.aggregator)
        self.args = args
        self.objectives: list[str] = spec["objectives"]
        self.hidden_states_position: str = spec["context"]
        weights = spec["weights"]
        # The launcher's flags, as build_aggregator_from_args and aggregator_record read them.
        flags = SimpleNamespace(
            reward=SimpleNamespace(
                aggregator=self.aggregator,
                objectives=",".join(self.objectives),
                weights=",".join(repr(float(w)) for w in weights) if weights is not None else None,
            ),
            maestro=SimpleNamespace(**{**_DEFAULT_OPTIONS, **spec["maestro"], "context": spec["context"]}),
        )
        hidden_size = hidden_size_of(args.actor.model_name_or_path) if self.needs_hidden_states else None
        try:
            self.method = build_aggregator_from_args(flags, hidden_size)
        except (ValueError, TypeError) as err:
            raise AggregatorArgsError(f"{ARGS_FLAG}: {err}") from err
        self.record = aggregator_record(flags, self.method, hidden_size)

    def before_advantages(self, experiences: list, hidden_states: list[torch.Tensor] | None) -> dict[str, float]:
        """Objectives (N, K) -> R (N,) into ``experience.rewards`` and ``info["reward"]``, float32."""
        from openrlhf_maestro.integration.experience import group_ids_of, objective_matrix

        t0 = time.perf_counter()
        rewards = objective_matrix(experiences, self.objectives)
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        hidden = None
        if self.needs_hidden_states:
            if hidden_states is None:
                raise RuntimeError(
                    f"OpenRLHF passed no hidden states to the {self.aggregator!r} aggregator, which sets "
                    "needs_hidden_states: apply patches/openrlhf-0.11.2-reward-aggregator.patch in full"
                )
            hidden = torch.cat(hidden_states)
        out = self.method.aggregate(rewards, group_ids, hidden)
        sizes = [len(e.index) for e in experiences]
        for experience, scalar in zip(experiences, out.rewards.float().split(sizes), strict=True):
            experience.rewards = scalar
            experience.info["reward"] = scalar.clone()
        return {**out.metrics, "maestro/seconds_aggregate": time.perf_counter() - t0}

    def after_advantages(self, experiences: list) -> dict[str, float]:
        """Group-relative advantages (N,) of the final R -> the aggregator's ``feedback`` (the meta-update)."""
        from openrlhf_maestro.integration.experience import group_ids_of, group_relative_advantages

        t0 = time.perf_counter()
        rewards = torch.cat([e.rewards.reshape(-1).float() for e in experiences])  # R after length penalties
        group_ids = group_ids_of(experiences, self.args.rollout.n_samples_per_prompt)
        advantages = group_relative_advantages(rewards, group_ids, self.args.algo.advantage.estimator)
        metrics = self.method.feedback(advantages)
        return {**metrics, "maestro/seconds_feedback": time.perf_counter() - t0}

    def state_dict(self) -> dict:
        """The record that identifies this aggregator and its whole state (``torch.load(weights_only=True)``-safe)."""
        return {**self.record, "state": self.method.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        from openrlhf_maestro.integration.trainer import check_resumable

        check_resumable(state, self.record)
        self.method.load_state_dict(state["state"])


class SumRewardAggregator(MethodAggregatorHook):
    """R = Σ_k w_k r_k with static weights (``--reward.aggregator sum``)."""

    aggregator = "sum"


class GDPORewardAggregator(MethodAggregatorHook):
    """R = Σ_k w_k z_k, z = per-objective z-score inside the group (``--reward.aggregator gdpo``)."""

    aggregator = "gdpo"


class RandomRewardAggregator(MethodAggregatorHook):
    """Ablation: MAESTRO's weights map with a uniform random emphasis per response (``--reward.aggregator random``)."""

    aggregator = "random"


class MaestroRewardAggregator(MethodAggregatorHook):
    """MAESTRO: per-response weights from the Conductor π_φ(·|h), learned from the advantages it produced."""

    aggregator = "maestro"
    needs_hidden_states = True
