"""What the store benchmarks share: sealing files through the Store API, timing, clean-up."""
import os
import shutil
import time

from wormfs.actor import Actor
from wormfs.store.hostfs import set_immutable

ACTOR = Actor(0, 0, os.getpid(), "bench")
BLOCK = 1 << 20


def seal_big(st, data, name):
    """One file written in 1 MiB blocks, as FUSE delivers them, then sealed."""
    f = st.create(1, name, 0o644, ACTOR)
    for off in range(0, len(data), BLOCK):
        st.write(f.ino, off, data[off:off + BLOCK])
    st.seal(f.ino, ACTOR)


def seal_small(st, blobs, tag):
    """One file per blob, each created, written and sealed in turn."""
    for i, b in enumerate(blobs):
        f = st.create(1, b"s%s-%d" % (tag, i), 0o644, ACTOR)
        st.write(f.ino, 0, b)
        st.seal(f.ino, ACTOR)


def raw_write(dirs, name, data):
    """The baseline: the same bytes written in 1 MiB blocks and fsynced, once per directory
    (one directory: the raw disk; two: what a second copy costs)."""
    for d in dirs:
        with open(os.path.join(d, name), "wb") as f:
            for off in range(0, len(data), BLOCK):
                f.write(data[off:off + BLOCK])
            f.flush()
            os.fsync(f.fileno())


def raw_small(dirs, blobs, tag):
    for i, b in enumerate(blobs):
        raw_write(dirs, f"s{tag}-{i}", b)


def timed(fn, *a):
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def remove_tree(root):
    """Delete a benchmark's directory, finished (immutable) segments included."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".seg"):
                set_immutable(os.path.join(dirpath, f), False)
    shutil.rmtree(root, ignore_errors=True)
