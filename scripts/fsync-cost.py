#!/usr/bin/env python3
"""What a durable write costs on this disk, by the shape of what is synced (issue 14, lever 1).

Times `fdatasync` after four kinds of writes, each `--n` times, in a directory on the disk to
measure (tmpfs makes fsync free):
- one 4 KiB append to a zero-filled file (every block written once already: overwriting it
  changes no metadata at all);
- one 4 KiB append to a preallocated file (`posix_fallocate`, as etcd's WAL: the size never
  changes, but ext4 still marks each first-written extent as written, in its journal);
- one 4 KiB append to a growing file (the size changes with every write);
- `--pages` 4 KiB pages at random offsets in a preallocated 64 MiB file (a copy-on-write
  B-tree commit such as redb's, which rewrites a leaf and its path in each table it touches).

Prints the median and 90th percentile of each. Compare with the store's own figure, the mean
fsync of a commit under one client (`scripts/profile-write.py`: "fsyncs/w (N us each)").

Usage: scripts/fsync-cost.py --dir target/benchtmp [--n 400] [--pages 6]
"""
import argparse
import os
import random
import time

PAGE = 4096
PREALLOCATED = 64 << 20


def timed(n, step):
    """Run `step(i)` n times; (p50, p90) in microseconds."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        step(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return samples[n // 2], samples[int(n * 0.9)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--pages", type=int, default=6)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    page = b"x" * PAGE
    paths = [os.path.join(args.dir, f"fsync-cost-{name}.bin") for name in ("zero", "wal", "grow", "tree")]
    fds = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644))
        zero, wal, grow, tree = fds
        zeros = b"\0" * (1 << 20)
        for _ in range(PREALLOCATED // len(zeros)):
            os.write(zero, zeros)
        os.fsync(zero)
        for fd in (wal, tree):
            os.posix_fallocate(fd, 0, PREALLOCATED)
            os.fsync(fd)
        slots = PREALLOCATED // PAGE
        cases = [
            ("4 KiB append, zero-filled file", lambda i: os.pwrite(zero, page, (i % slots) * PAGE)),
            ("4 KiB append, preallocated file", lambda i: os.pwrite(wal, page, (i % slots) * PAGE)),
            ("4 KiB append, growing file", lambda i: os.pwrite(grow, page, i * PAGE)),
            (f"{args.pages} pages at random offsets", lambda i: [
                os.pwrite(tree, page, random.randrange(slots) * PAGE) for _ in range(args.pages)]),
        ]
        fd_of = [zero, wal, grow, tree]
        for (name, write), fd in zip(cases, fd_of):
            p50, p90 = timed(args.n, lambda i: (write(i), os.fdatasync(fd)))
            print(f"{name} + fdatasync: p50 {p50:.0f} us, p90 {p90:.0f} us (n={args.n})")
    finally:
        for fd in fds:
            os.close(fd)
        for path in paths:
            if os.path.exists(path):
                os.remove(path)


if __name__ == "__main__":
    main()
