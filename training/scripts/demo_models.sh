#!/usr/bin/env bash
# Train both embedded demo models side by side on one GPU (two processes), then pack them.
#   bash training/scripts/demo_models.sh WORK_DIR PACK_DIR [MAX_TIME_S] [extra train flags...]
# Expects the data and tokenizers under DATA (default .carry/): wiki_train.jsonl.xz,
# wiki_valid.jsonl.xz, python_stdlib.jsonl.xz, tok_prose/, tok_code/ (python -m training.tokenizer).
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; T=${3:-500}; shift 3 || shift $#
D=${DATA:-.carry}
mkdir -p "$W" "$PACK"
common=(--preset demo --seq-len 256 --batch-size 128 --lr 1e-3 --warmup-steps 200
        --mask-start 0.15 --mask-min 0.05 --mask-max 0.95 --mask-warmup-steps 300
        --max-steps 100000 --max-time "$T" --log-every 25 --eval-every 250 --eval-chunks 256
        --sample-every 1000 --n-samples 2 --save-every 1000000 --export-best --no-progress)
python -m training.train --data "$D/wiki_train.jsonl.xz" --val-data "$D/wiki_valid.jsonl.xz" \
  --tokenizer "$D/tok_prose" --out "$W/prose" --export "$W/prose/model" "${common[@]}" "$@" \
  > "$W/prose.log" 2>&1 &
p1=$!
python -m training.train --data "$D/python_stdlib.jsonl.xz" --val-every-doc 50 \
  --tokenizer "$D/tok_code" --out "$W/code" --export "$W/code/model" "${common[@]}" "$@" \
  > "$W/code.log" 2>&1 &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
for m in prose code; do
  echo "== $m (exit $([ $m = prose ] && echo $r1 || echo $r2))"; grep -v Warning "$W/$m.log" | tail -n 25
  cp "$W/$m/metrics.csv" "$PACK/${m}_metrics.csv" 2>/dev/null
  cp "$W/$m.log" "$W/$m/train.log"
  tar -C "$W" -cf "$PACK/$m.tar" "$m/model" "$m/metrics.csv" "$m/samples.csv" "$m/summary.json" \
    "$m/config.json" "$m/train.log" 2>&1
done
ls -la "$PACK"
[ $r1 -eq 0 ] && [ $r2 -eq 0 ]
