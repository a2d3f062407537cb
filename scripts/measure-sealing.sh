#!/usr/bin/env bash
# Throughput cost of the cluster key: the same 3-node loopback cluster (release build) measured
# without a key, with --cluster-key-file, and with --cluster-key-file --encrypt-at-rest, in one
# run, interleaved ROUNDS times (machines here drift, compare within a run).
# Usage: scripts/measure-sealing.sh [ROUNDS]   (run from the repository root; needs curl)
set -euo pipefail
BIN=${BIN:-target/release/flotilla}
ROUNDS=${1:-2}
OPS=${OPS:-30000}
[ -x "$BIN" ] || cargo build --release -p flotilla-cli
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
"$BIN" keygen "$DIR/cluster.key" >/dev/null

start() { # start MODE-RUN node i
    local run=$1 i=$2; shift 2
    local boot=()
    [ "$i" -gt 0 ] && boot=(--bootstrap /ip4/127.0.0.1/tcp/17100)
    RUST_LOG=warn "$BIN" agent --no-mdns --data-dir "$DIR/$run/n$i" --listen /ip4/127.0.0.1/tcp/$((17100 + i)) \
        --http 127.0.0.1:$((17170 + i)) "${boot[@]}" "$@" >"$DIR/$run-n$i.log" 2>&1 &
    PIDS[$i]=$!
    disown "$!"
}
wait_until() { for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done; echo "timeout: $*" >&2; return 1; }
three_voters() { curl -sf --max-time 2 127.0.0.1:17170/v1/ns/default/status | grep -o '"role":"voter"' | wc -l | grep -q '^3$'; }
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done; PIDS=(); }

measure() { # measure NAME FLAGS...
    local name=$1; shift
    local run="$name-$RANDOM"
    start "$run" 0 "$@"; wait_until sh -c "curl -sf 127.0.0.1:17170/ready >/dev/null"
    start "$run" 1 "$@"; start "$run" 2 "$@"; wait_until three_voters
    local addrs=127.0.0.1:17170,127.0.0.1:17171,127.0.0.1:17172
    echo "== $name: put, 64 clients"; "$BIN" bench --addrs "$addrs" --clients 64 --ops "$OPS"
    echo "== $name: linearizable get, 64 clients"; "$BIN" bench --addrs "$addrs" --clients 64 --ops "$OPS" --workload get
    stop_all
}

for round in $(seq "$ROUNDS"); do
    echo "#### round $round"
    measure plain
    measure sealed --cluster-key-file "$DIR/cluster.key"
    measure sealed+at-rest --cluster-key-file "$DIR/cluster.key" --encrypt-at-rest
done
