"""``PPOTrainer`` (the CPU controller actor, ppo_trainer.py 449) with a reward aggregator.

Extends OpenRLHF's trainer with ``super()`` calls only:
- ``__init__``: builds the aggregator from the flags and swaps in ``MaestroExperienceMaker`` and
  ``MaestroSamplesGenerator`` (objective values checked before OpenRLHF tensorizes them);
- ``train_step``: adds the aggregator's metrics to the step's ``status`` (wandb ``train/<key>``, TensorBoard);
- ``save_logs_and_checkpoints``: puts the aggregator's state into the checkpoint's ``client_states``;
- ``init_checkpoint_states``: restores it on ``--ckpt.load_enable`` (and writes what it restored to
  ``<ckpt.path>/reward_aggregator_restored.pt``);
- ``fit``: at the end writes the aggregator standalone next to the model (``reward_aggregator.pt`` / ``.json``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_maestro.integration.experience import MaestroExperienceMaker
from openrlhf_maestro.integration.flags import maestro_config_from, parse_list
from openrlhf_maestro.integration.samples import MaestroSamplesGenerator
from openrlhf_maestro.method import (
    MaestroAggregator,
    MaestroConfig,
    RandomEmphasisAggregator,
    RewardAggregator,
    build_aggregator,
)

logger = logging.getLogger(__name__)

CLIENT_STATE_KEY = "maestro"
STANDALONE_NAME = "reward_aggregator"
RANDOM_OPTIONS = ("beta", "normalization", "norm_eps", "seed")  # the --maestro.* options `random` reads


def hidden_size_of(pretrain: str) -> int:
    """H of the policy: ``hidden_size`` of its (text) config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pretrain, trust_remote_code=True)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def build_aggregator_from_args(args, hidden_size: int | None) -> RewardAggregator:
    """The aggregator ``--reward.aggregator/objectives/weights`` and ``--maestro.*`` describe (nested args)."""
    objectives = parse_list(args.reward.objectives)
    weights = [float(w) for w in parse_list(args.reward.weights)] or None
    if args.reward.aggregator == "maestro":
        return MaestroAggregator(objectives, maestro_config_from(args, weights), hidden_size=hidden_size)
    if args.reward.aggregator == "random":  # the ablation shares maestro's weights map and normalization options
        config = maestro_config_from(args, weights)
        return RandomEmphasisAggregator(objectives, weights, **{k: getattr(config, k) for k in RANDOM_OPTIONS})
    return build_aggregator(args.reward.aggregator, objectives, weights=weights)


def check_resumable(saved: dict, current: dict) -> None:
    """Refuse to load an aggregator state saved for another aggregator, other objectives or another model width."""
    for key in ("aggregator", "objectives", "hidden_size"):
        if saved.get(key) != current.get(key):
            raise ValueError(
                f"cannot resume: the checkpoint's reward aggregator has {key}={saved.get(key)!r}, this run's has "
                f"{current.get(key)!r}; resume with the same aggregator flags and model, or start a new --ckpt.path"
            )


def start_preference_model(strategy):
    """OpenRLHF's own ``RewardModelActor`` group for the ``preference`` channel.

    OpenRLHF creates no reward model when a reward function is given (cli/train_ppo_ray.py 131-140); the
    plugin needs both, so it starts the group here with OpenRLHF's flags: ``--reward.model_name_or_path``,
    ``--reward.num_nodes``, ``--reward.num_gpus_per_node``, ``--reward.offload``, ``--reward.normalize_enable``.
    """
    from openrlhf.trainer.ray.launcher import RayActorGroup, RewardModelActor

    a = strategy.args
    group = RayActorGroup(
        a.reward.num_nodes,
        a.reward.num_gpus_per_node,
        RewardModelActor,
        pg=None,
        num_gpus_per_actor=1,
        duplicate_actors=a.ds.ring_attn_size * a.ds.tensor_parallel_size,
    )
    ray.get(group.async_init_model_from_pretrained(strategy, a.reward.model_name_or_path))
    return group


def aggregator_record(args, aggregator: RewardAggregator, hidden_size: int | None) -> dict:
    """What identifies an aggregator's state: checked on resume, written beside the standalone file."""
    record = {
        "aggregator": args.reward.aggregator,
        "objectives": list(aggregator.objectives),
        "weights": parse_list(args.reward.weights) or None,
        "hidden_size": hidden_size,
        "num_objectives": len(aggregator.objectives),
    }
    if isinstance(aggregator, MaestroAggregator):
        record["context"] = args.maestro.context
        record["config"] = aggregator.config.to_dict()
    elif isinstance(aggregator, RandomEmphasisAggregator):
        record["config"] = {k: getattr(args.maestro, k) for k in RANDOM_OPTIONS}
    return record


class _MaestroPPOTrainer(PPOTrainer.__ray_actor_class__):
    def __init__(self, pretrain, strategy, *args, **kwargs) -> None:
        super().__init__(pretrain, strategy, *args, **kwargs)
        hidden_size = hidden_size_of(pretrain) if self.args.reward.aggregator == "maestro" else None
        self.aggregator = build_aggregator_from_args(self.args, hidden_size)
        self.aggregator_record = aggregator_record(self.args, self.aggregator, hidden_size)
        preference_group = start_preference_model(strategy) if "preference" in self.aggregator.objectives else None
        self.experience_maker = MaestroExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
            aggregator=self.aggregator,
            preference_group=preference_group,
        )
        # Same dataloaders, tokenizer and engines; objective values are checked before OpenRLHF tensorizes them.
        previous = self.samples_generator
        self.samples_generator = MaestroSamplesGenerator(
            strategy=strategy,
            prompts_dataloader=previous.prompts_dataloader,
            eval_dataloader=previous.eval_dataloader,
            tokenizer=previous.tokenizer,
            vllm_engines=previous.vllm_engines,
            objectives=self.experience_maker.function_objectives,
            drop_invalid=self.experience_maker.drop_invalid,
        )

    def train_step(self, rollout_samples, global_step: int):
        status, global_step = super().train_step(rollout_samples, global_step)
        status.update(self.experience_maker.metrics)
        if self.args.maestro.weights_log:
            append_weights_log(
                self.args.maestro.weights_log,
                global_step,
                self.aggregator.objectives,
                *self.experience_maker.last_batch,
            )
        return status, global_step

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None) -> None:
        if client_states is not None:  # the same dict also reaches save_best_checkpoint (ppo_trainer.py 553-566)
            client_states[CLIENT_STATE_KEY] = {**self.aggregator_record, "state": self.aggregator.state_dict()}
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def init_checkpoint_states(self) -> dict:
        states = super().init_checkpoint_states()
        saved = states.get(CLIENT_STATE_KEY)
        if saved is None:
            if states.get("global_step", 0) > 0:
                logger.warning("the checkpoint holds no reward-aggregator state: the aggregator starts afresh")
            return states
        check_resumable(saved, self.aggregator_record)
        self.aggregator.load_state_dict(saved["state"])
        # What the resumed run starts from, as an auditable file beside the checkpoints.
        restored = Path(self.args.ckpt.path) / f"{STANDALONE_NAME}_restored.pt"
        torch.save(
            {
                **self.aggregator_record,
                "global_step": states.get("global_step"),
                "state": self.aggregator.state_dict(),
            },
            restored,
        )
        logger.info(f"restored the {saved['aggregator']} aggregator's state from the checkpoint ({restored})")
        return states

    def fit(self, global_step: int = 0) -> None:
        super().fit(global_step)
        save_standalone(self.args.ckpt.output_dir, self.aggregator_record, self.aggregator)

    def maestro_state(self) -> dict:
        """The aggregator's record and state, for tests and tools (``ray.get(trainer.maestro_state.remote())``)."""
        return {**self.aggregator_record, "state": self.aggregator.state_dict()}


def append_weights_log(
    path: str, step: int, objectives: list[str], prompts: list[str], weights: torch.Tensor | None
) -> None:
    """One JSON line per response: {"step", "prompt", "weights": {name: w}, "emphasis": argmax name}."""
    if weights is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for prompt, row in zip(prompts, weights.tolist(), strict=True):
            record = {
                "step": step,
                "prompt": prompt,
                "weights": dict(zip(objectives, row, strict=True)),
                "emphasis": objectives[max(range(len(row)), key=row.__getitem__)],
            }
            fh.write(json.dumps(record) + "\n")


def save_standalone(output_dir: str, record: dict, aggregator: RewardAggregator) -> Path:
    """Write ``reward_aggregator.pt`` (record + state, loadable with ``weights_only=True``) and its ``.json``."""
    out = Path(output_dir)
    os.makedirs(out, exist_ok=True)
    torch.save({**record, "state": aggregator.state_dict()}, out / f"{STANDALONE_NAME}.pt")
    (out / f"{STANDALONE_NAME}.json").write_text(json.dumps(record, indent=2))
    return out / f"{STANDALONE_NAME}.pt"


def load_standalone(path: str | os.PathLike) -> RewardAggregator:
    """Rebuild an aggregator from ``reward_aggregator.pt`` (e.g. to inspect a trained Conductor offline)."""
    from types import SimpleNamespace

    saved = torch.load(path, weights_only=True)
    record = {k: v for k, v in saved.items() if k != "state"}
    args = SimpleNamespace(
        reward=SimpleNamespace(
            aggregator=record["aggregator"],
            objectives=",".join(record["objectives"]),
            weights=",".join(record["weights"]) if record["weights"] else None,
        ),
        maestro=SimpleNamespace(
            **{**MaestroConfig().to_dict(), **record.get("config", {})}, context=record.get("context", "response")
        ),
    )
    aggregator = build_aggregator_from_args(args, record["hidden_size"])
    aggregator.load_state_dict(saved["state"])
    return aggregator


MaestroPPOTrainer = ray.remote(_MaestroPPOTrainer)
