#!/usr/bin/env bash
# Fine-tune the embedded prose model towards narration (training.narrative's passages mixed with
# general Wikipedia), distil its draft head, and evaluate it beside the shipped model:
#   STEPS=shipped,train,head,story bash training/scripts/story_finetune.sh WORK PACK [MAX_TIME_S [train flags]]
# shipped / story: ROCStories (run_all prose; needs rouge-score: `python3 -m pip install` its
# wheels first); train: the fine-tune (training's validation protocol on wiki_valid); head: a
# draft head for the result, installed beside it (HEAD_TIME seconds, default 330).
# Data, made here before the GPU calls (three folders, so that consecutive calls can stage
# them within a call's 64 MiB carry):
#   python -m training.narrative ../shared/data/text/wiki_train_full_0?.jsonl.xz --out .carry/wiki_narrative.jsonl.xz
#   xzcat ../shared/data/text/wiki_train_full_00.jsonl.xz | head -3000 | xz > .carry_g/wiki_general.jsonl.xz
#   cp ../shared/data/text/wiki_valid.jsonl.xz ../shared/data/eval/rocstories/cloze_test_val__spring2016.csv .carry_g/
#   (xzcat .carry_g/wiki_general.jsonl.xz; xzcat .carry/wiki_narrative.jsonl.xz | head -12000) | xz > .carry_h/head_data.jsonl.xz
# The shipped prose model (round 11) is this script's train step with NARR_COPIES=1 and
# MAX_TIME_S 220, then the head step (run from a copy of the model under .carry_h/).
set -uo pipefail
W=${1:?work dir}; PACK=${2:?pack dir}; T=${3:-240}; shift 3 || shift $#
G=${G:-.carry_g}; NARR=${NARR:-.carry/wiki_narrative.jsonl.xz}; PY=${PYTHON:-python3}
N=${NARR_COPIES:-2}; STEPS=${STEPS:-shipped,train,head,story}
HEAD_DATA=${HEAD_DATA:-.carry_h/head_data.jsonl.xz}
mkdir -p "$W" "$PACK"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=true PYTHONUNBUFFERED=1
mix=$(for _ in $(seq "$N"); do printf '%s,' "$NARR"; done)"$G/wiki_general.jsonl.xz"
roc=(--evals prose --rocstories "$G/cloze_test_val__spring2016.csv" --batch-size 64 --out "$W/evals")
has() { [[ ",$STEPS," == *",$1,"* ]]; }
report() { grep -A4 "^| masked" "$W/evals/$1/report.md"; tar -C "$W" -cf "$PACK/evals_$1.tar" \
  "evals/$1/report.md" "evals/$1/results.json" "evals/$1/prose.jsonl"; }
if has shipped; then
  "$PY" evals/run_all.py --model prose "${roc[@]}" --run-id shipped > "$W/eval_shipped.log" 2>&1
  echo "== shipped eval (exit $?)"; tail -n 2 "$W/eval_shipped.log"; report shipped
fi
if has train; then
  "$PY" -m training.train --init assd/pretrained/prose --data "$mix" --val-data "$G/wiki_valid.jsonl.xz" \
    --seq-len 256 --batch-size 256 --lr 5e-4 --warmup-steps 50 --mask-start 0.05 --mask-min 0.05 \
    --mask-max 0.95 --mask-warmup-steps 0 --eval-chunks 256 --export-weights int8 \
    --max-steps 10000000 --max-time "$T" --log-every 50 --eval-every 250 --sample-every 100000000 \
    --n-samples 2 --save-every 100000000 --no-progress --out "$W/story" --export "$W/story/model" "$@" \
    > "$W/story.log" 2>&1
  r=$?; echo "== fine-tune (exit $r)"; grep -v -i warning "$W/story.log" | tail -n 8
  [ $r -eq 0 ] || exit 1
  cp "$W/story.log" "$W/story/train.log"
  tar -C "$W" -cf "$PACK/story.tar" story/metrics.csv story/summary.json story/config.json \
    story/train.log story/model
fi
if has head; then
  "$PY" -m training.train_head "$W/story/model" --data "$HEAD_DATA" --val-data "$G/wiki_valid.jsonl.xz" \
    --max-time "${HEAD_TIME:-330}" --lr 2e-3 --batch-size 64 --out "$W/head" --install --no-progress \
    > "$W/head.log" 2>&1
  r=$?; echo "== head (exit $r)"; grep -v -i warn "$W/head.log" | tail -n 2
  [ $r -eq 0 ] || exit 1
  cp "$W/head.log" "$W/head/"; tar -C "$W" -cf "$PACK/head.tar" head
fi
if has story; then
  "$PY" evals/run_all.py --model "$W/story/model" "${roc[@]}" --run-id story > "$W/eval_story.log" 2>&1
  echo "== story eval (exit $?)"; tail -n 2 "$W/eval_story.log"; report story
fi
ls -la "$PACK"
