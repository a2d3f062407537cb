#!/usr/bin/env bash
# Measure a local 3-node cluster (release build, loopback): single-client put latency,
# 64-client put throughput, failover time after kill -9 of the leader (median of 5), idle RSS.
# Usage: scripts/measure-local.sh   (run from the repository root; needs curl)
set -euo pipefail
BIN=${BIN:-target/release/flotilla}
[ -x "$BIN" ] || cargo build --release -p flotilla-cli
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

start() { # start node i (0-based)
    local i=$1 boot=()
    [ "$i" -gt 0 ] && boot=(--bootstrap /ip4/127.0.0.1/tcp/17000)
    RUST_LOG=warn "$BIN" agent --data-dir "$DIR/n$i" --listen /ip4/127.0.0.1/tcp/$((17000 + i)) \
        --http 127.0.0.1:$((17070 + i)) "${boot[@]}" >"$DIR/n$i.log" 2>&1 &
    PIDS[$i]=$!
    disown "$!"  # kill -9 is the point here; keep bash from reporting it
}
status() { curl -sf --max-time 2 "127.0.0.1:$((17070 + $1))/v1/ns/default/status" || true; }
wait_until() { # wait_until CMD... (up to 30 s)
    for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done; echo "timeout: $*" >&2; return 1
}
three_voters() { status 0 | grep -o '"role":"voter"' | wc -l | grep -q '^3$'; }
leader_index() {
    local leader; leader=$(status "$1" | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p')
    for i in 0 1 2; do status "$i" | grep -q "\"node_id\":\"$leader\"" && { echo "$i"; return; }; done
}
now_ms() { date +%s%3N; }

start 0; wait_until sh -c "curl -sf 127.0.0.1:17070/ready >/dev/null"
start 1; start 2; wait_until three_voters
sleep 5
echo "idle RSS (KiB): $(for p in "${PIDS[@]}"; do grep VmRSS /proc/$p/status | awk '{print $2}'; done | tr '\n' ' ')"
ADDRS=127.0.0.1:17070,127.0.0.1:17071,127.0.0.1:17072
"$BIN" bench --addrs "$ADDRS" --clients 1 --ops 5000
"$BIN" bench --addrs "$ADDRS" --clients 64 --ops 50000
"$BIN" bench --addrs "$ADDRS" --clients 64 --ops 50000 --workload get
echo "RSS after load (KiB): $(for p in "${PIDS[@]}"; do grep VmRSS /proc/$p/status | awk '{print $2}'; done | tr '\n' ' ')"

TIMES=()
for round in 1 2 3 4 5; do
    l=$(leader_index 0); s=$(( (l + 1) % 3 ))
    kill -9 "${PIDS[$l]}"; t0=$(now_ms)
    until curl -sf --max-time 10 -X PUT --data x "127.0.0.1:$((17070 + s))/v1/kv/default/failover$round" >/dev/null; do :; done
    t1=$(now_ms); TIMES+=($((t1 - t0)))
    echo "failover round $round: $((t1 - t0)) ms"
    start "$l"; wait_until sh -c "curl -sf --max-time 2 '127.0.0.1:$((17070 + l))/v1/kv/default/failover$round' >/dev/null"
done
echo "failover median (ms): $(printf '%s\n' "${TIMES[@]}" | sort -n | sed -n 3p)"
