"""Point OpenRLHF's CLI at the plugin's subclasses. Called by the launcher when ``--reward.aggregator`` is given.

``openrlhf.cli.train_ppo_ray`` imports ``PolicyModelActor`` at module level (line 14) and ``PPOTrainer``
inside ``train()`` (lines 145-148). The launcher runs the CLI module afresh after this rebinding, so both
names resolve to the subclasses; OpenRLHF's own classes stay untouched for anyone who imported them earlier.
"""

from __future__ import annotations

from importlib import metadata

SUPPORTED_OPENRLHF = "0.11.2"
_installed = False


def check_openrlhf_version() -> str:
    version = metadata.version("openrlhf")
    if version != SUPPORTED_OPENRLHF:
        import os

        from openrlhf_maestro.runtime.versions import SKIP_ENV

        if os.environ.get(SKIP_ENV) != "1":
            raise RuntimeError(
                f"openrlhf-maestro's integration subclasses OpenRLHF {SUPPORTED_OPENRLHF} internals "
                f"(RemoteExperienceMaker.make_experience, PPOTrainer.train_step, PolicyModelActor.forward); "
                f"openrlhf=={version} is installed. Install openrlhf=={SUPPORTED_OPENRLHF}, or set {SKIP_ENV}=1 "
                "to try anyway."
            )
    return version


def install() -> None:
    """Rebind ``ppo_actor.PolicyModelActor`` and ``ppo_trainer.PPOTrainer`` to the plugin's subclasses. Idempotent."""
    global _installed
    if _installed:
        return
    check_openrlhf_version()
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import openrlhf.trainer.ray.ppo_actor as ppo_actor

    from openrlhf_maestro.integration.actor import MaestroPolicyModelActor
    from openrlhf_maestro.integration.trainer import MaestroPPOTrainer

    ppo_actor.PolicyModelActor = MaestroPolicyModelActor
    ppo_trainer.PPOTrainer = MaestroPPOTrainer
    _installed = True
