"""Everything that knows OpenRLHF 0.11.2's internals lives here, and only here.

- ``flags``: the plugin's flags on OpenRLHF's parser and their validation (before any model loads);
- ``hidden_states``: h_ij from the experience maker's actor forward (a pre-hook on ``lm_head``);
- ``actor``: ``PolicyModelActor`` subclass that keeps h per forward for the controller;
- ``experience``: ``RemoteExperienceMaker`` subclass: objectives -> aggregator -> rewards, then feedback;
- ``trainer``: ``PPOTrainer`` subclass: builds the aggregator, logs its metrics, checkpoints its state;
- ``install``: rebinds OpenRLHF's classes to these subclasses before its CLI runs.
"""
