#!/usr/bin/env bash
# How long a new replica takes to catch up and vote while clients keep
# writing: a scheduler and 3 nodes on loopback, a preload, then a fourth
# node and `ctl add-peer` timed while `tessel bench --target tessel` runs.
#
#   scripts/catch-up-under-load.sh                 # 16 clients, 10 s preload
#   CLIENTS=32 PRELOAD_SECONDS=30 scripts/catch-up-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/tessel
clients=${CLIENTS:-16}
preload=${PRELOAD_SECONDS:-10}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
sched=127.0.0.1:43379
ctl() { $bin ctl --scheduler $sched "$@"; }

RUST_LOG=warn $bin scheduler --addr $sched --data-dir "$work/scheduler" >"$work/scheduler.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
    RUST_LOG=warn $bin node --addr "127.0.0.1:4116$i" --scheduler $sched \
        --data-dir "$work/node$i" >"$work/node$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 300); do
    if [ "$(ctl --json region "" 2>/dev/null | grep -o '"role":"voter"' | wc -l)" = 3 ]; then break; fi
    sleep 0.1
done
[ "$(ctl --json region "" | grep -o '"role":"voter"' | wc -l)" = 3 ] || { echo "cluster never had 3 voters" >&2; exit 1; }

$bin bench --target tessel --endpoints $sched --workload put --clients "$clients" --seconds "$preload" | tail -1
RUST_LOG=warn $bin node --addr 127.0.0.1:41163 --scheduler $sched --data-dir "$work/node3" >"$work/node3.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    [ "$(ctl --json stores | grep -o '"id"' | wc -l)" = 4 ] && break
    sleep 0.1
done
store=$(ctl --json stores | tr '{' '\n' | grep 41163 | grep -o '"id":[0-9]*' | cut -d: -f2)
region=$(ctl --json region "" | grep -o '"id":[0-9]*' | head -1 | cut -d: -f2)

$bin bench --target tessel --endpoints $sched --workload put --clients "$clients" --seconds 30 >"$work/load.txt" &
load=$!
sleep 5
start=$(date +%s%N)
ctl --json --timeout 60 add-peer "$region" "$store" >/dev/null
end=$(date +%s%N)
wait $load
echo "load while adding: $(tail -1 "$work/load.txt")"
echo "new replica of region $region on store $store voting and caught up after $(( (end - start) / 1000000 )) ms"
