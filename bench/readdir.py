"""Listing one big directory through the mount, beside the kernel listing the same names on the
raw disk (issue 18: "a 1M-entry directory lists at the speed of the kernel's readdir").

    python bench/readdir.py [--dir /var/tmp] [--entries 100000] [--rounds 2]

One store with a local mirror (as bench/fs.py makes it) gets N small records in one directory,
filled below FUSE (bench/scale.py's way, under eatmydata when installed); the raw baseline is
a directory of N empty files with the same names on the same file system. Each round drops
the page cache, then lists each directory twice: names only (``os.scandir``, getdents; through
FUSE the kernel still asks READDIRPLUS, so the daemon builds every entry's attributes) and
names with attributes (``ls -l``'s work: scandir then a stat of each). The first listing after
the mount is cold (the daemon reads the index from disk); the second is warm. The FUSE floor
beside them: bench/nullfs.py (the same pyfuse3 and trio, entries and attributes in memory)
holding a directory of the same names, listed the same way ("cold" there drops only the
kernel's caches).
Needs root and /dev/fuse. Not run by CI.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import remove_tree
from fs import Mounted, NullMount, drop_caches

NAME = "msg-%08d.eml"


def fill(store, n):
    from wormfs.actor import Actor
    from wormfs.store.store import Store
    actor = Actor(0, 0, os.getpid(), "bench")
    with Store(store) as st:
        d = st.mkdir(1, b"big", 0o755, actor).ino
        for i in range(n):
            f = st.create(d, (NAME % i).encode(), 0o644, actor)
            st.write(f.ino, 0, b"record %d\n" % i)
            st.seal(f.ino, actor)


def names_only(path):
    t = time.perf_counter()
    with os.scandir(path) as it:
        n = sum(1 for _ in it)
    return time.perf_counter() - t, n


def with_attributes(path):
    t = time.perf_counter()
    n = 0
    with os.scandir(path) as it:
        for e in it:
            e.stat(follow_symlinks=False)
            n += 1
    return time.perf_counter() - t, n


def listings(dirs, entries):
    """{row label: [seconds for each of ``dirs``]}: each way of listing, cold (the page cache
    dropped once before the row, so every directory in it is read cold) and warm."""
    rows = {}
    for label, fn in (("names (getdents)", names_only), ("names + stat", with_attributes)):
        for temp in ("cold", "warm"):
            if temp == "cold":
                drop_caches()
            times = []
            for d in dirs:
                t, n = fn(d)
                assert n == entries, (d, n)
                times.append(t)
            rows[f"{label}, {temp}"] = times
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fill", nargs=2, help=argparse.SUPPRESS)   # the filling child
    args = ap.parse_args()
    if args.fill:
        fill(args.fill[0], int(args.fill[1]))
        return
    root = tempfile.mkdtemp(prefix="wormfs-readdir-", dir=args.dir)
    try:
        raw = os.path.join(root, "raw")
        os.makedirs(raw)
        for i in range(args.entries):
            os.close(os.open(os.path.join(raw, NAME % i), os.O_CREAT | os.O_WRONLY, 0o644))
        m = Mounted(root)
        t = time.perf_counter()
        fast = ["eatmydata"] if shutil.which("eatmydata") else []
        subprocess.run([*fast, sys.executable, __file__, "--fill", m.store, str(args.entries)],
                       check=True)
        print(f"filled {args.entries} records in one directory in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        big = os.path.join(m.mnt, "big")
        null = NullMount(os.path.join(root, "null"))
        try:
            nbig = os.path.join(null.mnt, "big")
            os.mkdir(nbig)
            for i in range(args.entries):
                os.close(os.open(os.path.join(nbig, NAME % i), os.O_CREAT | os.O_WRONLY,
                                 0o644))
            null_rows = listings([nbig], args.entries)
        finally:
            null.umount()
        for r in range(args.rounds):
            drop_caches()
            m.mount()
            try:
                rows = listings([big, raw], args.entries)
            finally:
                m.umount()
            for label, (tw, tr) in rows.items():
                (tn,) = null_rows[label]
                print(f"{args.entries} entries  {label:24s} wormfs {tw:7.2f} s "
                      f"({args.entries / tw:9.0f}/s)   raw {tr:6.2f} s "
                      f"({args.entries / tr:9.0f}/s)   ratio {tr / tw:5.2f}x   | null daemon "
                      f"{tn:6.2f} s ({tr / tn:4.2f}x raw)", flush=True)
    finally:
        remove_tree(root)


if __name__ == "__main__":
    main()
