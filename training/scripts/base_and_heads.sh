#!/usr/bin/env bash
# One GPU machine, one call: the XLNet-base-size code model (train_models.sh's `base` run) and,
# side by side, both embedded models' draft heads trained for longer (installed beside the
# models). The base model stays on the machine (WORK/base/model) for eval_base.sh; the heads,
# logs and metrics are packed into PACK.
#   DATA=.carry bash training/scripts/base_and_heads.sh WORK PACK BASE_SECONDS HEAD_SECONDS [base flags...]
# DATA holds python_{stdlib,pypi}.jsonl.xz, tok_code32k/, wiki_head.jsonl.xz (any Wikipedia
# training text) and wiki_valid.jsonl.xz.
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; TB=${3:-520}; TH=${4:-400}; shift 4 || shift $#
D=${DATA:-.carry}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$W" "$PACK"
head=(--max-time "$TH" --lr 2e-3 --batch-size 64 --eval-every 1000 --install --no-progress)
$PY -m training.train_head assd/pretrained/prose --data "$D/wiki_head.jsonl.xz" \
  --val-data "$D/wiki_valid.jsonl.xz" --out "$W/head_prose" "${head[@]}" > "$W/head_prose.log" 2>&1 &
p1=$!
$PY -m training.train_head assd/pretrained/code --data "$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz" \
  --out "$W/head_code" "${head[@]}" > "$W/head_code.log" 2>&1 &
p2=$!
DATA=$D bash training/scripts/train_models.sh base "$W" "$PACK" "$TB" "$@"
wait $p1; wait $p2
for m in prose code; do
  grep -v -i warn "$W/head_$m.log" | tail -n 3
  cp "$W/head_$m.log" "$W/head_$m/train.log" 2>/dev/null
  cp "assd/pretrained/$m/draft_head.safetensors" "$PACK/${m}_draft_head.safetensors"
  cp "assd/pretrained/$m/draft_head.json" "$PACK/${m}_draft_head.json"
done
tar -C "$W" -cf "$PACK/heads.tar" head_prose head_code
ls -la "$PACK"
