"""Mount time and daemon memory as one store grows: 10k, 100k, 1M records.

    python bench/scale.py [--dir /var/tmp] [--steps 10000,100000,1000000] [--keep]

One store with a local mirror (as `bench/fs.py` makes it) is filled through the store API
(small unique records, 100 per directory) up to each step; at each step the page cache is
dropped, the store is mounted, and the script prints the mount time, the daemon's RSS after
the mount and after stat-ing 1000 records, and the time of `wormfs status`. Neither the mount
time nor the RSS should grow with the number of records (the engine issue's goal).

Filling 1M records takes about an hour on the 2-core VM of bench/RESULTS.md. Needs root and
/dev/fuse. Not run by CI.
"""
import argparse
import os
import subprocess
import tempfile
import time

from benchlib import remove_tree
from fs import WORMFS, Mounted, cold_mount


def fill(store, start, stop):
    from wormfs.actor import Actor
    from wormfs.store.store import Store
    actor = Actor(0, 0, os.getpid(), "bench")
    with Store(store) as st:
        d = None
        for i in range(start, stop):
            if d is None or i % 100 == 0:
                name = b"d%06d" % (i // 100)
                hit = st.lookup(1, name) if i % 100 else None
                d = hit.ino if hit else st.mkdir(1, name, 0o755, actor).ino
            f = st.create(d, b"r%d" % i, 0o644, actor)
            st.write(f.ino, 0, b"record %d\n" % i)
            st.seal(f.ino, actor)


def status_seconds(m):
    t0 = time.perf_counter()
    # Its exit status says the store's health (1: degraded, say), not whether it ran.
    r = subprocess.run([*WORMFS, "status", m.store], capture_output=True)
    if r.returncode not in (0, 1):
        print(r.stderr.decode(errors="replace"))
    return time.perf_counter() - t0


def measure(m, n):
    t, rss0, rss1, status = cold_mount(m, n, status_seconds)
    print(f"{n:8d}   {t * 1000:7.0f} ms   {rss0 / 1024:10.1f} MiB   {rss1 / 1024:10.1f} MiB"
          f"   {status * 1000:7.0f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--steps", default="10000,100000,1000000")
    ap.add_argument("--keep", action="store_true", help="leave the store behind")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-scale-", dir=args.dir)
    m = Mounted(root)
    print(f"store {m.store}")
    print(" records   mount time   RSS after mount   after 1000 stats   wormfs status",
          flush=True)
    try:
        done = 0
        for n in (int(s) for s in args.steps.split(",")):
            t = time.perf_counter()
            fill(m.store, done, n)
            print(f"   (filled {done}..{n} in {time.perf_counter() - t:.0f} s)", flush=True)
            done = n
            measure(m, n)
    finally:
        if not args.keep:
            remove_tree(root)


if __name__ == "__main__":
    main()
