"""``PPOTrainer`` (the CPU controller actor, ppo_trainer.py 449) that builds and drives the ``AggregatorHook``.

Extends OpenRLHF's trainer with ``super()`` calls only, where the upstream patch changes ``BasePPOTrainer``:
- ``__init__``: the hook, from the spec's JSON the driver left in ``--reward.aggregator_args`` (built once in
  this actor), and ``AggregatingExperienceMaker`` and
  ``ObjectiveCheckingSamplesGenerator`` (objective values checked before OpenRLHF tensorizes them) swapped in;
- ``save_logs_and_checkpoints``: puts ``hook.state_dict()`` into the checkpoint's ``client_states``;
- ``init_checkpoint_states``: restores it on ``--ckpt.load_enable`` (and writes what it restored to
  ``<ckpt.path>/reward_aggregator_restored.pt``);
- ``fit``: at the end writes the aggregation standalone next to the model (``reward_aggregator.pt`` / ``.json``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import ClassVar

import openrlhf.trainer.ppo_trainer_async as async_trainer
import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_maestro.integration.experience import AggregatingExperienceMaker
from openrlhf_maestro.integration.flags import (
    LauncherSpec,
    filter_weights,
    reward_model_channels,
    spec_from_aggregator_args,
)
from openrlhf_maestro.integration.hook import CLIENT_STATE_KEY, STANDALONE_NAME, AggregatorHook
from openrlhf_maestro.integration.samples import ObjectiveCheckingSamplesGenerator

logger = logging.getLogger(__name__)


class Placement:
    """The placement group OpenRLHF gives each of its actor groups, recorded as the CLI creates them (driver).

    ``train()`` builds the groups with a local ``pg`` (cli/train_ppo_ray.py 40-128): shared by every model under
    ``--train.colocate_all``, one for critic and reward model under ``--train.colocate_critic_reward``.
    """

    groups: ClassVar[dict[str, object]] = {}  # actor class name -> the pg its group was given (None: its own)

    @classmethod
    def install(cls) -> None:
        from openrlhf.trainer.ray.launcher import RayActorGroup

        original = RayActorGroup.__init__
        if getattr(original, "__placement_recorder__", False):
            return

        @functools.wraps(original)
        def __init__(self, num_nodes, num_gpus_per_node, ray_actor_type, pg=None, *args, **kwargs):
            name = getattr(ray_actor_type, "__ray_actor_class__", ray_actor_type).__name__
            cls.groups[name] = pg
            original(self, num_nodes, num_gpus_per_node, ray_actor_type, pg, *args, **kwargs)

        __init__.__placement_recorder__ = True
        RayActorGroup.__init__ = __init__

    @classmethod
    def of(cls, suffix: str):
        return next((pg for name, pg in cls.groups.items() if name.endswith(suffix)), None)


def reward_model_group(strategy):
    """OpenRLHF's own ``RewardModelActor`` group for a ``reward_model`` channel, placed as OpenRLHF places its
    reward model (cli/train_ppo_ray.py 106-140): in the critic's group under ``--train.colocate_critic_reward``,
    in the shared one under ``--train.colocate_all`` (0.2 of a GPU per actor, rank i on bundle i), else on GPUs
    of its own. Creates the actors, loads nothing; ``--runtime.check_flags`` calls it too, so the placement it
    prints is this one."""
    from openrlhf.trainer.ray.launcher import RayActorGroup, RewardModelActor

    a = strategy.args
    pg = None
    if a.train.colocate_critic_reward and a.critic.model_name_or_path:
        pg = Placement.of("CriticModelActor")
    elif a.train.colocate_all:
        pg = Placement.of("PolicyModelActor")
    group = RayActorGroup(
        a.reward.num_nodes,
        a.reward.num_gpus_per_node,
        RewardModelActor,
        pg=pg,
        num_gpus_per_actor=0.2 if pg else 1,
        duplicate_actors=a.ds.ring_attn_size * a.ds.tensor_parallel_size,
    )
    where = "its own GPUs" if pg is None else f"placement group {pg.id.hex()}, shared as OpenRLHF shares it"
    print(f"[openrlhf-maestro] reward model for the reward_model channel: {where}", flush=True)
    return group


def start_reward_model(strategy):
    """``reward_model_group`` with the reward model loaded.

    Unpatched OpenRLHF starts no reward model when a reward function is given; the patched CLI does when an
    aggregator is on, with these same arguments, and so does this (called in the driver, before the trainer)."""
    group = reward_model_group(strategy)
    ray.get(group.async_init_model_from_pretrained(strategy, strategy.args.reward.model_name_or_path))
    return group


class TrainerLauncher:
    """What OpenRLHF's CLI calls as ``PPOTrainer.remote(pretrain, strategy, actor, critic, reward, ref, engines,
    ...)`` (cli/train_ppo_ray.py 149-162): starts the reward model a model channel reads, when OpenRLHF started
    none, then the trainer actor with it."""

    def __init__(self, actor_class) -> None:
        self.actor_class = actor_class

    def remote(self, pretrain, strategy, actor_model, critic_model, reward_model, *args, **kwargs):
        if reward_model is None and reward_model_channels(LauncherSpec.current):  # the driver's spec
            reward_model = start_reward_model(strategy)
        return self.actor_class.remote(pretrain, strategy, actor_model, critic_model, reward_model, *args, **kwargs)


def checking_samples_generator(previous, strategy, spec):
    """OpenRLHF's ``SamplesGenerator`` with the same dataloaders, tokenizer and engines, that checks objective
    values before OpenRLHF tensorizes them (and scores responses for dynamic filtering if asked)."""
    return ObjectiveCheckingSamplesGenerator(
        strategy=strategy,
        prompts_dataloader=previous.prompts_dataloader,
        eval_dataloader=previous.eval_dataloader,
        tokenizer=previous.tokenizer,
        vllm_engines=previous.vllm_engines,
        objectives=spec.function_objectives,
        drop_invalid=spec.drop_invalid_samples,
        filter_weights=filter_weights(spec, strategy.args),
    )


class AggregatingTrainerMixin:
    """What the plugin adds to an OpenRLHF trainer that holds the experience maker (``BasePPOTrainer``): the
    synchronous ``PPOTrainer`` and the async ``TrainingActor`` (ppo_trainer_async.py 168)."""

    def __init__(self, pretrain, strategy, *args, **kwargs) -> None:
        super().__init__(pretrain, strategy, *args, **kwargs)
        # This actor's one spec: from the JSON the driver wrote (notes and refusals were printed there).
        self.hook = AggregatorHook(self.args, spec=spec_from_aggregator_args(self.args))
        self.experience_maker = AggregatingExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
            hook=self.hook,
        )
        if hasattr(self, "samples_generator"):  # synchronous: the trainer also generates
            self.samples_generator = checking_samples_generator(self.samples_generator, strategy, self.hook.spec)

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None) -> None:
        if client_states is not None:  # the same dict also reaches save_best_checkpoint (ppo_trainer.py 553-566)
            client_states[CLIENT_STATE_KEY] = self.hook.state_dict()
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def init_checkpoint_states(self) -> dict:
        states = super().init_checkpoint_states()
        saved = states.get(CLIENT_STATE_KEY)
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


def pickled_by_reference(actor_class):
    """OpenRLHF's ``@ray.remote`` class, made findable by name for pickling; returns the class underneath.

    Ray ships a subclass's methods by value, and a method that calls ``super()`` (``TrainingActor.
    broadcast_to_vllm``, ppo_trainer_async.py 261) carries its defining class with it. That class is not a
    module attribute (the attribute is Ray's wrapper), so cloudpickle would copy it by value too, and in the
    actor's process ``super()`` would then name a copy that the actor does not inherit from. Its qualified name
    ``<Name>.__ray_actor_class__`` resolves through the wrapper in every process instead.
    """
    raw = actor_class.__ray_actor_class__
    raw.__qualname__ = f"{raw.__name__}.__ray_actor_class__"
    return raw


class _ActorClassStandIn:
    """Put in place of an OpenRLHF ``@ray.remote`` class in its module: ``.remote`` starts ``replacement``, and
    ``__ray_actor_class__`` still leads to the original class (``pickled_by_reference``)."""

    def __init__(self, original, replacement) -> None:
        self.__ray_actor_class__ = original.__ray_actor_class__
        self.remote = replacement.remote


class _AggregatingPPOTrainer(AggregatingTrainerMixin, pickled_by_reference(PPOTrainer)):
    pass


AggregatingPPOTrainer = TrainerLauncher(ray.remote(_AggregatingPPOTrainer))


# -- --train.async_enable: PPOTrainerAsync (ppo_trainer_async.py 269) runs a generator and a training actor ---------


class _AggregatingTrainingActor(AggregatingTrainerMixin, pickled_by_reference(async_trainer.TrainingActor)):
    pass


class _CheckingGenerateSamplesActor(pickled_by_reference(async_trainer.GenerateSamplesActor)):
    """The async generator, with the objective check of the synchronous path."""

    def __init__(self, pretrain, strategy, vllm_engines, **kwargs) -> None:
        super().__init__(pretrain, strategy, vllm_engines, **kwargs)
        spec = spec_from_aggregator_args(strategy.args)  # this actor's one spec, from the driver's JSON
        self.samples_generator = checking_samples_generator(self.samples_generator, strategy, spec)


class _AggregatingPPOTrainerAsync(async_trainer.PPOTrainerAsync.__ray_actor_class__):
    """``PPOTrainerAsync`` whose ``__init__`` builds the plugin's generator and training actor: it looks both
    names up in its module when it runs, in its own Ray process, so they are rebound there first."""

    def __init__(self, *args, **kwargs) -> None:
        for name, replacement in (
            ("TrainingActor", _AggregatingTrainingActor),
            ("GenerateSamplesActor", _CheckingGenerateSamplesActor),
        ):
            original = getattr(async_trainer, name)
            if not isinstance(original, _ActorClassStandIn):
                setattr(async_trainer, name, _ActorClassStandIn(original, ray.remote(replacement)))
        super().__init__(*args, **kwargs)


AggregatingPPOTrainerAsync = TrainerLauncher(ray.remote(_AggregatingPPOTrainerAsync))
