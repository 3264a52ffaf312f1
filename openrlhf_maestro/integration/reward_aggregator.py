"""The file a patched OpenRLHF's ``--reward.aggregator`` names (``patches/openrlhf-0.11.2-reward-aggregator.patch``).

OpenRLHF loads it as it loads a ``reward_func`` file and builds ``RewardAggregator(args)``: the plugin's
``AggregatorHook``, which reads the aggregation from ``--reward.aggregator_args`` (a JSON object: "aggregator",
"objectives", "weights", "options", ...). Its path, for the flag::

    --reward.aggregator "$(python -m openrlhf_maestro.integration.reward_aggregator)"
"""

from openrlhf_maestro.integration.hook import AggregatorHook as RewardAggregator

__all__ = ["RewardAggregator"]

if __name__ == "__main__":
    print(__file__)
