#!/usr/bin/env python3
"""Where concurrent writes spend the servers' CPU (issue 14; docs/BENCHMARKS.md, "What bounds a
write under load: ceilings").

Starts three `flotilla agent` processes on loopback (as scripts/profile-write.py does, whose
helpers it uses), then runs `wrk` (Debian package `wrk`) with scripts/wrk-kv.lua against every
agent's HTTP port, or only the leader's (`--leader-only`), splitting `--clients` connections
between them. Per round it prints puts/s, wrk's p50/p99 per wrk process, the agents' CPU per put
net of an idle window, the store's commits and fsyncs per put and the share of wall time the
store spent committing and in fsync, and the busiest threads. `--perf-out DIR` records each
agent with `perf record --call-graph dwarf` during the first round. Put `--dir` on the disk to
measure (tmpfs makes fsync free).

`--op get` first writes k1..k10000 (wrk-kv.lua's `fill`), then GETs random ones among them
(its `get`) with `--consistency` (stale or linearizable); the figures then count
reads where they say puts.

Usage:
  scripts/profile-load.py --bin target/release/flotilla --dir target/benchtmp/load \
      --clients 64 --secs 12 --rounds 3 [--leader-only | --followers-only] \
      [--op get --consistency stale] [--perf-out DIR --perf-secs 8]
"""
import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("pw", os.path.join(HERE, "profile-write.py"))
pw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pw)

# Every wrk and perf process started, so that an interrupted run (Ctrl-C, an error) does not
# leave them running against agents that are gone.
HELPERS = []

RESULT = re.compile(r"RESULT requests=(\d+) non2xx=(\d+) errors=(\d+) p50=([\d.]+) p99=([\d.]+)")


def start_wrk(ports, targets, clients, secs, env=None):
    """One wrk process per target agent, `clients` connections split between them."""
    per = max(1, clients // len(targets))
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{per}", f"-d{int(secs)}s", "--timeout", "10s",
                              "-s", os.path.join(HERE, "wrk-kv.lua"), f"http://127.0.0.1:{ports[t][0]}"],
                             stdout=subprocess.PIPE, text=True, env=env) for t in targets]
    HELPERS.extend(procs)
    return procs


def fill_keys(ports, leader):
    """Write every key `--op get` reads (k1..k10000), at the leader, until each exists."""
    fill = start_wrk(ports, [leader], 64, 8, env=dict(os.environ, WRK_OP="fill"))
    for w in fill:
        w.communicate()


def collect_wrk(procs):
    """(puts, failed requests, p50 per process, p99 per process) once every wrk has ended."""
    puts, bad, p50, p99 = 0, 0, [], []
    for w in procs:
        out = w.communicate()[0]
        m = RESULT.search(out)
        if not m:
            raise SystemExit(f"wrk printed no result:\n{out}")
        puts += int(m.group(1))
        bad += int(m.group(2)) + int(m.group(3))
        p50.append(float(m.group(4)))
        p99.append(float(m.group(5)))
    return puts, bad, p50, p99


def start_perf(pids, leader, out_dir, secs):
    os.makedirs(out_dir, exist_ok=True)
    recs = []
    for i, pid in enumerate(pids):
        role = "leader" if i == leader else f"follower{i + 1}"
        recs.append(subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(pid),
                                      "-o", os.path.join(out_dir, f"{role}.data"), "--", "sleep", str(secs)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    HELPERS.extend(recs)
    return recs


def agent_line(i, leader, net_ms, puts, elapsed, store, threads):
    busiest = sorted(threads.items(), key=lambda kv: -kv[1][1])[:4]
    return (f"  agent{i + 1}{' (leader)' if i == leader else ''}: {net_ms / puts:.3f} ms/put; "
            f"commits/put {store['flotilla_fsync_seconds_count'] / puts:.3f}, "
            f"fsyncs/put {store['flotilla_store_fsyncs_total'] / puts:.3f}, "
            f"committing {store['flotilla_fsync_seconds_sum'] / elapsed * 100:.0f}% and "
            f"in fsync {store['flotilla_store_fsync_duration_seconds_sum'] / elapsed * 100:.0f}% of the time; "
            + ", ".join(f"{comm} {v[1] / puts:.3f} ms/put" for comm, v in busiest))


def measure(args, ports, pids, leader):
    targets = [leader] if args.leader_only else list(range(len(ports)))
    if args.followers_only:
        targets = [i for i in range(len(ports)) if i != leader]
    env = None
    if args.op == "get":
        fill_keys(ports, leader)
        env = dict(os.environ, WRK_OP="get", WRK_CONSISTENCY=args.consistency)
    collect_wrk(start_wrk(ports, targets, args.clients, 3, env))  # warm up
    before = pw.snapshot(pids)
    time.sleep(5)
    idle = {pid: v["cpu_ms"] / 5.0 for pid, v in pw.diff(before, pw.snapshot(pids)).items()}
    for r in range(args.rounds):
        m0 = pw.store_metrics(ports)
        before, t0 = pw.snapshot(pids), time.time()
        load = start_wrk(ports, targets, args.clients, args.secs, env)
        recs = []
        if args.perf_out and r == 0:
            time.sleep(2)
            recs = start_perf(pids, leader, args.perf_out, args.perf_secs)
        puts, bad, p50, p99 = collect_wrk(load)
        elapsed = time.time() - t0
        after, m1 = pw.snapshot(pids), pw.store_metrics(ports)
        for rec in recs:
            rec.wait()
        d = pw.diff(before, after)
        total, lines = 0.0, []
        for i, pid in enumerate(pids):
            net = d[pid]["cpu_ms"] - idle[pid] * elapsed
            total += net
            store = {k: m1[i].get(k, 0) - m0[i].get(k, 0) for k in pw.STORE_METRICS}
            lines.append(agent_line(i, leader, net, puts, elapsed, store, d[pid]["threads"]))
        print(f"round {r}: {puts} puts in {elapsed:.1f} s = {puts / elapsed:.0f}/s, failed {bad}, p50 {p50} ms, "
              f"p99 {p99} ms, CPU per put (all agents, net of idle) {total / puts:.3f} ms, "
              f"load {os.getloadavg()[0]:.2f}")
        print("\n".join(lines), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--secs", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--perf-out", default=None)
    ap.add_argument("--perf-secs", type=float, default=8)
    ap.add_argument("--leader-only", action="store_true")
    ap.add_argument("--followers-only", action="store_true")
    ap.add_argument("--op", choices=["put", "get"], default="put",
                    help="get: fill k1..k10000 first, then GET them (ops are reported as puts)")
    ap.add_argument("--consistency", default="stale", help="of --op get: stale or linearizable")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    ports = [(pw.free_port(), pw.free_port()) for _ in range(3)]
    procs = []
    try:
        for i in range(3):
            log = open(os.path.join(args.dir, f"agent{i + 1}.log"), "w")
            procs.append(subprocess.Popen([args.bin] + pw.agent_args(i, ports, args.dir), stdout=log, stderr=log))
        leader = pw.wait_healthy(ports)
        measure(args, ports, [p.pid for p in procs], leader)
    finally:
        for p in HELPERS + procs:
            if p.poll() is None:
                p.kill()
        for p in HELPERS + procs:
            p.wait()


if __name__ == "__main__":
    main()
