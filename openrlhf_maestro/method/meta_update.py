"""The Conductor's outer loop: REINFORCE on the group-relative advantages (the meta-reward).

Buffer (h_ij, a_ij, Â_ij) from every feedback() call; every `update_every` calls take `meta_steps` Adam
steps on

    L(φ) = −mean(Â · log π_φ(a | h)) − λ_ent · mean H(π_φ(·|h))

then clear the buffer (the samples came from the current π_φ: on-policy). Â is group-centred, so it is
its own baseline. A non-finite loss or gradient norm skips the rest of that update (counted, warned once).

Full-information rows (meta_reward='alignment'): when the buffered value is a (M, K) matrix G, with G_i(a) the
value of every action for context h_i (known for every a, not only the sampled one), the loss is the expected
value under π_φ instead of a one-sample estimate of it:

    L(φ) = −mean_i Σ_a π_φ(a | h_i)·G_i(a) − λ_ent · mean H(π_φ(·|h_i))

Its gradient in the logits, π_a·(G_a − Σ_b π_b G_b), is REINFORCE's with the baseline Σ_b π_b G_b averaged over
the action: the same direction in expectation, without the sampling noise of a.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from types import FrameType
from typing import Any

import torch
from torch import Tensor

from openrlhf_maestro.metric_names import GRAD_NORM, META_LOSS, SKIPPED_UPDATES, UPDATES

from .conductor import Conductor, Features


class MetaUpdater:
    """Buffer and optimizer of the Conductor's meta-update.

    Args:
        conductor: the policy π_φ to train.
        lr: Adam learning rate.
        update_every: update after every `update_every` step() calls.
        meta_steps: Adam steps per update.
        entropy_coef: λ_ent >= 0.
        grad_clip: max global grad norm, or None.
    """

    def __init__(
        self,
        conductor: Conductor,
        *,
        lr: float = 3e-4,
        update_every: int = 1,
        meta_steps: int = 1,
        entropy_coef: float = 0.01,
        grad_clip: float | None = 1.0,
    ) -> None:
        self.conductor = conductor
        self.update_every = update_every
        self.meta_steps = meta_steps
        self.entropy_coef = entropy_coef
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.Adam(conductor.parameters(), lr=lr)
        self._features: list[Features] = []
        self._logits: list[Tensor | None] = []
        self._actions: list[Tensor] = []
        self._advantages: list[Tensor] = []
        self.calls_since_update = 0
        self.updates = 0
        self.skipped_updates = 0
        self._warned = False

    def add(self, features: Features, actions: Tensor, advantages: Tensor, logits: Tensor | None = None) -> None:
        """Buffer one rollout batch.

        Args:
            features: Features of N rows (h, 1 / rms(h)).
            actions: (N,) long or (N, K) simplex points.
            advantages: (N,) Â of the sampled actions, or (N, K) values G of every action (full information).
            logits: optional (N, K) head output z with its autograd graph from sampling time; the first meta
                step reuses it (φ has not changed since), saving one (N, H) forward pass.
        """
        self._features.append(features)
        self._logits.append(logits if logits is not None and logits.requires_grad else None)
        self._actions.append(actions.detach())
        self._advantages.append(advantages.detach().to(torch.float32))

    def loss(self, logits: Tensor, actions: Tensor, advantages: Tensor) -> tuple[Tensor, Tensor]:
        """L(φ) = −mean(Â · log π_φ(a|h)) − λ_ent · mean H(π_φ(·|h)), or with (M, K) values G (full information,
        discrete mode) L(φ) = −mean_i Σ_a π_φ(a|h_i)·G_i(a) − λ_ent · mean H(π_φ(·|h_i)).

        Args:
            logits: (M, K) head output z = f_φ(x) (differentiable in φ); actions: (M,) or (M, K); advantages: (M,) Â
                of the sampled actions, or (M, K) G of every action (then `actions` is not read).

        Returns:
            (loss scalar, mean entropy scalar).
        """
        dist = self.conductor.distribution(logits)
        entropy = dist.entropy().mean()
        if advantages.dim() == 2:
            if self.conductor.mode != "discrete":
                raise ValueError("a value per action (M, K) needs the discrete Conductor (mode='discrete')")
            value = (self.conductor.log_probs(logits).exp() * advantages).sum(-1)
            return -value.mean() - self.entropy_coef * entropy, entropy
        return -(advantages * dist.log_prob(actions)).mean() - self.entropy_coef * entropy, entropy

    def step(self) -> dict[str, float]:
        """Count one feedback call; run the update when due.

        Returns:
            `maestro/updates`, `maestro/skipped_updates` always; `maestro/meta_loss` (first step's loss, the
            on-policy estimate) and `maestro/grad_norm` (its pre-clip norm) when an update ran.
        """
        self.calls_since_update += 1
        metrics: dict[str, float] = {}
        if self.calls_since_update >= self.update_every:
            self.calls_since_update = 0
            metrics.update(self._update())
        metrics[UPDATES] = float(self.updates)
        metrics[SKIPPED_UPDATES] = float(self.skipped_updates)
        return metrics

    @torch.enable_grad()  # callers (e.g. OpenRLHF's experience maker) may run under torch.no_grad()
    def _update(self) -> dict[str, float]:
        if not self._features:
            return {}
        chunks, cached = self._features, self._logits
        actions, advantages = _cat(self._actions), _cat(self._advantages)
        self.clear()
        params = [p for p in self.conductor.parameters() if p.requires_grad]
        max_norm = math.inf if self.grad_clip is None else self.grad_clip
        metrics: dict[str, float] = {}
        for step in range(self.meta_steps):
            self.optimizer.zero_grad(set_to_none=True)
            # Per buffered batch, never on a concatenation: the same matmul shapes as at sampling time give
            # bit-identical logits whether they come from the cache or from a resumed run's recomputation.
            reuse = [z if step == 0 else None for z in cached]
            logits = _cat([self.conductor(f) if z is None else z for f, z in zip(chunks, reuse, strict=True)])
            loss, _ = self.loss(logits, actions, advantages)
            loss_value = float(loss.detach())
            if step == 0:
                metrics[META_LOSS] = loss_value
            if not math.isfinite(loss_value):
                self._skip(f"non-finite meta-loss {loss_value}")
                return metrics
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if step == 0:
                metrics[GRAD_NORM] = grad_norm
            if not math.isfinite(grad_norm):
                self._skip(f"non-finite Conductor gradient norm {grad_norm}")
                return metrics
            self.optimizer.step()
        self.updates += 1
        return metrics

    def _skip(self, reason: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"MAESTRO Conductor update skipped: {reason} (non-finite advantages?). Further skips are only "
                "counted in maestro/skipped_updates.",
                RuntimeWarning,
                stacklevel=_stacklevel_outside(sys._getframe()),
            )

    def clear(self) -> None:
        """Drop the buffered samples."""
        self._features, self._logits, self._actions, self._advantages = [], [], [], []

    def state_dict(self) -> dict:
        """Optimizer, buffer and counters (tensors, lists, numbers only: loadable with weights_only=True).

        The cached sampling-time logits are left out (they are recomputed, bit-identically, after a resume).
        """
        return {
            "optimizer": _clone(self.optimizer.state_dict()),
            "features": [[f.hidden, f.scale] for f in self._features],
            "actions": list(self._actions),
            "advantages": list(self._advantages),
            "calls_since_update": self.calls_since_update,
            "updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "warned": self._warned,
        }

    def load_state_dict(self, state: dict) -> None:
        # Adam keeps loaded tensors as they are: clone so two optimizers never share exp_avg/exp_avg_sq.
        self.optimizer.load_state_dict(_clone(state["optimizer"]))
        self._features = [Features(hidden, scale) for hidden, scale in state["features"]]
        self._logits = [None] * len(self._features)  # graphs are not saved; recomputed bit-identically
        self._actions = list(state["actions"])
        self._advantages = list(state["advantages"])
        self.calls_since_update = int(state["calls_since_update"])
        self.updates = int(state["updates"])
        self.skipped_updates = int(state["skipped_updates"])
        self._warned = bool(state["warned"])


def _cat(tensors: list[Tensor]) -> Tensor:
    # Avoid a copy of the (N, H) features in the usual update_every=1 case.
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _clone(obj: Any) -> Any:
    """Deep copy of the tensors in nested dicts/lists/tuples (in-place optimizer updates must not leak)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _stacklevel_outside(frame: FrameType) -> int:
    """``warnings.warn``'s stacklevel, called from ``frame``, of the first frame outside method/ and torch (whose
    ``enable_grad`` wraps ``_update``): the code that called ``feedback`` (the hook, a test), however many frames
    the method and its decorators add in between."""
    inside = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(torch.__file__) + os.sep)
    level = 1  # the frame that calls warnings.warn
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    return level
