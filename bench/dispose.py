"""Disposal of many expired records while records keep sealing: how long seals wait.

    python bench/dispose.py [--dir /var/tmp] [--records 100000]

A primary and a local mirror are filled below FUSE (tests/scale/filler.py --expiring, under
eatmydata where installed) with small records on a fake clock and a one-day retention. This
process opens the store with that clock a month later, when every record has expired, and
runs `wormfs dispose`'s code (store/disposal.run) in one thread while another seals a small
record after another (create, write, seal, with their real fsyncs). It prints the dispose
run's time and the process's RssAnon before and at most during it (its own memory, not the
mapped index), and each seal's latency before and during the run: the
longest seal during the run is how long disposal stalled the store. The same run against an
older tree (PYTHONPATH) is the baseline. Needs no root. Not run by CI.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from tests.conftest import FakeTime, clear_immutable  # noqa: E402
from wormfs.store import disposal  # noqa: E402
from wormfs.store.store import Store  # noqa: E402

MONTH = 30 * 86400


def rss_anon_kib():
    """This process's private anonymous memory (its heap; not the index and segments it
    maps, which are page cache)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakAnon(threading.Thread):
    """The most RssAnon held while it runs, sampled every 10 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = rss_anon_kib(), threading.Event()

    def run(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, rss_anon_kib())


def seal_one(st, parent, i):
    t = time.perf_counter()
    f = st.create(parent, b"live-%08d" % i, 0o644, None)
    st.write(f.ino, 0, b"a record sealed during disposal %d\n" % i)
    st.seal(f.ino, None)
    return time.perf_counter() - t


def describe(lat):
    lat = sorted(lat)
    if not lat:
        return "no seals"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return (f"{len(lat)} seals, median {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, longest {lat[-1] * 1000:.1f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--records", type=int, default=100000)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="wormfs-dispose-", dir=args.dir)
    try:
        fast = ["eatmydata"] if shutil.which("eatmydata") else []
        t = time.perf_counter()
        subprocess.run([*fast, sys.executable, os.path.join(ROOT, "tests/scale/filler.py"),
                        base, str(args.records), "--expiring"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"filled {args.records} records in {time.perf_counter() - t:.0f} s", flush=True)
        ft, mt = FakeTime(), FakeTime()
        ft.advance(MONTH)
        mt.advance(MONTH)
        with Store(os.path.join(base, "p"), time_source=ft, mirror_time_source=mt) as st:
            parent = st.mkdir(1, b"live", 0o755, None).ino
            before = [seal_one(st, parent, i) for i in range(200)]
            t = time.perf_counter()
            dry = disposal.run(st, None, dry_run=True)
            t_dry = time.perf_counter() - t
            n_dry = len(dry["records"]) + dry.get("unlisted_records", 0)
            during, stop = [], threading.Event()

            def sealer():
                i = 1000
                while not stop.is_set():
                    during.append(seal_one(st, parent, i))
                    i += 1
            th = threading.Thread(target=sealer)
            anon0, peak = rss_anon_kib(), PeakAnon()
            peak.start()
            th.start()
            t = time.perf_counter()
            cert = disposal.run(st, None)
            t_run = time.perf_counter() - t
            stop.set()
            th.join()
            peak.stop.set()
            peak.join()
        n = len(cert["records"]) + cert.get("unlisted_records", 0)
        events = len(cert.get("events") or [cert["event"]])
        print(f"dry run: {n_dry} records in {t_dry:.1f} s")
        print(f"dispose: {n} records, {cert['chunks']} chunks, {events} dispose events, "
              f"{t_run:.1f} s ({t_run / max(n, 1) * 1e6:.0f} us a record); RssAnon "
              f"{anon0 / 1024:.1f} MiB before, {peak.peak / 1024:.1f} MiB at most during")
        print(f"seals before: {describe(before)}")
        print(f"seals during: {describe(during)}")
    finally:
        clear_immutable(base)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
