#!/usr/bin/env bash
# Measure the XLNet-base-size model right after training, on the GPU machine that trained it:
# validation loss, ASSD speed vs engine sequential, and HumanEval single-line infilling pass@1.
#   bash training/scripts/eval_base.sh MODEL_DIR OUT_DIR [N_CODE]   (BENCH=0 skips the speed run)
set -uo pipefail
M=${1:?model dir}; O=${2:?out dir}; N=${3:-1033}
D=${DATA:-.carry}
PY=${PYTHON:-python3}
mkdir -p "$O"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
code="$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz"
$PY -m training.evaluate "$M" --data "$code" --val-every-doc 50 --eval-chunks 64 --seq-len 512 \
  --samples 2 --sample-len 128 2>&1 | grep -v -i warning | tee "$O/base_val.txt"
[ "${BENCH:-1}" = 1 ] && $PY evals/bench_speed.py --models "$M" --data "$D/python_stdlib.jsonl.xz" --lengths 512 \
  --batch-sizes 1,8 --n-seqs 8 --rate 0.25 --skip-reference --per-call none \
  --out "$O/bench_base" 2>&1 | grep -v -i warning | tail -n 20 | tee "$O/base_speed.txt"
$PY evals/run_all.py --model "$M" --code-model "$M" --evals code --n-code "$N" --device cuda \
  --humaneval "$D/HumanEval-SingleLineInfilling.jsonl.gz" --workers ${WORKERS:-12} --batch-size 16 \
  --out "$O/evals" --run-id base 2>&1 | grep -v -i warning | tail -n 25 | tee "$O/base_code.txt"
