#!/usr/bin/env bash
# One GPU call that leaves the XLNet-base-size run going for the next calls:
#  1. time the training forward's variants at base size (training.bench_train);
#  2. start the base-size code model in the background, in its own session (setsid), so that
#     it outlives this call while the machine stays warm: later calls find it under WORK/base/
#     (training/scripts/wait_base.sh waits for it, eval_base.sh measures it);
#  3. meanwhile train the embedded code model (512 tokens, split-newline tokenizer, a quarter of
#     the sequences masked as one span) and its draft head, and pack them into PACK.
#   DATA=.carry bash training/scripts/code_and_base.sh WORK PACK CODE_S HEAD_S BASE_S
# DATA holds python_{stdlib,pypi}.jsonl.xz, tok_code/ and tok_code32k/ (python -m
# training.tokenizer ... --val-every-doc 50 --split-newlines).
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; TC=${3:-280}; TH=${4:-140}; TB=${5:-1000}
D=${DATA:-.carry}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
mkdir -p "$W" "$PACK"
code="$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz"

$PY -m training.bench_train --preset base --seq-len 512 --batch-size 64 --steps 10 --warmup 3 \
  --json "$PACK/bench_train.json" 2>&1 | grep -v -i warn | tail -n 4
compile=$($PY - "$PACK/bench_train.json" <<'PY'
import json, sys
r = {x["variant"]: x["tokens_per_s"] for x in json.load(open(sys.argv[1]))["rows"]}
print("--compile" if r.get("packed-compile", 0) > 1.1 * r.get("packed", 0) else "--no-compile")
PY
)
echo "base run: $compile"
DATA=$D setsid nohup bash training/scripts/train_models.sh base "$W" "$W/base_pack" "$TB" \
  --batch-size 64 "$compile" > "$W/base.out" 2>&1 < /dev/null &

DATA=$D bash training/scripts/train_models.sh code "$W" "$PACK" "$TC" \
  --seq-len 512 --batch-size 128 --span-fraction 0.25
$PY -m training.train_head "$W/code/model" --data "$code" --seq-len 512 --max-time "$TH" \
  --lr 2e-3 --batch-size 64 --eval-every 1000 --install --out "$W/head_code" --no-progress \
  > "$W/head_code.log" 2>&1
grep -v -i warn "$W/head_code.log" | tail -n 3
cp "$W/head_code.log" "$W/head_code/train.log" 2>/dev/null
tar -C "$W" -cf "$PACK/code_model.tar" code/model head_code
grep -v -i warn "$W/base.log" | tail -n 3
ls -la "$PACK"
