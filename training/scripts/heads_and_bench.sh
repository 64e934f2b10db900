#!/usr/bin/env bash
# On one GPU machine: train the draft heads of both embedded models (side by side, installed
# beside the models), run the CUDA-only tests meanwhile, then the speed benchmark on the trained
# models with their heads. Everything worth keeping is packed into PACK.
#   bash training/scripts/heads_and_bench.sh DATA PACK [HEAD_SECONDS] [BENCH_SECONDS]
set -uo pipefail
D=${1:?data dir}; PACK=${2:?pack dir}; T=${3:-150}; TB=${4:-270}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$PACK" .runs
common=(--max-time "$T" --lr 2e-3 --batch-size 64 --eval-every 300 --install --no-progress)
$PY -m training.train_head assd/pretrained/prose --data "$D/wiki_train_full_00.jsonl.xz" \
  --val-data "$D/wiki_valid.jsonl.xz" --out .runs/head_prose "${common[@]}" > .runs/head_prose.log 2>&1 &
p1=$!
$PY -m training.train_head assd/pretrained/code --data "$D/python_stdlib.jsonl.xz,$D/python_pypi.jsonl.xz" \
  --out .runs/head_code "${common[@]}" > .runs/head_code.log 2>&1 &
p2=$!
$PY -m pytest -q -p no:cacheprovider tests/test_round_graphs.py tests/test_hardening_engine.py \
  -k cuda > .runs/gpu_tests.log 2>&1
tail -n 3 .runs/gpu_tests.log
wait $p1; wait $p2
for m in prose code; do grep -v -i warn ".runs/head_$m.log" | tail -n 2; done
timeout "$TB" $PY evals/bench_speed.py --models prose,code --lengths 256 --batch-sizes 1,8 \
  --n-seqs 8 --eager-too --per-call base --data "$D/wiki_valid.jsonl.xz" \
  --data-code "$D/python_stdlib.jsonl.xz" --out .runs/bench > .runs/bench.log 2>&1
grep -E "^\| (prose|code)|check" .runs/bench/bench_speed.md 2>/dev/null || tail -n 30 .runs/bench.log
tar -cf "$PACK/heads_bench.tar" .runs
