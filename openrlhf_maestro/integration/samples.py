"""The reward function's objective values, checked before OpenRLHF turns them into tensors.

OpenRLHF 0.11.2's ``SamplesGenerator._process_response_into_experience`` (ppo_utils/samples_generator.py
286-291) runs ``torch.tensor([value])`` on every ``extra_logs`` value. A string or None there stops the run
with "too many dimensions 'str'" (or a TypeError) that names neither the key nor the prompt, and a list
becomes a (1, K) tensor that crashes ``training_step`` later. ``ObjectiveCheckingSamplesGenerator`` checks
each declared ``obj/<name>`` first: one real number (int, float, or a one-element tensor; not a bool) passes unchanged.
Anything else stops the step with an error naming the key, the value, its type and the prompt, or, with
``--reward.failure_policy`` other than ``stop``, is replaced by NaN, so that the hook drops that response (zero
advantage, ``reward/dropped_samples``) or, under ``skip_objective``, leaves that objective out of its reward
(``reward/skipped/<name>``), like any other missing value.
"""

from __future__ import annotations

import logging
import math
from numbers import Real

import torch
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from openrlhf_maestro.integration.hook import InvalidSampleError
from openrlhf_maestro.metric_names import objective_key

logger = logging.getLogger(__name__)


def is_one_number(value: object) -> bool:
    """True for an int/float (not a bool) or a one-element non-bool tensor; NaN counts (it is checked later)."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and value.dtype != torch.bool
    return isinstance(value, Real) and not isinstance(value, bool)


def malformed_objectives(extra_logs: dict, objectives: list[str]) -> dict[str, object]:
    """``obj/<name>`` -> value, for every declared objective present in ``extra_logs`` that is not one number.

    Missing keys are not reported here; the experience maker names them with the keys that were reported.
    """
    keys = [objective_key(name) for name in objectives]
    return {key: extra_logs[key] for key in keys if key in extra_logs and not is_one_number(extra_logs[key])}


class ObjectiveCheckingSamplesGenerator(SamplesGenerator):
    """OpenRLHF's SamplesGenerator that refuses (or, when asked, drops) malformed objective values.

    Args (beyond SamplesGenerator's):
        objectives: the objective names the reward function reports (``--reward.objectives`` minus the
            model channels the plugin computes).
        drop_invalid: the failure policy is not ``stop`` (``AggregatorSpec.drop_invalid_samples``).
    """

    def __init__(
        self, *args, objectives: list[str], drop_invalid: bool, filter_weights: list[float] | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.objectives = list(objectives)
        self.drop_invalid = drop_invalid
        self.filter_weights = filter_weights
        self._warned: set[tuple[str, str]] = set()

    def _process_response_into_experience(self, response, **generate_kwargs):
        extra_logs = response.get("extra_logs") or {}
        bad = malformed_objectives(extra_logs, self.objectives)
        if bad:
            shown = ", ".join(f"{k} = {v!r} ({type(v).__name__})" for k, v in bad.items())
            where = f"prompt {str(response.get('prompt', ''))[-120:]!r}"
            if not self.drop_invalid:
                raise InvalidSampleError(
                    f"the reward function returned {shown} for {where}: each {objective_key('<name>')} in extra_logs "
                    "must be one number (a float, an int or a one-element tensor). Fix the reward function, or pass "
                    "--reward.failure_policy drop_response (zero advantage for such responses) or skip_objective "
                    "(leave out only that objective)."
                )
            for key, value in bad.items():
                if (key, type(value).__name__) not in self._warned:
                    self._warned.add((key, type(value).__name__))
                    logger.warning("dropping responses whose %s is not one number (first seen: %s)", key, shown)
            response = {**response, "extra_logs": {**extra_logs, **dict.fromkeys(bad, math.nan)}}
        if self.filter_weights is not None:  # --reward.filter_score aggregator_weights
            response = {
                **response,
                "scores": weighted_score(response["extra_logs"], self.objectives, self.filter_weights),
            }
        return super()._process_response_into_experience(response, **generate_kwargs)


def weighted_score(extra_logs: dict, objectives: list[str], weights: list[float]) -> float:
    """Σ_k w_k r_k / Σ_k w_k over the objectives the response has (finite, one number); NaN if none (a NaN score
    is outside every --algo.dynamic_filtering_range, so OpenRLHF filters that response's group out)."""
    total = weight = 0.0
    for name, w in zip(objectives, weights, strict=True):
        value = extra_logs.get(objective_key(name))
        if is_one_number(value):
            value = float(value.flatten()[0]) if isinstance(value, torch.Tensor) else float(value)
            if math.isfinite(value):
                total, weight = total + w * value, weight + w
    return total / weight if weight else math.nan
