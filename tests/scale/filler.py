"""Fill a primary and its mirror with small records, fast, below FUSE: the bulk load of
tests/scale (`python tests/scale/filler.py DIR RECORDS [--expiring]`). 100 records a
directory, each a few hundred bytes, all through the store's own create/write/seal. The test
runs it under eatmydata where that is installed (its fsyncs become no-ops: a test store, not
a store anyone keeps).

``--expiring`` (bench/dispose.py): both units on a fake clock (tests/conftest.FakeTime, at
its start) and a one-day default retention, so that a process that opens the store with a
FakeTime advanced by a month finds every record expired."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tests.conftest import FakeTime, make_pair  # noqa: E402
from wormfs.actor import Actor  # noqa: E402
from wormfs.store.store import Store  # noqa: E402


def fill(base, n, expiring=False):
    clock = {"time_source": FakeTime(), "mirror_time_source": FakeTime()} if expiring else {}
    p, m = make_pair(os.path.join(base, "p"), os.path.join(base, "m"),
                     default_retention="1d" if expiring else "6y", **clock)
    actor = Actor(0, 0, os.getpid(), "filler")
    with Store(p, **clock) as st:
        d = None
        for i in range(n):
            if i % 100 == 0:
                d = st.mkdir(1, b"d%06d" % (i // 100), 0o755, actor).ino
            f = st.create(d, b"msg-%08d.eml" % i, 0o644, actor)
            st.write(f.ino, 0, b"record %d\n" % i * 30)
            st.seal(f.ino, actor)
    return p, m


if __name__ == "__main__":
    t = time.perf_counter()
    fill(sys.argv[1], int(sys.argv[2]), expiring="--expiring" in sys.argv[3:])
    print(f"filled {sys.argv[2]} records in {time.perf_counter() - t:.1f} s")
