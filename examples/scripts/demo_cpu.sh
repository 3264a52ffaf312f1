#!/usr/bin/env bash
# `make demo`: MAESTRO GRPO on SmolLM2-135M-Instruct, on CPU, through OpenRLHF's real train_ppo_ray, then a report:
# per-step metrics and objectives, the Conductor's weights per prompt category, answers before and after training.
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs}
SETUP_SECONDS=${SETUP_SECONDS:-0}
MODEL="$OUT/smollm2"
PROMPTS=examples/data/demo_real_prompts.jsonl     # math and writing prompts, each with a reference answer
HELDOUT=examples/data/demo_real_heldout.jsonl     # not trained on: answered before and after training
REWARD_FN=examples/rewards/demo_real_reward.py
STEPS=8                                           # GRPO steps of 4 prompts x 4 samples
LOG="$OUT/demo.log"
mkdir -p "$OUT"

t0=$(date +%s)
"$PYTHON" -m openrlhf_maestro.runtime.cpu_info
# The builder takes about 25 s; a complete bf16 build of it already in $MODEL is reused.
if "$PYTHON" -c 'import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); r = json.loads((d / "maestro_model.json").read_text())
sys.exit(not (r["dtype"] == "bfloat16" and all((d / f).is_file() for f in r["files"])))' "$MODEL" 2>/dev/null; then
  echo "[demo] reusing SmolLM2-135M-Instruct (bf16) in $MODEL"
else
  "$PYTHON" -m openrlhf_maestro.models smollm2 "$MODEL" --dtype bfloat16
fi
t1=$(date +%s)

rm -rf "$OUT/demo"
: >"$LOG"
echo "[demo] GRPO on CPU: Ray, vLLM, DeepSpeed start-up takes 1 to 2 minutes, a step about 30 s; full log in $LOG"
set +e
# MAESTRO over format, length, entropy and perplexity.
PATH="$(dirname "$PYTHON"):$PATH" MODEL="$MODEL" OUT="$OUT/demo" PYTHON="$PYTHON" DATA="$PROMPTS" \
  REWARD_FN="$REWARD_FN" STEPS_PROMPTS=$((STEPS * 4)) \
  bash examples/scripts/train_grpo_smollm2_cpu.sh --reward.weights_log "$OUT/demo/maestro_weights.jsonl" \
  >"$LOG" 2>&1 &
run_pid=$!
# Milestones as they happen, not the whole multi-process log.
tail -n +1 -f "$LOG" --pid "$run_pid" | grep --line-buffered -E "openrlhf-maestro\]|Started a local Ray|Global step [0-9]+|Traceback|Error" \
  | sed -u -E -e 's/.* ([0-9:]{8}) .*Global step ([0-9]+):.*/[demo] \1 GRPO step \2 of '"$STEPS"' done/' -e 's/^(.{0,160}).*/\1/'
wait "$run_pid"
status=$?
set -e
t2=$(date +%s)
if [ "$status" -ne 0 ]; then
  echo "[demo] the run failed with exit status $status; see $LOG" >&2
  exit "$status"
fi

echo
echo "[demo] run done; the report answers the held-out prompts with the initial and the trained model (about 15 s)"
"$PYTHON" -m openrlhf_maestro.report "$OUT/demo" --timing "setup=$SETUP_SECONDS" \
  --timing "model_build=$((t1 - t0))" --timing "run=$((t2 - t1))" \
  --weights-log "$OUT/demo/maestro_weights.jsonl" --data "$PROMPTS" --category-key category \
  --plot "$OUT/demo/conductor_weights.png" \
  --compare-models "$MODEL" --prompts "$HELDOUT" --per-category 3 --max-new-tokens 64 --reward-file "$REWARD_FN"
echo "full log: $LOG"
