#!/usr/bin/env bash
# Fine-tune the embedded prose model towards narration (training.narrative's passages mixed with
# general Wikipedia), then evaluate it and the shipped model on the same GPU machine: the
# training validation protocol (wiki_valid, first 256 chunks) and ROCStories (run_all prose).
#   STEPS=shipped,train,story bash training/scripts/story_finetune.sh WORK PACK MAX_TIME_S [train flags]
# Data: NARR (default .carry/wiki_narrative.jsonl.xz, from python -m training.narrative) and,
# under G (default .carry_g/), wiki_general.jsonl.xz (general articles of the training shards),
# wiki_valid.jsonl.xz and cloze_test_val__spring2016.csv: two folders so that a GPU call's
# 64 MiB carry can stage them in consecutive calls. NARR_COPIES (default 2): how many times
# the narrative passages enter the mixture.
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; T=${3:-240}; shift 3 || shift $#
G=${G:-.carry_g}; NARR=${NARR:-.carry/wiki_narrative.jsonl.xz}; PY=${PYTHON:-python3}
N=${NARR_COPIES:-2}; STEPS=${STEPS:-shipped,train,story}
mkdir -p "$W" "$PACK"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=true PYTHONUNBUFFERED=1
mix=$(for _ in $(seq "$N"); do printf '%s,' "$NARR"; done)"$G/wiki_general.jsonl.xz"
roc=(--evals prose --rocstories "$G/cloze_test_val__spring2016.csv" --batch-size 64 --out "$W/evals")
has() { [[ ",$STEPS," == *",$1,"* ]]; }
report() { grep -A4 "^| masked" "$W/evals/$1/report.md"; tar -C "$W" -cf "$PACK/evals_$1.tar" \
  "evals/$1/report.md" "evals/$1/results.json" "evals/$1/prose.jsonl"; }
if has shipped; then
  $PY evals/run_all.py --model prose "${roc[@]}" --run-id shipped > "$W/eval_shipped.log" 2>&1
  echo "== shipped eval (exit $?)"; tail -n 2 "$W/eval_shipped.log"; report shipped
fi
if has train; then
  $PY -m training.train --init assd/pretrained/prose --data "$mix" --val-data "$G/wiki_valid.jsonl.xz" \
    --seq-len 256 --batch-size 256 --lr 5e-4 --warmup-steps 50 --mask-start 0.05 --mask-min 0.05 \
    --mask-max 0.95 --mask-warmup-steps 0 --eval-chunks 256 --export-weights int8 \
    --max-steps 10000000 --max-time "$T" --log-every 50 --eval-every 250 --sample-every 100000000 \
    --n-samples 2 --save-every 100000000 --no-progress --out "$W/story" --export "$W/story/model" "$@" \
    > "$W/story.log" 2>&1
  echo "== fine-tune (exit $?)"; grep -v -i warning "$W/story.log" | tail -n 8
  cp "$W/story.log" "$W/story/train.log"
  tar -C "$W" -cf "$PACK/story.tar" story/metrics.csv story/summary.json story/config.json \
    story/train.log story/model
fi
if has story; then
  $PY evals/run_all.py --model "$W/story/model" "${roc[@]}" --run-id story > "$W/eval_story.log" 2>&1
  echo "== story eval (exit $?)"; tail -n 2 "$W/eval_story.log"; report story
fi
ls -la "$PACK"
