"""MAESTRO (arXiv 2601.07208) as a pure-torch library: Conductor, weights map, normalization, aggregators.

Imports nothing from OpenRLHF; see docs/method.md for the paper-to-code map.
"""

from .aggregation import (
    AggregateOutput,
    GDPOAggregator,
    MaestroAggregator,
    RandomEmphasisAggregator,
    RewardAggregator,
    SumAggregator,
    available_aggregators,
    build_aggregator,
    check_target,
    get_aggregator,
    load_module,
    register_aggregator,
)
from .conductor import Conductor, ConductorSample, Features
from .config import GDPOOptions, MaestroConfig, RandomOptions
from .meta_update import MetaUpdater
from .normalize import (
    GROUP_ESTIMATORS,
    ObjectiveNormalizer,
    RunningMeanStd,
    group_advantages,
    group_norm,
    group_zscore,
)
from .weights import action_weights, emphasis_weights, validate_prior, weight_matrix

__all__ = [
    "GROUP_ESTIMATORS",
    "AggregateOutput",
    "Conductor",
    "ConductorSample",
    "Features",
    "GDPOAggregator",
    "GDPOOptions",
    "MaestroAggregator",
    "MaestroConfig",
    "MetaUpdater",
    "RandomEmphasisAggregator",
    "RandomOptions",
    "ObjectiveNormalizer",
    "RewardAggregator",
    "RunningMeanStd",
    "SumAggregator",
    "action_weights",
    "available_aggregators",
    "build_aggregator",
    "check_target",
    "emphasis_weights",
    "get_aggregator",
    "load_module",
    "group_advantages",
    "group_norm",
    "group_zscore",
    "register_aggregator",
    "validate_prior",
    "weight_matrix",
]
