#!/usr/bin/env bash
# Tessel against etcd, side by side, on this machine: starts a 3-member etcd
# and a 3-node Tessel (scheduler + 3 nodes) on loopback, runs the same
# closed-loop workloads against both with the same client code
# (`tessel bench --target ...`), and prints one table.
#
# Needs etcd (Debian: etcd-server) and protoc (protobuf-compiler, for the
# etcd client crate); both are installed with apt-get if missing.
#
#   scripts/bench-vs-etcd.sh            # 15 s per run, 64 clients, 128-byte values
#   SECONDS_PER_RUN=30 CLIENTS=32 scripts/bench-vs-etcd.sh
#   NO_SESSIONS_ROW=0 ...               # skip the put row without client sessions
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
CLIENTS=${CLIENTS:-64}
VALUE_SIZE=${VALUE_SIZE:-128}
WORKLOADS=${WORKLOADS:-"put get mixed"}

need() {
    command -v "$1" >/dev/null && return
    echo "installing $2 for $1" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y "$2" >/dev/null; else sudo apt-get install -y "$2" >/dev/null; fi
}
need etcd etcd-server
need protoc protobuf-compiler

cargo build --release --features etcd
bin=target/release/tessel

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# etcd: members e1..e3, client ports 12379/22379/32379, peer ports *2380.
cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${i}2379" \
        --advertise-client-urls "http://127.0.0.1:${i}2379" \
        --listen-peer-urls "http://127.0.0.1:${i}2380" \
        --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!)
done
etcd_endpoints="http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379"

# Tessel: scheduler on 42379, nodes on 40160..40162.
RUST_LOG=warn $bin scheduler --addr 127.0.0.1:42379 --data-dir "$work/scheduler" >"$work/scheduler.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
    RUST_LOG=warn $bin node --addr "127.0.0.1:4016$i" --scheduler 127.0.0.1:42379 \
        --data-dir "$work/node$i" >"$work/node$i.log" 2>&1 &
    pids+=($!)
done

# Ready: Tessel's first region has three replicas and takes a write.
for _ in $(seq 1 120); do
    if $bin ctl --scheduler 127.0.0.1:42379 --json region "" 2>/dev/null | grep -q '"store_id".*"store_id".*"store_id".*"store_id"' \
        && $bin ctl --scheduler 127.0.0.1:42379 put ready 1 >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}'), 3 members; Tessel 3 nodes; all on 127.0.0.1"
echo "$CLIENTS clients, $VALUE_SIZE-byte values, ${SECONDS_PER_RUN}s per run, 10000 keys"
echo
rows=()
for w in $WORKLOADS; do
    for target in etcd tessel; do
        if [ "$target" = etcd ]; then ep=$etcd_endpoints; else ep=127.0.0.1:42379; fi
        echo "running $target $w ..." >&2
        row=$($bin bench --target "$target" --endpoints "$ep" --workload "$w" \
            --clients "$CLIENTS" --value-size "$VALUE_SIZE" --seconds "$SECONDS_PER_RUN" | tail -1)
        rows+=("$row")
    done
    if [ "$w" = put ] && [ "${NO_SESSIONS_ROW:-1}" = 1 ]; then
        # What exactly-once costs: the same puts without client sessions.
        echo "running tessel put without sessions ..." >&2
        row=$($bin bench --target tessel --endpoints 127.0.0.1:42379 --workload put --no-sessions \
            --clients "$CLIENTS" --value-size "$VALUE_SIZE" --seconds "$SECONDS_PER_RUN" | tail -1)
        rows+=("${row/| Tessel | Put |/| Tessel (no sessions) | Put |}")
    fi
done
echo "| target | workload | clients | value B | ops/s | p50 ms | p99 ms | p99.9 ms | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
