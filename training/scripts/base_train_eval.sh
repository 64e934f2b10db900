#!/usr/bin/env bash
# One GPU call: train the XLNet-base-size code model (train_models.sh's `base` run, the
# split-newline 32k tokenizer) for TRAIN_S seconds, then measure it before the machine goes
# back: validation loss, HumanEval single-line pass@1 (completions kept for
# evals/rescore_code.py here), and exact-sampler speed against engine sequential.
#   DATA=.carry bash training/scripts/base_train_eval.sh WORK PACK TRAIN_S [train flags...]
# STEPS=train or STEPS=eval splits it over two calls on one warm machine (the model stays in
# WORK). With --compile in the flags, a run that dies without a model is re-run for the time
# left with --no-compile.
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; T=${3:-300}; shift 3 || shift $#
D=${DATA:-.carry}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$W" "$PACK"
code="$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz"
M="$W/base/model"; O="$W/base_eval"; mkdir -p "$O"
STEPS=${STEPS:-train,eval}
if [[ $STEPS == *train* ]]; then
  t0=$(date +%s)
  DATA=$D bash training/scripts/train_models.sh base "$W" "$W/pack" "$T" "$@" 2>&1 | grep -v -i warn | tail -n 8
  left=$((T - $(date +%s) + t0))
  if [ ! -f "$M/config.json" ] && [[ " $* " == *" --compile "* ]] && [ "$left" -gt 60 ]; then
    echo "== no model: again without compile for ${left}s"; tail -n 20 "$W/base.log"; rm -rf "$W/base"
    DATA=$D bash training/scripts/train_models.sh base "$W" "$W/pack" "$left" "$@" --no-compile 2>&1 \
      | grep -v -i warn | tail -n 8
  fi
  cp "$W/base.log" "$W/base/metrics.csv" "$W/base/summary.json" "$PACK/" 2>/dev/null
fi
[[ $STEPS == *eval* ]] || exit 0
timeout 60 $PY -m training.evaluate "$M" --data "$code" --val-every-doc 50 --eval-chunks 64 \
  --seq-len 512 --samples 2 --sample-len 128 2>&1 | grep -v -i warning > "$O/base_val.txt"
head -n 3 "$O/base_val.txt"
timeout "${HE_S:-170}" $PY evals/run_all.py --model "$M" --code-model "$M" --evals code --n-code 1033 \
  --device cuda --humaneval "$D/HumanEval-SingleLineInfilling.jsonl.gz" --workers "${WORKERS:-14}" \
  --batch-size 32 --out "$O" --run-id he 2>&1 | grep -v -i warning | tail -n 6
timeout "${BENCH_S:-120}" $PY evals/bench_speed.py --models "$M" --data "$D/python_stdlib.jsonl.xz" \
  --data-code "$D/python_stdlib.jsonl.xz" --lengths 512 --batch-sizes 1,8 --n-seqs 8 --rate 0.25 \
  --skip-reference --per-call none --methods c,d,e,f --out "$O/bench" 2>&1 | grep -E "^  " | tail -n 12
cp "$W/base.log" "$W/base/metrics.csv" "$W/base/summary.json" "$O/" 2>/dev/null
tar -C "$W" -cf "$PACK/base_eval.tar" base_eval
ls -la "$PACK"
