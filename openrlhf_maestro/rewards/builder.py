"""`make_reward_func`: build OpenRLHF's `reward_func(queries, prompts, labels, **kwargs)` from named objectives.

OpenRLHF 0.11.2 loads `reward_func` from the file given to `--reward.remote_url file.py` and calls it inside
the vLLM rollout actor once per response (lists of length one), from worker threads. It swallows any exception
the function raises (utils/agent.py 303–304, logged at INFO) and leaves that response's reward None. So this
wrapper checks everything it can and raises with a message that names the objective, the value and the start
of the response: that message is what reaches the log.

Each objective k is reported as one Python float in `extra_logs["obj/<name>"]`, which the plugin reads and
scalarizes; `rewards` and `scores` are the unweighted mean (1/K)·Σ_k r_k, which only OpenRLHF's own
printing, eval and dynamic filtering use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

from openrlhf_maestro.metric_names import OBJECTIVE_PREFIX

from .text import split_response

Objective = Callable[[str, str], float]
"""An objective: (response, label) -> a real, finite number. Must be thread-safe."""

_PREVIEW_CHARS = 80


class ObjectiveError(RuntimeError):
    """An objective function raised; the message names the objective and the start of the response."""


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"objective names must be non-empty Python identifiers (letters, digits, '_'; no '/' or '-'), "
            f"got {name!r}; they become the extra_logs keys '{OBJECTIVE_PREFIX}<name>'"
        )
    return name


def _as_float(name: str, value: Any) -> float:
    """`value` as a Python float if it is one real, finite number; else ValueError naming `name` and `value`."""
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):  # numpy / torch booleans too
        raise ValueError(f"objective {name!r} returned a bool ({value!r}); return float(...) to make 0/1 explicit")
    if isinstance(value, Real):
        out = float(value)
    elif getattr(value, "ndim", None) == 0 and hasattr(value, "__float__"):
        out = float(value)  # a 0-dim torch tensor or numpy array
    else:
        raise ValueError(f"objective {name!r} returned {value!r} ({type(value).__name__}); expected a real number")
    if not math.isfinite(out):
        raise ValueError(f"objective {name!r} returned a non-finite value {value!r}; expected a finite number")
    return out


def make_reward_func(
    objectives: Mapping[str, Objective], *, split: Callable[[str, str], str] = split_response
) -> Callable[..., dict[str, Any]]:
    """OpenRLHF's `reward_func` computing every objective on each response.

    For each i: response_i = split(queries[i], prompts[i]); r_ik = objectives[k](response_i, labels[i]).

    Args:
        objectives: name -> objective, in the order the objectives are logged; at least one. Names are
            Python identifiers; each becomes `extra_logs["obj/<name>"]`.
        split: (query, prompt) -> response; the default `split_response` strips the prompt and trailing
            ChatML/Llama end markers.

    Returns:
        `reward_func(queries, prompts, labels, **kwargs)` (extra kwargs are ignored). For one response (what
        OpenRLHF 0.11.2 always sends) it returns
            {"rewards": m, "scores": m, "extra_logs": {"obj/<name>": r_k, ...}},  m = (1/K)·Σ_k r_k,
        all Python floats; for n > 1 responses each value is a list of n floats (the remote-RM batch shape).
        The function carries `objective_names`, the names in order.

    Raises (from the returned function):
        ObjectiveError: an objective raised; chained to the original exception.
        ValueError: an objective returned something other than one real, finite number (None, NaN, inf, a
            string, a bool, a tensor with more than one element), or the three lists differ in length or are empty.
    """
    if not isinstance(objectives, Mapping) or not objectives:
        raise ValueError(f"objectives must be a non-empty mapping name -> callable, got {objectives!r}")
    for name, fn in objectives.items():
        _check_name(name)
        if not callable(fn):
            raise ValueError(f"objective {name!r} must be callable (response, label) -> float, got {fn!r}")
    if not callable(split):
        raise ValueError(f"split must be callable (query, prompt) -> response, got {split!r}")
    table = dict(objectives)  # a snapshot: later edits to the caller's dict do not change the reward

    def score(query: str, prompt: str, label: str) -> dict[str, float]:
        response = split(query, prompt)
        values = {}
        for name, fn in table.items():
            try:
                value = fn(response, label)
            except Exception as exc:
                preview = response[:_PREVIEW_CHARS] + ("…" if len(response) > _PREVIEW_CHARS else "")
                raise ObjectiveError(
                    f"objective {name!r} raised {type(exc).__name__}: {exc} (response starts {preview!r})"
                ) from exc
            values[name] = _as_float(name, value)
        return values

    def reward_func(
        queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str], **kwargs: Any
    ) -> dict[str, Any]:
        if not len(queries) == len(prompts) == len(labels) > 0:
            raise ValueError(
                f"reward_func needs equal, non-zero numbers of queries, prompts and labels, got "
                f"{len(queries)}, {len(prompts)}, {len(labels)}"
            )
        rows = [score(q, p, lab) for q, p, lab in zip(queries, prompts, labels, strict=True)]
        means = [sum(row.values()) / len(row) for row in rows]
        logs = {OBJECTIVE_PREFIX + name: [row[name] for row in rows] for name in table}
        if len(rows) == 1:
            return {"rewards": means[0], "scores": means[0], "extra_logs": {k: v[0] for k, v in logs.items()}}
        return {"rewards": means, "scores": list(means), "extra_logs": logs}

    reward_func.objective_names = tuple(table)
    return reward_func
