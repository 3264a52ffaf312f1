#!/usr/bin/env bash
# The static multi-objective baseline for train_maestro_grpo_qwen3_8b.sh: the same run with fixed weights.
#   AGGREGATOR=sum  (default): R = sum_k w_k r_k, TRL's reward_weights
#   AGGREGATOR=gdpo:           per-objective z-score inside the group, the weighted sum, then whitening over
#                              the batch (NVIDIA's GDPO: OpenRLHF's reinforce_baseline estimator)
# Placement: as train_maestro_grpo_qwen3_8b.sh, actor, reference and vLLM colocated on all 8 GPUs.
# placement: actor=0-7 ref=0-7 vllm=0-7
set -euo pipefail
export AGGREGATOR=${AGGREGATOR:-sum}
if [ "$AGGREGATOR" = gdpo ]; then export ESTIMATOR=${ESTIMATOR:-reinforce_baseline}; fi
export WEIGHTS=${WEIGHTS:-1,1,1}
export RUN_NAME=${RUN_NAME:-qwen3-8b-$AGGREGATOR-static}
export SAVE=${SAVE:-checkpoint/qwen3-8b-$AGGREGATOR-static}
exec bash "$(dirname "$0")/train_maestro_grpo_qwen3_8b.sh" "$@"
