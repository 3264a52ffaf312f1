#!/usr/bin/env bash
# The paper's setting: MAESTRO over five channels on the NOVER benchmarks, Qwen3-8B, one 8-GPU node.
#   perplexity  NOVER's reasoning perplexity of the reference, ranked within the group (plugin, actor forward)
#   format      <think>...</think><answer>...</answer>               (examples/rewards/nover_text_reward.py)
#   entropy     mean token entropy of the response                   (plugin, from the experience forward)
#   length      length penalty with a free band                       (examples/rewards/nover_text_reward.py)
#   preference  a reward model's score                                (plugin, OpenRLHF's RewardModelActor)
# The reward model reads the policy's token ids, so it must share the policy's tokenizer (a Qwen3-based RM).
# Placement: actor, reference and vLLM colocated on 6 GPUs, the reward model on the other 2.
set -euo pipefail
export OBJECTIVES=${OBJECTIVES:-perplexity,format,entropy,length,preference}
export RUN_NAME=${RUN_NAME:-qwen3-8b-nover-maestro}
export SAVE=${SAVE:-checkpoint/qwen3-8b-nover-maestro}
REWARD_MODEL=${REWARD_MODEL:-Skywork/Skywork-Reward-V2-Qwen3-8B}

exec bash "$(dirname "$0")/train_maestro_grpo_qwen3_8b.sh" \
  --actor.num_gpus_per_node 6 --ref.num_gpus_per_node 6 --vllm.num_engines 3 --vllm.tensor_parallel_size 2 \
  --reward.model_name_or_path "$REWARD_MODEL" --reward.num_nodes 1 --reward.num_gpus_per_node 2 \
  --rollout.batch_size 96 --train.batch_size 768 "$@"
