#!/usr/bin/env bash
# Multi-GPU check: the same short run on 1 and on N GPUs (DDP through accelerate). Prints each
# rank's first-batch hash (must differ across ranks), the loss curve and the throughput of each.
#   bash training/scripts/ddp_check.sh WORK_DIR [N_GPUS] [MAX_TIME_S] [extra train flags...]
set -uo pipefail
W=${1:?work dir}; N=${2:-2}; T=${3:-35}; shift 3 || shift $#
D=${DATA:-.carry}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
common=(--data "$D/python_stdlib.jsonl.xz" --tokenizer "$D/tok_code" --preset demo --seq_len 256
        --batch_size 128 --lr 1e-3 --warmup_steps 50 --mask_warmup_steps 100 --max_steps 100000
        --max_time "$T" --log_every 10 --eval_every 50 --eval_chunks 128 --sample_every 1000000
        --n_samples 0 --save_every 1000000 --no-progress)
for n in 1 "$N"; do
  multi=(); [ "$n" -gt 1 ] && multi=(--multi_gpu)
  echo "===== $n process(es)"
  accelerate launch "${multi[@]}" --num_processes "$n" --num_machines 1 --mixed_precision bf16 \
    --dynamo_backend no -m training.train "${common[@]}" --out "$W/gpu$n" "$@" 2>&1 \
    | grep -E "first batch|planned|data:|model:|steps\"|Error|error" 
  cut -d, -f1,7,8,10 "$W/gpu$n/metrics.csv" | sed -n '1p;2p;$p'
done
