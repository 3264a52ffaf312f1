#!/usr/bin/env bash
# MAESTRO GRPO on Qwen3-8B, one node of 8 GPUs, submitted to a running Ray cluster as OpenRLHF's own
# example scripts are (start one with `ray start --head --num-gpus 8`).
#
# Data: NOVER-format benchmarks converted with
#   python -m openrlhf_maestro.data.nover /path/to/NOVER/dataset data/nover
# Objectives: the text rewards of examples/rewards/nover_text_reward.py (format, length, overlap).
#
# Override any path below from the environment; extra flags after the script name go to train_ppo_ray.
# `LAUNCH=python3 bash this.sh --runtime.check_flags` checks every flag and prints the placement locally
# without starting anything. Placement, outputs and resuming: docs/gpu.md.
# Placement: actor, reference and the 4 vLLM engines (TP 2) colocated on all 8 GPUs (--train.colocate_all).
# placement: actor=0-7 ref=0-7 vllm=0-7
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen3-8B}
DATA=${DATA:-data/nover/train.jsonl}
EVAL_DATA=${EVAL_DATA:-data/nover/test.jsonl}
REWARD_FN=${REWARD_FN:-examples/rewards/nover_text_reward.py}
SAVE=${SAVE:-checkpoint/qwen3-8b-maestro}   # checkpoints, model, TensorBoard, weights log
WORKDIR=${WORKDIR:-$(pwd)}                  # uploaded to Ray as the job's working_dir: the repository root
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
AGGREGATOR=${AGGREGATOR:-maestro}            # maestro | sum | gdpo
ESTIMATOR=${ESTIMATOR:-group_norm}           # GRPO; gdpo's own advantage is reinforce_baseline (batch whitening)
OBJECTIVES=${OBJECTIVES:-format,length,overlap}
WEIGHTS=${WEIGHTS:-}                         # sum/gdpo: static weights; maestro: the prior (default uniform)
RUN_NAME=${RUN_NAME:-qwen3-8b-$AGGREGATOR}

# Outputs go to an absolute path, resolved from where you launched: the job runs in Ray's temporary copy of
# WORKDIR, where a relative path would land (and be lost, and never resumed from). The same SAVE on a second
# submission resumes from $SAVE/ckpt (--ckpt.load_enable).
case "$SAVE" in
  /*) ;;
  *) SAVE="$PWD/${SAVE#./}" ;;
esac
WORKDIR=$(cd "$WORKDIR" && pwd)
# Never upload outputs with the working dir (Ray also honours .gitignore, which lists them too).
EXCLUDES='".git/", ".venv/", "checkpoint/", "outputs/", "wandb/"'
case "$SAVE/" in
  "$WORKDIR"/*) EXCLUDES="$EXCLUDES, \"/${SAVE#"$WORKDIR"/}/\"" ;;
esac

if [ -n "${LAUNCH:-}" ]; then
  read -r -a LAUNCH_CMD <<<"$LAUNCH"
else
  RUNTIME_ENV="{\"working_dir\": \"$WORKDIR\", \"excludes\": [$EXCLUDES]}"
  LAUNCH_CMD=(ray job submit --address="$RAY_ADDRESS" --runtime-env-json="$RUNTIME_ENV" -- python3)
fi

PLACEMENT_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node 8
  --ref.num_nodes 1 --ref.num_gpus_per_node 8
  --vllm.num_engines 4 --vllm.tensor_parallel_size 2 --vllm.gpu_memory_utilization 0.6
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep
)
MODEL_ARGS=(
  --actor.model_name_or_path "$MODEL" --ds.zero_stage 3 --ds.param_dtype bf16
  --actor.gradient_checkpointing_enable --ds.attn_implementation flash_attention_2 --ds.packing_samples
)
DATA_ARGS=(
  --data.prompt_dataset "$DATA" --data.input_key input --data.label_key label --data.apply_chat_template
  --data.max_len 6144 --eval.dataset "$EVAL_DATA" --eval.steps 20 --eval.temperature 0.6
)
ROLLOUT_ARGS=(
  --rollout.batch_size 128 --rollout.n_samples_per_prompt 8 --rollout.max_new_tokens 4096
  --rollout.micro_batch_size 8 --rollout.temperature 1.0
)
TRAIN_ARGS=(
  --train.batch_size 1024 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 1
  --actor.adam.lr 1e-6 --train.seed 42
  --train.dynamic_batch_enable --train.max_tokens_per_gpu 16384 --rollout.max_tokens_per_gpu 32768
)
ALGO_ARGS=(--algo.advantage.estimator "$ESTIMATOR" --algo.kl.init_coef 1e-3 --algo.kl.use_loss --algo.kl.estimator k3)
REWARD_ARGS=(--reward.remote_url "$REWARD_FN")
MAESTRO_ARGS=(--reward.aggregator "$AGGREGATOR" --reward.objectives "$OBJECTIVES")
if [ -n "$WEIGHTS" ]; then MAESTRO_ARGS+=(--reward.weights "$WEIGHTS"); fi
if [ "$AGGREGATOR" = maestro ]; then
  # Defaults tuned for H = 4096 (docs/method.md); one meta-update per rollout batch.
  MAESTRO_ARGS+=(--maestro.lr 3e-4 --maestro.update_every 1 --reward.context response
    --reward.weights_log "$SAVE/maestro_weights.jsonl")
fi
CKPT_ARGS=(--ckpt.output_dir "$SAVE" --ckpt.path "$SAVE/ckpt" --ckpt.save_steps 20 --ckpt.load_enable)
LOG_ARGS=(--logger.tensorboard_dir "$SAVE/tensorboard" --logger.wandb.run_name "$RUN_NAME")
if [ -n "${WANDB_API_KEY:-}" ]; then LOG_ARGS+=(--logger.wandb.key "$WANDB_API_KEY" --logger.wandb.project maestro); fi

"${LAUNCH_CMD[@]}" -m openrlhf_maestro.cli.train_ppo_ray \
  "${PLACEMENT_ARGS[@]}" "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" "${ROLLOUT_ARGS[@]}" "${TRAIN_ARGS[@]}" \
  "${ALGO_ARGS[@]}" "${REWARD_ARGS[@]}" "${MAESTRO_ARGS[@]}" "${CKPT_ARGS[@]}" "${LOG_ARGS[@]}" "$@"
