"""Sealers in threads below FUSE: 4 KiB files created, written and sealed through the store
API (a local mirror on the same disk), by one thread and by eight, alternated. What the
store alone scales to, beside bench/fs.py's writers through the mount.

    python bench/threads.py [--files 800] [--rounds 2]

Not run by CI.
"""
import argparse
import os
import tempfile
import threading
import time

from benchlib import remove_tree
from mirror import new_store
from wormfs.actor import Actor

ACTOR = Actor(0, 0, os.getpid(), "bench")


def run(nthreads, nfiles):
    root = tempfile.mkdtemp(prefix="wormfs-thr-", dir="/var/tmp")
    mroot = tempfile.mkdtemp(prefix="wormfs-thr-m-", dir="/var/tmp")
    st = new_store(root, mroot)
    per = nfiles // nthreads

    def work(k):
        for i in range(per):
            made = st.create(1, b"t%d-%d" % (k, i), 0o644, ACTOR)
            st.open_for_write(made.ino, ACTOR)
            st.write(made.ino, 0, os.urandom(4096), ACTOR)
            st.seal(made.ino, ACTOR)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    syncs = st.group.syncs
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    syncs = st.group.syncs - syncs
    st.close()
    remove_tree(root)
    remove_tree(mroot)
    n = per * nthreads
    return n / dt, cpu / n * 1e6, syncs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for _ in range(args.rounds):
        for n in (1, 8):
            fps, cpu, syncs = run(n, args.files)
            print(f"threads {n}: {fps:7.1f} files/s  cpu {cpu:6.0f} us/file  "
                  f"primary syncs {syncs}")


if __name__ == "__main__":
    main()
