#!/usr/bin/env bash
# Wait (at most MAX_S seconds) for the background base-size run of code_and_base.sh to finish.
#   bash training/scripts/wait_base.sh WORK [MAX_S]
W=${1:?work dir}; T=${2:-600}
for _ in $(seq "$T"); do
  [ -f "$W/base/summary.json" ] && ! pgrep -f "training.train .*--out $W/base" >/dev/null && break
  sleep 1
done
grep -v -i warn "$W/base.log" | tail -n 4
[ -f "$W/base/summary.json" ]
