"""Mount time and daemon memory as one store grows: 10k, 100k, 1M records.

    python bench/scale.py [--dir /var/tmp] [--steps 10000,100000,1000000] [--keep] [--commands]

One store with a local mirror (as `bench/fs.py` makes it) is filled through the store API
(small unique records, 100 per directory) up to each step; at each step the page cache is
dropped, the store is mounted, and the script prints the mount time, the daemon's RSS after
the mount and after stat-ing 1000 records, and the time of `wormfs status`. Neither the mount
time nor the RSS should grow with the number of records (the engine issue's goal).

Filling 1M records takes about an hour on the 2-core VM of bench/RESULTS.md (with
``eatmydata`` installed the fill runs under it: no fsync per record, about 1.5 ms a record).
Needs root and /dev/fuse. Not run by CI.

``--commands`` also runs, at each step and with the page cache dropped before each, the
commands that walk the store (verify, verify --deep, audit --verify, ls --path, ls --to a
date before any record, dispose --dry-run, exports of 1000 records chosen by path and by
serial, and an export of every record) and prints each one's time and its own
peak memory: the most its heap and private anonymous maps held (VmData, what RLIMIT_DATA
caps in tests/scale; the index and segments it maps from disk are page cache and are not
counted), and its RssAnon.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import remove_tree
from fs import WORMFS, Mounted, cold_mount, drop_caches

COMMANDS = [
    ("verify", ["verify"]),
    ("verify --deep", ["verify", "--deep"]),
    ("audit --verify", ["audit", "--verify"]),
    ("ls --path (1%)", ["ls", "--path", "/d*/r*17", "--quiet"]),
    ("ls --path one dir", ["ls", "--path", "/d000017/*", "--quiet"]),
    ("ls --to (no match)", ["ls", "--to", "2000-01-01", "--quiet"]),
    ("dispose --dry-run", ["dispose", "--dry-run"]),
    ("export 1000 by path", ["export", "--out", "{out}", "--path", "/d00001?/*"]),
    ("export 1000 by serial", ["export", "--out", "{out}", "--serial", "1001-2000"]),
    ("export all", ["export", "--out", "{out}"]),
]


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


def fill_fast(store, start, stop):
    """fill() in a child process, under eatmydata when it is installed."""
    fast = ["eatmydata"] if shutil.which("eatmydata") else []
    subprocess.run([*fast, sys.executable, __file__, "--fill", store, str(start), str(stop)],
                   check=True)


def peak_memory(cmd):
    """Run ``cmd``; (seconds, exit status, peak VmData KiB, peak RssAnon KiB), polled every
    5 ms from /proc (a peak shorter than that can be missed)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = anon = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmData:"):
                        data = max(data, int(line.split()[1]))
                    elif line.startswith("RssAnon:"):
                        anon = max(anon, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.005)
    return time.perf_counter() - t, p.returncode, data, anon


def measure_commands(store, n):
    for i, (label, args) in enumerate(COMMANDS):
        out = os.path.join(os.path.dirname(store), f"export-{n}-{i}.zip")
        drop_caches()
        args = [a.format(out=out) for a in args]
        t, rc, data, anon = peak_memory([*WORMFS, *args, store])
        if os.path.exists(out):
            os.unlink(out)
        status = "" if rc in (0, 1) else f"   (exit {rc})"
        print(f"{n:9d}   {label:20s} {t:8.1f} s   {data / 1024:8.1f} MiB   "
              f"{anon / 1024:8.1f} MiB{status}", flush=True)


def status_seconds(m):
    t0 = time.perf_counter()
    # Its exit status says the store's health (1: degraded, say), not whether it ran.
    r = subprocess.run([*WORMFS, "status", m.store], capture_output=True)
    if r.returncode not in (0, 1):
        print(r.stderr.decode(errors="replace"))
    return time.perf_counter() - t0


def disk_per_record(unit, n):
    """(index bytes, of which inodes, segment bytes) per record of one unit: the index as the
    LMDB pages its databases use (not data.mdb's size, which keeps freed pages)."""
    import lmdb
    env = lmdb.open(os.path.join(unit, "index"), readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
        total = inodes = 0
        for name in names:
            with env.begin() as txn:
                s = txn.stat(env.open_db(name, txn=txn, create=False))
            b = s["psize"] * (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"])
            total += b
            inodes += b if name == b"inodes" else 0
    finally:
        env.close()
    seg = os.path.join(unit, "segments")
    segs = sum(os.path.getsize(os.path.join(seg, f)) for f in os.listdir(seg))
    return total / n, inodes / n, segs / n


def measure(m, n):
    t, rss0, rss1, status = cold_mount(m, n, status_seconds)
    print(f"{n:8d}   {t * 1000:7.0f} ms   {rss0 / 1024:10.1f} MiB   {rss1 / 1024:10.1f} MiB"
          f"   {status * 1000:7.0f} ms", flush=True)
    ix, inodes, segs = disk_per_record(m.store, n)
    print(f"   per record: index {ix:.0f} B (inodes {inodes:.0f} B), segments {segs:.0f} B",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--steps", default="10000,100000,1000000")
    ap.add_argument("--keep", action="store_true", help="leave the store behind")
    ap.add_argument("--commands", action="store_true",
                    help="also time the whole-store commands and their peak memory")
    ap.add_argument("--fill", nargs=3, metavar=("STORE", "START", "STOP"),
                    help=argparse.SUPPRESS)   # fill_fast's child
    args = ap.parse_args()
    if args.fill:
        fill(args.fill[0], int(args.fill[1]), int(args.fill[2]))
        return
    root = tempfile.mkdtemp(prefix="wormfs-scale-", dir=args.dir)
    m = Mounted(root)
    print(f"store {m.store}")
    print(" records   mount time   RSS after mount   after 1000 stats   wormfs status",
          flush=True)
    try:
        done = 0
        for n in (int(s) for s in args.steps.split(",")):
            t = time.perf_counter()
            fill_fast(m.store, done, n)
            print(f"   (filled {done}..{n} in {time.perf_counter() - t:.0f} s)", flush=True)
            done = n
            measure(m, n)
            if args.commands:
                print("  records   command                  time    VmData peak  RssAnon peak",
                      flush=True)
                measure_commands(m.store, n)
    finally:
        if not args.keep:
            remove_tree(root)


if __name__ == "__main__":
    main()
