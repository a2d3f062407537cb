#!/usr/bin/env python3
"""Where a single client's write spends its server CPU (issue 14).

Starts three `flotilla agent` processes on loopback (the command line of
`crates/flotilla-bench/src/cluster.rs`), then measures windows of the same length:
idle (no client), one sequential keep-alive HTTP client putting to the leader, and one putting
to a follower. For each window and agent: CPU ms (utime+stime from /proc/PID/stat), and per
thread (grouped by name) CPU and voluntary / involuntary context switches
(/proc/PID/task/*/status). Optionally `perf record` / `perf stat` of the leader and a follower
under load. Prints a JSON document and a text summary; kills the agents it started (by pid)
when done.

Usage:
  scripts/profile-write.py --bin target/release/flotilla --dir target/benchtmp/prof \
      --secs 20 [--perf-secs 10 --perf-out DIR] [--rounds 1]
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "default"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_args(i, ports, root):
    http_port, p2p = ports[i]
    args = ["agent", "--no-mdns", "--data-dir", os.path.join(root, f"n{i + 1}"),
            "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--http", f"127.0.0.1:{http_port}",
            "--expect", str(len(ports)), "--bootstrap"]
    args += [f"/ip4/127.0.0.1/tcp/{p}" for j, (_, p) in enumerate(ports) if j != i]
    return args


def get_json(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        c.close()


def wait_healthy(ports, timeout=60.0):
    """Index of the leader once every agent is ready, names the same leader and counts 3 voters."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            statuses = [get_json(p, f"/v1/ns/{NS}/status") for p, _ in ports]
            for p, _ in ports:
                get_json(p, "/ready")
            leaders = {s.get("leader") for s in statuses}
            voters = [sum(1 for m in s.get("members", []) if m.get("role") == "voter") for s in statuses]
            if len(leaders) == 1 and all(v == len(ports) for v in voters) and None not in leaders and "" not in leaders:
                leader = leaders.pop()
                return [s["node_id"] for s in statuses].index(leader)
            last = f"leaders {leaders}, voters {voters}"
        except Exception as e:  # not up yet
            last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(f"cluster not healthy: {last}")


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime 15.
    return int(fields[11]) + int(fields[12])


def thread_stats(pid):
    """tid -> (comm, cpu ticks, voluntary, nonvoluntary)."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
            vol = nonvol = 0
            with open(f"{base}/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        nonvol = int(line.split()[1])
            out[tid] = (comm, ticks, vol, nonvol)
        except FileNotFoundError:
            continue
    return out


def snapshot(pids):
    return {pid: (proc_cpu_ticks(pid), thread_stats(pid)) for pid in pids}


STORE_METRICS = ("flotilla_fsync_seconds_count", "flotilla_fsync_seconds_sum", "flotilla_store_fsyncs_total",
                 "flotilla_store_fsync_duration_seconds_count", "flotilla_store_fsync_duration_seconds_sum")


def store_metrics(ports):
    """Per agent: the store's commit and fsync counters from /metrics."""
    out = []
    for port, _ in ports:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        vals = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in STORE_METRICS:
                vals[parts[0]] = float(parts[1])
        out.append(vals)
    return out


def diff(before, after):
    """Per pid: cpu ms, and per thread name: [threads, cpu ms, voluntary, nonvoluntary]."""
    res = {}
    for pid, (t1, th1) in after.items():
        t0, th0 = before[pid]
        by_name = defaultdict(lambda: [0, 0.0, 0, 0])
        for tid, (comm, ticks, vol, nonvol) in th1.items():
            _, ticks0, vol0, nonvol0 = th0.get(tid, (comm, 0, 0, 0))
            e = by_name[comm]
            e[0] += 1
            e[1] += (ticks - ticks0) * 1000.0 / CLK_TCK
            e[2] += vol - vol0
            e[3] += nonvol - nonvol0
        res[pid] = {"cpu_ms": (t1 - t0) * 1000.0 / CLK_TCK, "threads": dict(by_name)}
    return res


def put_loop(port, secs, value=b"x" * 256):
    """Sequential puts on one keep-alive connection for `secs`; returns (count, latencies ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    end = time.time() + secs
    i = 0
    while time.time() < end:
        t = time.perf_counter()
        conn.request("PUT", f"/v1/kv/{NS}/k{i % 1000}", body=value)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"put: {r.status}")
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    conn.close()
    return i, lat


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


def perf_stat(pid, secs, out):
    return subprocess.Popen(["perf", "stat", "-e", "context-switches,cpu-migrations,task-clock", "-p", str(pid),
                             "-o", out, "--", "sleep", str(secs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def window(name, pids, secs, port, perf_dir=None, ports=None):
    stats = []
    if perf_dir:
        stats = [perf_stat(pid, secs, os.path.join(perf_dir, f"stat-{name}-{i + 1}.txt")) for i, pid in enumerate(pids)]
    m0 = store_metrics(ports) if ports else []
    b = snapshot(pids)
    t0 = time.time()
    if port is None:
        time.sleep(secs)
        n, lat = 0, []
    else:
        n, lat = put_loop(port, secs)
    elapsed = time.time() - t0
    a = snapshot(pids)
    m1 = store_metrics(ports) if ports else []
    store = [{k: v1.get(k, 0) - v0.get(k, 0) for k in STORE_METRICS} for v0, v1 in zip(m0, m1)]
    for s in stats:
        s.wait()
    return {"name": name, "secs": elapsed, "writes": n,
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "agents": diff(b, a), "store": store,
            "load": os.getloadavg()}


def perf_record(pid, port, secs, out, dwarf, event=None):
    cg = ["--call-graph", "dwarf,16384"] if dwarf else ["-g"]
    what = ["-e", event] if event else ["-F", "997"]
    rec = subprocess.Popen(["perf", "record", *what, *cg, "-p", str(pid), "-o", out, "--", "sleep", str(secs)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    n, _ = put_loop(port, secs)
    rec.wait()
    return n


def summary(w, roles, idle=None):
    lines = [f"== {w['name']}: {w['writes']} writes in {w['secs']:.1f} s "
             f"({w['writes'] / w['secs']:.0f}/s, p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms), "
             f"load {w['load'][0]:.2f}"]
    total = 0.0
    for idx, (pid, a) in enumerate(w["agents"].items()):
        cpu = a["cpu_ms"]
        base = idle["agents"][pid]["cpu_ms"] * w["secs"] / idle["secs"] if idle else 0.0
        net = cpu - base
        total += net
        per = f", {net / w['writes']:.3f} ms/write net of idle" if w["writes"] else ""
        lines.append(f"  agent {idx + 1} ({roles[idx]}, pid {pid}): cpu {cpu:.0f} ms{per}")
        if w.get("store") and w["writes"]:
            st = w["store"][idx]
            commits = st["flotilla_fsync_seconds_count"]
            fsyncs = st["flotilla_store_fsyncs_total"]
            lines.append(f"    store: {commits / w['writes']:.2f} commits/w "
                         f"({st['flotilla_fsync_seconds_sum'] * 1e6 / max(commits, 1):.0f} us each), "
                         f"{fsyncs / w['writes']:.2f} fsyncs/w "
                         f"({st['flotilla_store_fsync_duration_seconds_sum'] * 1e6 / max(fsyncs, 1):.0f} us each)")
        for comm, (nthr, ms, vol, nonvol) in sorted(a["threads"].items(), key=lambda kv: -kv[1][1]):
            if ms == 0 and vol == 0:
                continue
            if w["writes"]:
                lines.append(f"    {comm:24} x{nthr:<3} cpu {ms:7.0f} ms ({ms / w['writes']:.3f}/w)  "
                             f"vol {vol:7} ({vol / w['writes']:.2f}/w)  invol {nonvol:6} ({nonvol / w['writes']:.2f}/w)")
            else:
                lines.append(f"    {comm:24} x{nthr:<3} cpu {ms:7.0f} ms  vol {vol:7} ({vol / w['secs']:.0f}/s)  "
                             f"invol {nonvol:6}")
    if w["writes"]:
        lines.append(f"  all agents: {total / w['writes']:.3f} ms CPU per write, net of idle")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--secs", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--perf-secs", type=float, default=0)
    ap.add_argument("--perf-out", default=None)
    ap.add_argument("--dwarf", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the agents")
    ap.add_argument("--sched-secs", type=float, default=0, help="record sched:sched_switch for this long")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=False)
    ports = [(free_port(), free_port()) for _ in range(3)]
    procs = []
    try:
        for i in range(3):
            log = open(os.path.join(args.dir, f"agent{i + 1}.log"), "ab")
            env = dict(os.environ)
            env.pop("RUST_LOG", None)
            env.update(kv.split("=", 1) for kv in args.env)
            procs.append(subprocess.Popen([args.bin, *agent_args(i, ports, args.dir)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, env=env))
        leader = wait_healthy(ports)
        follower = (leader + 1) % 3
        roles = ["leader" if i == leader else "follower" for i in range(3)]
        pids = [p.pid for p in procs]
        print(f"pids {pids}, leader agent {leader + 1}", flush=True)
        # Warm up: connections, first pages, JIT-free but caches and allocator arenas.
        put_loop(ports[leader][0], 2)
        put_loop(ports[follower][0], 2)
        time.sleep(2)
        if args.perf_out:
            os.makedirs(args.perf_out, exist_ok=True)
        results = []
        for r in range(args.rounds):
            perf_dir = args.perf_out if r == 0 else None
            idle = window(f"idle#{r + 1}", pids, args.secs, None, perf_dir, ports)
            lead = window(f"leader#{r + 1}", pids, args.secs, ports[leader][0], perf_dir, ports)
            time.sleep(1)
            fol = window(f"follower#{r + 1}", pids, args.secs, ports[follower][0], perf_dir, ports)
            time.sleep(1)
            for w in (idle, lead, fol):
                print(summary(w, roles, idle if w is not idle else None), flush=True)
            results += [idle, lead, fol]
        if args.perf_secs and args.perf_out:
            n = perf_record(pids[leader], ports[leader][0], args.perf_secs,
                            os.path.join(args.perf_out, "leader.data"), args.dwarf)
            print(f"perf record leader: {n} writes", flush=True)
            n = perf_record(pids[follower], ports[leader][0], args.perf_secs,
                            os.path.join(args.perf_out, "follower.data"), args.dwarf)
            print(f"perf record follower (writes to the leader): {n} writes", flush=True)
        if args.sched_secs and args.perf_out:
            for role, idx in (("leader", leader), ("follower", follower)):
                n = perf_record(pids[idx], ports[leader][0], args.sched_secs,
                                os.path.join(args.perf_out, f"sched-{role}.data"), True, "sched:sched_switch")
                print(f"sched record {role}: {n} writes", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"pids": pids, "roles": roles, "windows": results}, f, indent=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
