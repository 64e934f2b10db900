#!/usr/bin/env bash
# One GPU call: train the XLNet-base-size code model for TRAIN_S seconds (base_train_eval.sh's
# recipe), distil a draft head onto it for HEAD_S seconds, then time every exact sampler on it
# against engine sequential at two masking rates (the speed issue's 5% visible, and 75%).
#   DATA=.carry bash training/scripts/base_head_bench.sh WORK PACK TRAIN_S HEAD_S [train flags...]
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; T=${3:-300}; TH=${4:-60}; shift 4 || shift $#
D=${DATA:-.carry}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
code="$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz"
M="$W/base/model"; O="$W/base_bench"; mkdir -p "$O" "$PACK"
DATA=$D STEPS=train bash training/scripts/base_train_eval.sh "$W" "$PACK" "$T" "$@"
$PY -m training.train_head "$M" --data "$code" --seq-len 512 --max-time "$TH" --lr 2e-3 \
  --batch-size 64 --eval-every 1000 --install --out "$W/head_base" --no-progress \
  > "$O/head_base.log" 2>&1
grep -v -i warn "$O/head_base.log" | tail -n 3
cp "$W/head_base/head_summary.json" "$W/head_base/head_metrics.csv" "$O/" 2>/dev/null
for rate in 0.95 0.25; do
  n=$([ "$rate" = 0.95 ] && echo 4 || echo 8)
  timeout "${BENCH_S:-110}" $PY evals/bench_speed.py --models "$M" --data "$D/python_stdlib.jsonl.xz" \
    --data-code "$D/python_stdlib.jsonl.xz" --lengths 512 --batch-sizes 1,8 --n-seqs "$n" \
    --rate "$rate" --head-ks 2,3 --skip-reference --per-call none --methods "${METHODS:-c,d,f,h2,hb3}" \
    --out "$O/bench_$rate" 2>&1 | grep -E "^  " | tail -n 20
done
tar -C "$W" -cf "$PACK/base_bench.tar" base_bench
ls -la "$PACK"
