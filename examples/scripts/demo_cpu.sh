#!/usr/bin/env bash
# `make demo`: build a tiny model, run GRPO on CPU through OpenRLHF's real train_ppo_ray, print a summary.
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs}
SETUP_SECONDS=${SETUP_SECONDS:-0}
LOG="$OUT/demo.log"
mkdir -p "$OUT"

t0=$(date +%s)
"$PYTHON" -m openrlhf_maestro.runtime.cpu_info
"$PYTHON" -m openrlhf_maestro.tiny_model "$OUT/tiny-model" --seed 0 --corpus examples/data/demo_prompts.jsonl
t1=$(date +%s)

rm -rf "$OUT/demo"
: >"$LOG"
echo "[demo] GRPO on CPU: Ray, vLLM, DeepSpeed start-up takes about 2 minutes; full log in $LOG"
set +e
# 24 demo prompts, 4 per step: 6 GRPO steps with MAESTRO over format, length and match.
PATH="$(dirname "$PYTHON"):$PATH" MODEL="$OUT/tiny-model" OUT="$OUT/demo" PYTHON="$PYTHON" STEPS_PROMPTS=24 \
  bash examples/scripts/train_grpo_tiny_cpu.sh --reward.weights_log "$OUT/demo/maestro_weights.jsonl" \
  >"$LOG" 2>&1 &
run_pid=$!
# Milestones as they happen, not the whole multi-process log.
tail -n +1 -f "$LOG" --pid "$run_pid" | grep --line-buffered -E "openrlhf-maestro\]|Started a local Ray|Global step [0-9]+|Traceback|Error" \
  | sed -u -E 's/^(.{0,160}).*/\1/'
wait "$run_pid"
status=$?
set -e
t2=$(date +%s)
if [ "$status" -ne 0 ]; then
  echo "[demo] the run failed with exit status $status; see $LOG" >&2
  exit "$status"
fi

echo
"$PYTHON" -m openrlhf_maestro.report "$OUT/demo" --timing "setup=$SETUP_SECONDS" \
  --timing "model_build=$((t1 - t0))" --timing "run=$((t2 - t1))" \
  --weights-log "$OUT/demo/maestro_weights.jsonl" --data examples/data/demo_prompts.jsonl --category-key category \
  --plot "$OUT/demo/conductor_weights.png"
echo "full log: $LOG"
