"""The reward channels that need the models: ``entropy``, ``perplexity`` and ``preference``.

Declared in ``--reward.objectives`` like any other objective, but computed by the plugin instead of the
reward function (which must then not report them):

- ``entropy``: mean token entropy of the response under the policy (at the rollout temperature), in nats,
  from the logits of the experience maker's actor forward, which runs anyway;
- ``perplexity``: NOVER's reasoning perplexity. The policy reads prompt + the response's reasoning (up to and
  including ``--perplexity.reasoning_end``) + ``--perplexity.reference_template`` with the dataset label filled in,
  in one batched teacher-forced forward per step; the per-token NLL of the reference gives
  ppl = exp(mean NLL), and the channel is the response's rank within its group, 1 for the lowest perplexity
  and 0 for the highest (ties share their mean rank), as NOVER turns perplexity into a reward;
- ``preference``: the scalar score of an OpenRLHF reward model (``--reward.model_name_or_path``), run by
  OpenRLHF's own ``RewardModelActor`` beside the reward function.
"""

from __future__ import annotations

import torch
from openrlhf.models.utils import compute_entropy

MODEL_CHANNELS = ("entropy", "perplexity", "preference")


def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk: int = 256) -> torch.Tensor:
    """(B, T, V) logits -> (B, T) float32 entropy of softmax(logits / temperature), ``chunk`` positions at a time
    so the float32 copy of the logits never exceeds (B, chunk, V)."""
    out = torch.empty(logits.shape[:2], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[1], chunk):
        piece = logits[:, start : start + chunk].float()
        if temperature != 1.0:
            piece = piece / temperature
        out[:, start : start + chunk] = compute_entropy(piece)
    return out


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
