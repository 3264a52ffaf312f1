"""The model channels' values for one rollout batch, from OpenRLHF's own model groups (both paths).

``AggregatorHook.before_advantages`` calls ``compute_model_channels`` with the experience maker OpenRLHF (or
the launcher's subclass) hands it. Per channel source (``openrlhf_maestro.channels``):

- ``policy_logits``: already read during the experience maker's policy forward by the ``PolicyProbe``;
  here only concatenated from ``policy_outputs``;
- ``policy_forward``: one batched teacher-forced forward per micro-batch through OpenRLHF's own
  ``PolicyModelActor.forward`` (``RemoteExperienceMaker._dispatch_forward``, experience_maker.py 100-106),
  on rows the channel builds; the mean NLL of the scored tokens goes to ``channel.from_nll``;
- ``reward_model``: the score OpenRLHF put in ``info["reward_model"]`` when it ran its reward model beside the
  reward function (``patches/openrlhf-0.11.2-reward-model-beside-reward-function.patch``); else OpenRLHF's
  ``RewardModelActor.forward`` on the experience maker's ``reward_model_group``, with the arguments OpenRLHF's
  own reward-model dispatch uses (141-150).
"""

from __future__ import annotations

import time

import torch

from openrlhf_maestro.channels import ModelChannel, reference_batch
from openrlhf_maestro.metric_names import CHANNEL_SECONDS, model_channel_key
from openrlhf_maestro.spec import AggregatorSpec

REWARD_MODEL_KEY = "reward_model"  # info key of the reward model's score beside a reward function (the patch)


class ChannelInputError(ValueError):
    """A model channel cannot be computed from what this run provides (names the flag that fixes it)."""


def compute_model_channels(
    spec: AggregatorSpec,
    experiences: list,
    policy_outputs: list[dict[str, torch.Tensor]] | None,
    experience_maker,
    group_ids: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(N,) values of every model channel among ``spec.objectives``, in experience order, and logs: each
    channel's own figures and its cost, as ``model_channel/<channel>/<name>``."""
    values: dict[str, torch.Tensor] = {}
    logs: dict[str, float] = {}
    for name in spec.model_channels:
        channel = spec.channel(name)
        if channel.source == "policy_logits":
            if policy_outputs is None:
                raise RuntimeError(
                    f"OpenRLHF passed no policy outputs for the {name!r} channel: apply "
                    "patches/openrlhf-0.11.2-policy-probe.patch, or use the plugin's launcher"
                )
            values[name] = torch.cat([o[name] for o in policy_outputs])
        elif channel.source == "policy_forward":
            t0 = time.perf_counter()
            nll = teacher_forced_nll(channel, experiences, experience_maker)
            values[name], channel_logs = channel.from_nll(nll, group_ids)
            logs.update({model_channel_key(name, k): v for k, v in channel_logs.items()})
            logs[model_channel_key(name, CHANNEL_SECONDS)] = time.perf_counter() - t0
        else:
            values[name] = reward_model_scores(name, experiences, experience_maker)
    return values, logs


def _copies(experience_maker) -> int:
    """Actors per data chunk (ring attention x tensor parallel): their results are duplicates."""
    args = experience_maker.strategy.args
    return args.ds.ring_attn_size * args.ds.tensor_parallel_size


def _colocated(experience_maker) -> bool:
    args = experience_maker.strategy.args
    return bool(args.train.colocate_all or args.train.colocate_actor_ref)


def teacher_forced_nll(channel: ModelChannel, experiences: list, experience_maker) -> torch.Tensor:
    """(N,) mean NLL of the tokens ``channel.rows`` scores, given prompt + its context, one forward per
    micro-batch through OpenRLHF's ``PolicyModelActor.forward``."""
    tok = experience_maker.tokenizer
    max_len = experience_maker.strategy.args.data.max_len

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    batches: dict[str, list[torch.Tensor]] = {"sequences": [], "action_mask": [], "attention_mask": []}
    for experience in experiences:
        prompts, contexts, scored, tails = [], [], [], []
        seq_len, num_actions = experience.sequences.shape[1], experience.action_mask.shape[1]
        for b in range(experience.sequences.shape[0]):
            label = experience.labels[b] if b < len(experience.labels) else None
            if channel.needs_label and not label:
                raise ChannelInputError(
                    f"the {channel.name} channel needs each prompt's reference answer, but response {b} has an "
                    "empty label: pass --data.label_key with the dataset's reference field"
                )
            actions = experience.action_mask[b].nonzero().flatten()
            start = seq_len - num_actions + int(actions[0])
            end = seq_len - num_actions + int(actions[-1]) + 1
            row = experience.sequences[b]
            context, target, tail = channel.rows(tok.decode(row[start:end], skip_special_tokens=True), label, ids)
            prompts.append(row[:start].tolist())
            contexts.append(context)
            scored.append(target)
            tails.append(tail)
        seqs, attn, act = reference_batch(prompts, contexts, scored, tails, tok.pad_token_id, max_len)
        batches["sequences"].append(seqs)
        batches["attention_mask"].append(attn)
        batches["action_mask"].append(act)
    refs = experience_maker._dispatch_forward(
        experience_maker.actor_model_group, _colocated(experience_maker), **batches
    )
    log_probs = experience_maker._flatten_results(refs, _copies(experience_maker))
    nll = []
    for lp, mask in zip(log_probs, batches["action_mask"], strict=True):
        mask = mask.float()  # OpenRLHF's forward returns log_probs[:, -A:] * action_mask, A = T - 1 here
        nll.append(-(lp.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))
    return torch.cat(nll)


def reward_model_scores(name: str, experiences: list, experience_maker) -> torch.Tensor:
    """(N,) scalar scores of OpenRLHF's reward model group, as its own reward-model dispatch computes them."""
    if all(REWARD_MODEL_KEY in e.info for e in experiences):  # OpenRLHF already ran it on these responses
        return torch.cat([e.info[REWARD_MODEL_KEY].reshape(-1).float() for e in experiences])
    group = getattr(experience_maker, "reward_model_group", None)
    if group is None:
        raise ChannelInputError(
            f"the {name!r} channel reads a reward model, but OpenRLHF started none: pass "
            "--reward.model_name_or_path (beside --reward.remote_url) with the reward aggregator on; a patched "
            "OpenRLHF also needs patches/openrlhf-0.11.2-reward-model-beside-reward-function.patch"
        )
    refs = experience_maker._dispatch_forward(
        group,
        bool(experience_maker.strategy.args.train.colocate_all),
        sequences=[e.sequences for e in experiences],
        attention_mask=[e.attention_mask for e in experiences],
        pad_sequence=[True] * len(experiences),
    )
    scores = experience_maker._flatten_results(refs, _copies(experience_maker))
    return torch.cat([s.reshape(-1).float() for s in scores])
