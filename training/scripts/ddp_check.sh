#!/usr/bin/env bash
# Multi-GPU check: the same short run on 1 and on N GPUs (DDP through accelerate). Prints each
# rank's first-batch hash (must differ across ranks), the loss curve and the throughput of each.
#   bash training/scripts/ddp_check.sh WORK_DIR [N_GPUS] [MAX_TIME_S] [extra train flags...]
set -uo pipefail
W=${1:?work dir}; N=${2:-2}; T=${3:-35}; shift 3 || shift $#
D=${DATA:-.carry}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
common=(--data "$D/python_stdlib.jsonl.xz" --tokenizer "$D/tok_code" --preset demo --seq-len 256
        --batch-size 128 --lr 1e-3 --warmup-steps 50 --mask-warmup-steps 100 --max-steps 100000
        --max-time "$T" --log-every 10 --eval-every 50 --eval-chunks 128 --sample-every 1000000
        --n-samples 0 --save-every 1000000 --no-progress)
for n in 1 "$N"; do
  multi=(); [ "$n" -gt 1 ] && multi=(--multi_gpu)
  echo "===== $n process(es)"
  accelerate launch "${multi[@]}" --num_processes "$n" --num_machines 1 --mixed_precision bf16 \
    --dynamo_backend no -m training.train "${common[@]}" --out "$W/gpu$n" "$@" 2>&1 \
    | grep -E "first batch|planned|data:|model:|steps\"|Error|error" 
  cut -d, -f1,7,8,10 "$W/gpu$n/metrics.csv" | sed -n '1p;2p;$p'
done
