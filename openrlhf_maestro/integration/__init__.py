"""Everything that knows OpenRLHF 0.11.2's internals lives here, and only here.

- ``hook``: ``AggregatorHook``, the integration itself: objectives -> aggregator -> R before the advantages,
  the advantages -> feedback after them, state for the checkpoints. The patched OpenRLHF builds it from
  ``reward_aggregator.py`` (the file its ``--reward.aggregator`` names); the subclasses below install the same
  object into an unpatched OpenRLHF;
- ``flags``: the plugin's flags on OpenRLHF's parser, parsed into an ``AggregatorSpec`` (once, in the driver),
  and the checks of the OpenRLHF flags an aggregator depends on (both paths);
- ``launch``: what the launcher rebinds in OpenRLHF's CLI run (``PATCHES``: parser, train entry, trainer
  classes, vLLM engines), applied by ``installed(run)``; the CLI itself patches nothing;
- ``model_channels``: the model channels' values (``openrlhf_maestro.channels``, a registry of classes that
  declare their source) from the probe's outputs and OpenRLHF's own model groups; the hook calls it;
- ``actor``: ``PolicyModelActor`` subclass that applies the hook's ``PolicyProbe`` (h, ``policy_logits``
  channels) during the forward, as the patched ``Actor.forward`` does;
- ``experience``: ``RemoteExperienceMaker`` subclass that passes the probe and calls the hook where the patch
  calls it;
- ``samples``: ``SamplesGenerator`` subclass that checks objective values before OpenRLHF tensorizes them;
- ``trainer``: ``PPOTrainer`` subclass: builds the hook, logs, checkpoints;
- ``install``: rebinds OpenRLHF's classes to these subclasses before its CLI runs (``launch``'s ``classes``);
- ``placement``: ``--runtime.check_flags``'s stand-in for Ray, and the ZeRO-3 evenness check.
"""
