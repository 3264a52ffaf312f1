"""``PPOTrainer`` (the CPU controller actor, ppo_trainer.py 449) that builds and drives the ``AggregatorHook``.

Extends OpenRLHF's trainer with ``super()`` calls only, where the upstream patch changes ``BasePPOTrainer``:
- ``__init__``: the hook from the flags' spec, and ``AggregatingExperienceMaker`` and
  ``ObjectiveCheckingSamplesGenerator`` (objective values checked before OpenRLHF tensorizes them) swapped in;
- ``train_step``: adds the hook's and the channels' logs to the step's ``status`` (``train/<key>``);
- ``save_logs_and_checkpoints``: puts ``hook.state_dict()`` into the checkpoint's ``client_states``;
- ``init_checkpoint_states``: restores it on ``--ckpt.load_enable`` (and writes what it restored to
  ``<ckpt.path>/reward_aggregator_restored.pt``);
- ``fit``: at the end writes the aggregation standalone next to the model (``reward_aggregator.pt`` / ``.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_maestro.integration.experience import AggregatingExperienceMaker
from openrlhf_maestro.integration.flags import spec_from_flags
from openrlhf_maestro.integration.hook import (
    CLIENT_STATE_KEY,
    LEGACY_CLIENT_STATE_KEY,
    STANDALONE_NAME,
    AggregatorHook,
)
from openrlhf_maestro.integration.samples import ObjectiveCheckingSamplesGenerator

logger = logging.getLogger(__name__)


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


class _AggregatingPPOTrainer(PPOTrainer.__ray_actor_class__):
    def __init__(self, pretrain, strategy, *args, **kwargs) -> None:
        super().__init__(pretrain, strategy, *args, **kwargs)
        self.hook = AggregatorHook(self.args, spec=spec_from_flags(self.args))
        spec = self.hook.spec
        wants_rm = any(spec.channel(n).source == "reward_model" for n in spec.model_channels)
        preference_group = start_preference_model(strategy) if wants_rm else None
        self.experience_maker = AggregatingExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
            hook=self.hook,
            preference_group=preference_group,
        )
        # Same dataloaders, tokenizer and engines; objective values are checked before OpenRLHF tensorizes them.
        previous = self.samples_generator
        self.samples_generator = ObjectiveCheckingSamplesGenerator(
            strategy=strategy,
            prompts_dataloader=previous.prompts_dataloader,
            eval_dataloader=previous.eval_dataloader,
            tokenizer=previous.tokenizer,
            vllm_engines=previous.vllm_engines,
            objectives=spec.function_objectives,
            drop_invalid=spec.drop_invalid_samples,
        )

    def train_step(self, rollout_samples, global_step: int):
        status, global_step = super().train_step(rollout_samples, global_step)
        status.update(self.experience_maker.metrics)
        return status, global_step

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None) -> None:
        if client_states is not None:  # the same dict also reaches save_best_checkpoint (ppo_trainer.py 553-566)
            client_states[CLIENT_STATE_KEY] = self.hook.state_dict()
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def init_checkpoint_states(self) -> dict:
        states = super().init_checkpoint_states()
        saved = states.get(CLIENT_STATE_KEY, states.get(LEGACY_CLIENT_STATE_KEY))
        if saved is None:
            if states.get("global_step", 0) > 0:
                logger.warning("the checkpoint holds no reward-aggregator state: the aggregator starts afresh")
            return states
        self.hook.load_state_dict(saved)
        # What the resumed run starts from, as an auditable file beside the checkpoints.
        restored = Path(self.args.ckpt.path) / f"{STANDALONE_NAME}_restored.pt"
        torch.save({**self.hook.state_dict(), "global_step": states.get("global_step")}, restored)
        logger.info(f"restored the {saved['aggregator']} aggregator's state from the checkpoint ({restored})")
        return states

    def fit(self, global_step: int = 0) -> None:
        super().fit(global_step)
        self.hook.save_standalone(self.args.ckpt.output_dir)

    def aggregator_state(self) -> dict:
        """The hook's record and state, for tests and tools (``ray.get(trainer.aggregator_state.remote())``)."""
        return self.hook.state_dict()


AggregatingPPOTrainer = ray.remote(_AggregatingPPOTrainer)
