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
        st.write(f["ino"], off, data[off:off + BLOCK])
    st.seal(f["ino"], ACTOR)


def seal_small(st, blobs, tag):
    """One file per blob, each created, written and sealed in turn."""
    for i, b in enumerate(blobs):
        f = st.create(1, b"s%s-%d" % (tag, i), 0o644, ACTOR)
        st.write(f["ino"], 0, b)
        st.seal(f["ino"], ACTOR)


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
