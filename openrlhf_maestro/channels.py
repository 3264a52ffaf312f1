"""Model channels: objectives the plugin computes from the models instead of the reward function.

A channel is named in ``--reward.objectives`` like any other objective (the reward function must then not
report it). Each is a small class that declares where its value comes from and what that costs:

    source          what the integration runs for it
    policy_logits   nothing extra: ``per_token`` maps the (temperature-scaled) logits of the experience maker's
                    policy forward, which runs anyway, to one value per position (``per_token_in_chunks``
                    runs it on the model's bf16 logits a chunk of positions at a time); the ``PolicyProbe``
                    (``openrlhf_maestro.probe``) averages it over each response's tokens
    policy_forward  one batched teacher-forced forward of the policy per step on rows the channel builds
                    (``rows``); ``from_nll`` turns the mean NLL of the scored tokens into the objective
    reward_model    one forward of an OpenRLHF reward model (``--reward.model_name_or_path``) per response

Built in:

- ``entropy`` (policy_logits): mean token entropy of the response under the policy at the rollout temperature;
- ``perplexity`` (policy_forward): NOVER's reasoning perplexity. The policy reads prompt + the response's
  reasoning (up to and including ``reasoning_end``) + ``reference_template`` with the dataset label filled in;
  the per-token NLL of the reference gives ppl = exp(mean NLL), and the objective is the response's rank in its
  group, 1 for the lowest perplexity and 0 for the highest (ties share their mean rank), as NOVER rewards it;
- ``preference`` (reward_model): the scalar score of OpenRLHF's ``RewardModelActor``.

New channels register with ``@register_channel("name")`` in a module or file given to ``--reward.plugins``.
Pure torch: no OpenRLHF import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

SOURCES = ("policy_logits", "policy_forward", "reward_model")
_CHANNELS: dict[str, type[ModelChannel]] = {}


class ModelChannel:
    """One model channel (module docstring). ``options`` override ``option_defaults``; unknown ones raise."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    cost: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, str]] = {}
    needs_label: ClassVar[bool] = False  # rows() reads the dataset label (--data.label_key)

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            raise ValueError(
                f"channel {self.name!r} has no options {unknown}; it reads {list(self.option_defaults) or 'none'}"
            )
        self.options = {**self.option_defaults, **options}

    def per_token(self, logits: torch.Tensor) -> torch.Tensor:
        """policy_logits: (.., T, V) float32 logits / rollout temperature -> (.., T) value per position (any
        layout, padded or packed: a position's value may depend on that position's logits only)."""
        raise NotImplementedError

    def per_token_in_chunks(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """policy_logits: (.., T, V) logits in any float dtype (the model's bf16), NOT yet divided by the
        temperature -> (.., T) float32, equal to ``per_token(logits.float() / temperature)``.

        Computed ``chunk_rows`` positions at a time, since a position's value depends on its own logits only:
        the float32 copy never exceeds one chunk, so reading a channel adds no full-size copy of the logits.
        Override it (as ``entropy`` does) when the channel has a leaner chunked form."""
        flat = logits.detach().reshape(-1, logits.shape[-1])
        out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
        step = chunk_rows(flat.shape[0])
        for start in range(0, flat.shape[0], step):
            piece = _scaled_float32(flat[start : start + step], temperature)
            out[start : start + step] = self.per_token(piece.unsqueeze(0)).reshape(-1).float()
        return out.reshape(logits.shape[:-1])

    def rows(
        self, response: str, label: str, tokenize: Callable[[str], list[int]]
    ) -> tuple[list[int], list[int], list[int]]:
        """policy_forward: the ids after the prompt, as (context, scored, tail); only ``scored`` is measured."""
        raise NotImplementedError

    def from_nll(self, nll: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """policy_forward: (N,) mean NLL of the scored tokens -> (N,) objective values and metrics to log (short
        names: the integration logs each as ``model_channel/<channel>/<name>``)."""
        raise NotImplementedError


def register_channel(name: str) -> Callable[[type[ModelChannel]], type[ModelChannel]]:
    """Class decorator: register a ModelChannel under ``name`` (the objective name that selects it)."""

    def decorator(cls: type[ModelChannel]) -> type[ModelChannel]:
        if cls.source not in SOURCES:
            raise ValueError(f"channel {name!r}: source must be one of {SOURCES}, got {cls.source!r}")
        existing = _CHANNELS.get(name)
        if existing is not None and f"{existing.__module__}.{existing.__qualname__}" != (
            f"{cls.__module__}.{cls.__qualname__}"
        ):
            raise ValueError(f"channel {name!r} is already registered to {existing.__qualname__}")
        cls.name = name
        _CHANNELS[name] = cls
        return cls

    return decorator


def is_channel(name: str) -> bool:
    return name in _CHANNELS


def get_channel(name: str) -> type[ModelChannel]:
    if name not in _CHANNELS:
        raise ValueError(f"unknown model channel {name!r}; registered: {available_channels()}")
    return _CHANNELS[name]


def available_channels() -> list[str]:
    return sorted(_CHANNELS)


CHUNK_ROWS = 256  # positions per chunk at most: 256 x 151,936 float32 logits = 148 MiB
CHUNK_PARTS = 16  # and at least this many chunks, so short batches stay small too


def chunk_rows(rows: int) -> int:
    """Positions per chunk when a channel reads ``rows`` positions of logits: min(CHUNK_ROWS, ceil(rows / 16)).

    Why: a chunk makes about four float32 temporaries (the upcast, exp, the product, a reduction's scratch),
    i.e. 4 x 4 bytes x rows / 16 = 1 byte per logit at most, while the probe runs inside ``lm_head``'s forward
    where only the bf16 logits (2 bytes per logit) are alive; OpenRLHF's own peak comes later, when it upcasts
    them to float32 (bf16 + float32 = 6 bytes per logit). So the channels never raise the forward's peak."""
    return max(1, min(CHUNK_ROWS, -(-rows // CHUNK_PARTS)))


def _scaled_float32(piece: torch.Tensor, temperature: float) -> torch.Tensor:
    """A float32 copy of ``piece`` divided by ``temperature``: upcast, then divide, as OpenRLHF's Actor.forward
    does (actor.py 265-270), so the values equal those of its float32 logits; never a view of the caller's."""
    out = piece.to(torch.float32, copy=True)
    if temperature != 1.0:
        out.div_(temperature)
    return out


def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """(.., T, V) logits in any float dtype -> (.., T) float32 entropy of softmax(float32(logits) / temperature),
    H = logsumexp(x) - sum softmax(x) x, ``chunk`` positions at a time (default ``chunk_rows``), so the float32
    copy never exceeds (chunk, V)."""
    flat = logits.detach().reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    step = chunk or chunk_rows(flat.shape[0])
    for start in range(0, flat.shape[0], step):
        piece = _scaled_float32(flat[start : start + step], temperature)
        lse = torch.logsumexp(piece, -1)
        out[start : start + step] = lse - (torch.softmax(piece, -1) * piece).sum(-1)
    return out.reshape(logits.shape[:-1])


def response_mean(per_position: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) values per position, (B, A) action mask -> (B,) mean over the positions predicting a response token.

    Position p predicts token p + 1 and action index i predicts token T - A + i, so the actions are read at
    positions T - 1 - A .. T - 2.
    """
    seq_len, num_actions = per_position.shape[1], action_mask.shape[1]
    values = per_position[:, seq_len - 1 - num_actions : seq_len - 1]
    mask = action_mask.to(values.device).float()
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def group_rank(values: torch.Tensor, group_ids: torch.Tensor, higher_is_better: bool) -> torch.Tensor:
    """(N,) values -> (N,) rank within each group scaled to [0, 1] (1 = best); ties share their mean rank."""
    out = torch.empty(values.shape[0], dtype=torch.float32)
    for gid in torch.unique(group_ids):
        rows = (group_ids == gid).nonzero().flatten()
        v = values[rows].double()
        key = v if higher_is_better else -v
        # rank = number below + (number equal - 1) / 2, i.e. the mean of the tied ranks
        below = (key.unsqueeze(0) < key.unsqueeze(1)).sum(dim=1).double()
        equal = (key.unsqueeze(0) == key.unsqueeze(1)).sum(dim=1).double()
        rank = below + (equal - 1) / 2
        out[rows] = (rank / max(len(rows) - 1, 1)).float()
    return out


def reasoning_text(response: str, reasoning_end: str) -> str:
    """The response up to and including the first ``reasoning_end``; the whole response if it has none."""
    cut = response.find(reasoning_end)
    return response if cut < 0 else response[: cut + len(reasoning_end)]


def reference_batch(
    prompt_ids: list[list[int]],
    reasoning_ids: list[list[int]],
    reference_ids: list[list[int]],
    suffix_ids: list[list[int]],
    pad_id: int,
    max_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forced rows prompt + reasoning + reference + suffix, right-padded.

    Returns sequences (B, T), attention_mask (B, T) and action_mask (B, T - 1) marking the predictions of the
    reference tokens (OpenRLHF's layout: action index i predicts token i + 1). When a row exceeds ``max_len``
    the reasoning is cut from its start, so the prompt and the whole reference always stay.
    """
    rows, marks = [], []
    for prompt, reasoning, reference, suffix in zip(prompt_ids, reasoning_ids, reference_ids, suffix_ids, strict=True):
        overflow = len(prompt) + len(reasoning) + len(reference) + len(suffix) - max_len
        if overflow > 0:
            reasoning = reasoning[min(overflow, len(reasoning)) :]
        head = prompt + reasoning
        rows.append(head + reference + suffix)
        marks.append((len(head), len(head) + len(reference)))
    width = max(len(r) for r in rows)
    sequences = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    action = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for b, (row, (start, end)) in enumerate(zip(rows, marks, strict=True)):
        sequences[b, : len(row)] = torch.tensor(row)
        attention[b, : len(row)] = 1
        action[b, start - 1 : end - 1] = True  # predictions of tokens start .. end - 1
    return sequences, attention, action


@register_channel("entropy")
class EntropyChannel(ModelChannel):
    """Mean over the response's tokens of H(softmax(logits / T)), in nats, T = the rollout temperature."""

    source = "policy_logits"
    cost = "none extra: read from the logits of the policy forward that runs anyway"

    def per_token(self, logits: torch.Tensor) -> torch.Tensor:
        return token_entropy(logits)

    def per_token_in_chunks(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return token_entropy(logits, temperature)


@register_channel("perplexity")
class PerplexityChannel(ModelChannel):
    """NOVER's reasoning perplexity of the reference answer, as a rank within the group (1 = lowest)."""

    source = "policy_forward"
    cost = "one batched teacher-forced policy forward per step (prompt + reasoning + reference)"
    option_defaults = {"reasoning_end": "</think>", "reference_template": "\n\n<answer>\n{reference}\n</answer>"}
    needs_label = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if "{reference}" not in self.options["reference_template"]:
            raise ValueError(
                f"the perplexity channel's reference_template must contain {{reference}}: "
                f"{self.options['reference_template']!r}"
            )

    def rows(self, response, label, tokenize):
        prefix, _, suffix = self.options["reference_template"].partition("{reference}")
        return (
            tokenize(reasoning_text(response, self.options["reasoning_end"]) + prefix),
            tokenize(label),
            tokenize(suffix),
        )

    def from_nll(self, nll, group_ids):
        return group_rank(nll, group_ids, higher_is_better=False), {"mean": float(nll.exp().mean())}


@register_channel("preference")
class PreferenceChannel(ModelChannel):
    """The scalar score of an OpenRLHF reward model (--reward.model_name_or_path) beside the reward function."""

    source = "reward_model"
    cost = "one reward-model forward per response on its own actor group"
