#!/usr/bin/env bash
# The paper's setting: MAESTRO over five objectives on the NOVER benchmarks, Qwen3-8B, one 8-GPU node.
#   perplexity  NOVER's reasoning perplexity of the reference, ranked within the group (plugin, actor forward)
#   format      <think>...</think><answer>...</answer>               (examples/rewards/nover_text_reward.py)
#   entropy     mean token entropy of the response                   (plugin, from the experience forward)
#   length      length penalty with a free band                       (examples/rewards/nover_text_reward.py)
#   preference  a reward model's score                                (plugin, OpenRLHF's RewardModelActor)
# The reward model reads the policy's token ids, so it must share the policy's tokenizer (a Qwen3-based RM).
# Placement: actor, reference, the 4 vLLM engines (TP 2) and the reward model colocated on all 8 GPUs
# (--train.colocate_all, which puts the reward model in the same placement group: rank r on bundle r). Its 8
# ZeRO-3 ranks hold 1/8 of its bf16 weights each and divide every step's micro-batch count (a multiple of the
# actor's 8 ranks), so no rank waits on another (docs/gpu.md).
# placement: actor=0-7 ref=0-7 vllm=0-7 reward=0-7
set -euo pipefail
export OBJECTIVES=${OBJECTIVES:-perplexity,format,entropy,length,preference}
export RUN_NAME=${RUN_NAME:-qwen3-8b-nover-maestro}
export SAVE=${SAVE:-checkpoint/qwen3-8b-nover-maestro}
REWARD_MODEL=${REWARD_MODEL:-Skywork/Skywork-Reward-V2-Qwen3-8B}

exec bash "$(dirname "$0")/train_maestro_grpo_qwen3_8b.sh" \
  --reward.model_name_or_path "$REWARD_MODEL" --reward.num_nodes 1 --reward.num_gpus_per_node 8 "$@"
