#!/usr/bin/env bash
# GRPO on a CPU-only machine through the real OpenRLHF pipeline: vLLM's CPU build generates, the reward
# function scores, DeepSpeed ZeRO-2 updates the actor on its CPU accelerator, weights sync back to vLLM.
# The tests run this on a tiny model; train_grpo_smollm2_cpu.sh (`make demo`) runs it on SmolLM2-135M-Instruct.
# Every path and setting below can be overridden from the environment; extra flags are passed on.
set -euo pipefail

MODEL=${MODEL:-outputs/tiny-model}
DATA=${DATA:-examples/data/demo_prompts.jsonl}
REWARD_FN=${REWARD_FN:-examples/rewards/demo_reward.py}
OUT=${OUT:-outputs/demo}
CKPT=${CKPT:-$OUT/ckpt}              # DeepSpeed checkpoints (--ckpt.save_steps N, resume with --ckpt.load_enable)
STEPS_PROMPTS=${STEPS_PROMPTS:-8}   # prompts used; with ROLLOUT_BATCH=4 that is 2 GRPO steps
ROLLOUT_BATCH=${ROLLOUT_BATCH:-4}
N_SAMPLES=${N_SAMPLES:-4}
PYTHON=${PYTHON:-python3}
AGGREGATOR=${AGGREGATOR:-maestro}        # maestro | sum | gdpo | random | none (plain OpenRLHF GRPO)
OBJECTIVES=${OBJECTIVES:-format,length,match}
WEIGHTS=${WEIGHTS:-}                     # sum/gdpo: static weights; maestro/random: the prior (default uniform)
MAX_LEN=${MAX_LEN:-256}                  # prompt + response tokens
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-32}
TEMPERATURE=${TEMPERATURE:-1.0}
LR=${LR:-1e-3}                           # the actor's Adam lr: right for the random tiny model, far too high for a real one
# The Conductor's lr scales about as 1/H (docs/method.md): 3e-4 at H=4096 -> 1e-2 at the tiny model's H=128.
MAESTRO_LR=${MAESTRO_LR:-1e-2}
VERIFY_WEIGHT_SYNC=${VERIFY_WEIGHT_SYNC:-1}  # 1: after training, check vLLM against the saved actor (exit 3 if not)

RUNTIME_ARGS=(--runtime cpu)
if [ "$VERIFY_WEIGHT_SYNC" = 1 ]; then RUNTIME_ARGS+=(--runtime.verify_weight_sync); fi
PLACEMENT_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 1
  --ref.num_nodes 1 --ref.num_gpus_per_node 1
  --vllm.num_engines 1 --vllm.tensor_parallel_size 1
)
MODEL_ARGS=(--actor.model_name_or_path "$MODEL" --ds.zero_stage 2 --ds.param_dtype bf16)
DATA_ARGS=(
  --data.prompt_dataset "$DATA" --data.input_key input --data.label_key label --data.apply_chat_template
  --data.max_samples "$STEPS_PROMPTS" --data.max_len "$MAX_LEN"
)
ROLLOUT_ARGS=(
  --rollout.batch_size "$ROLLOUT_BATCH" --rollout.n_samples_per_prompt "$N_SAMPLES"
  --rollout.max_new_tokens "$MAX_NEW_TOKENS" --rollout.micro_batch_size 4 --rollout.temperature "$TEMPERATURE"
)
TRAIN_ARGS=(
  --train.batch_size $((ROLLOUT_BATCH * N_SAMPLES)) --train.micro_batch_size 4 --train.max_epochs 1
  --train.num_episodes 1 --train.seed 42 --actor.adam.lr "$LR"
)
ALGO_ARGS=(--algo.advantage.estimator group_norm --algo.kl.init_coef 0.01 --algo.kl.use_loss --algo.kl.estimator k3)
REWARD_ARGS=(--reward.remote_url "$REWARD_FN")
MAESTRO_ARGS=()
if [ "$AGGREGATOR" != none ]; then
  MAESTRO_ARGS=(--reward.aggregator "$AGGREGATOR" --reward.objectives "$OBJECTIVES")
  if [ -n "$WEIGHTS" ]; then MAESTRO_ARGS+=(--reward.weights "$WEIGHTS"); fi
fi
if [ "$AGGREGATOR" = maestro ]; then
  MAESTRO_ARGS+=(--maestro.lr "$MAESTRO_LR" --maestro.update_every 1 --reward.context response)
fi
LOG_ARGS=(--logger.tensorboard_dir "$OUT/tensorboard" --ckpt.output_dir "$OUT/model" --ckpt.path "$CKPT")

exec "$PYTHON" -m openrlhf_maestro.cli.train_ppo_ray \
  "${RUNTIME_ARGS[@]}" "${PLACEMENT_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}" \
  "${TRAIN_ARGS[@]}" "${ALGO_ARGS[@]}" "${REWARD_ARGS[@]}" "${MAESTRO_ARGS[@]}" "${LOG_ARGS[@]}" "$@"
