"""Point OpenRLHF's CLI at the plugin's subclasses. Called by the launcher when ``--reward.aggregator`` is given.

``openrlhf.cli.train_ppo_ray`` imports ``PolicyModelActor`` at module level (line 14) and ``PPOTrainer`` or
``PPOTrainerAsync`` inside ``train()`` (lines 143-146). The launcher runs the CLI module afresh after this
rebinding, so these names resolve to the subclasses; OpenRLHF's own classes stay untouched for anyone who
imported them earlier.
"""

from __future__ import annotations

from openrlhf_maestro.runtime.versions import check_versions

_installed = False


def check_openrlhf_version() -> str:
    """The integration subclasses OpenRLHF 0.11.2 internals; refuse another release (same switch as the runtime)."""
    return check_versions(
        packages=("openrlhf",),
        what="integration subclasses (RemoteExperienceMaker, PPOTrainer, PolicyModelActor) override",
        fix="install openrlhf==0.11.2",
    )["openrlhf"]


def install() -> None:
    """Rebind ``ppo_actor.PolicyModelActor`` and ``ppo_trainer.PPOTrainer`` to the plugin's subclasses, which build
    the ``AggregatorHook`` and call it where the upstream patch does. Idempotent."""
    global _installed
    if _installed:
        return
    check_openrlhf_version()
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import openrlhf.trainer.ppo_trainer_async as ppo_trainer_async
    import openrlhf.trainer.ray.ppo_actor as ppo_actor

    from openrlhf_maestro.integration.actor import ChannelPolicyModelActor
    from openrlhf_maestro.integration.trainer import AggregatingPPOTrainer, AggregatingPPOTrainerAsync, Placement

    ppo_actor.PolicyModelActor = ChannelPolicyModelActor
    ppo_trainer.PPOTrainer = AggregatingPPOTrainer
    ppo_trainer_async.PPOTrainerAsync = AggregatingPPOTrainerAsync  # --train.async_enable (cli 143-146)
    Placement.install()
    _installed = True
