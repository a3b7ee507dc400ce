"""Where one small file's time goes below FUSE: create, write and seal of 4 KiB files through
the store API, each phase timed on its own (no profiler), with a local mirror unless
--no-mirror; beside the raw create+write+fsync of the same bytes in the same run.

    python bench/phases.py [--dir /var/tmp] [--files 2000] [--no-mirror]

Not run by CI. Prints the median and mean microseconds of each phase, and the primary's
fdatasync (SegmentLog.sync timed by wrapping it). The process's CPU time per phase (all
threads) is printed too: on a host whose disk latency swings by 2x within minutes it is the
steadier figure for comparing two versions of the code.
"""
import argparse
import os
import statistics
import tempfile
import time

from benchlib import remove_tree
from mirror import new_store
from wormfs.actor import Actor

ACTOR = Actor(0, 0, os.getpid(), "bench")


def timed_syncs(log_, sink):
    real = log_.sync

    def sync():
        t = time.perf_counter()
        real()
        sink.append(time.perf_counter() - t)
    log_.sync = sync


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--no-mirror", action="store_true")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    mroot = None if args.no_mirror else tempfile.mkdtemp(prefix="wormfs-bench-m-",
                                                         dir=args.dir)
    raw = os.path.join(root, "raw")
    os.makedirs(raw)
    st = new_store(root, mroot)
    syncs = []
    try:
        timed_syncs(st.log, syncs)
        st.group._sync = st.log.sync  # the group commit holds the method it was built with
        phases = {"create": [], "write": [], "seal": [], "raw file": []}
        cpu = {"create": [], "write": [], "seal": []}
        blobs = [os.urandom(4096) for _ in range(args.files + 50)]
        for i, data in enumerate(blobs):
            c0, t0 = time.process_time(), time.perf_counter()
            ino = st.create(1, b"f%d" % i, 0o644, ACTOR).ino
            c1, t1 = time.process_time(), time.perf_counter()
            st.write(ino, 0, data)
            c2, t2 = time.process_time(), time.perf_counter()
            st.seal(ino, ACTOR)
            c3, t3 = time.process_time(), time.perf_counter()
            fd = os.open(os.path.join(raw, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            t4 = time.perf_counter()
            if i >= 50:  # warmed up
                for k, a, b in (("create", t0, t1), ("write", t1, t2), ("seal", t2, t3),
                                ("raw file", t3, t4)):
                    phases[k].append((b - a) * 1e6)
                for k, a, b in (("create", c0, c1), ("write", c1, c2), ("seal", c2, c3)):
                    cpu[k].append((b - a) * 1e6)
        n = len(phases["seal"])
        print(f"{n} x 4 KiB, one at a time, {'no mirror' if args.no_mirror else 'local mirror'}")
        for k, v in phases.items():
            c = f"   cpu mean {statistics.mean(cpu[k]):7.0f} us" if k in cpu else ""
            print(f"  {k:10s} median {statistics.median(v):7.0f} us   mean {statistics.mean(v):7.0f} us{c}")
        total = sum(statistics.mean(phases[k]) for k in ("create", "write", "seal"))
        print(f"  wormfs file {total:7.0f} us = {1e6 / total:6.0f} files/s; raw "
              f"{1e6 / statistics.mean(phases['raw file']):6.0f} files/s")
        print(f"  wormfs cpu  {sum(statistics.mean(v) for v in cpu.values()):7.0f} us per file "
              "(process time, all threads: both units' Python and system calls)")
        if syncs:
            print(f"  primary fdatasync: {len(syncs)} calls, mean {statistics.mean(syncs) * 1e6:5.0f} us")
    finally:
        st.close()
        remove_tree(root)
        if mroot:
            remove_tree(mroot)


if __name__ == "__main__":
    main()
