"""File-system benchmark: the real mount against the same work done straight on the backing
disk, interleaved in one run so that the ratio means something on a noisy machine.

    python bench/fs.py [--dir /var/tmp] [--mib 1024] [--files 3000] [--rounds 3]
                       [--records 10000,100000]

1. sequential write of unique data: through the mount (open, write 1 MiB blocks, close; close
   returns after the seal) vs write + fsync to a file in the same directory tree;
2. cold read of that file (page cache dropped) through the mount vs the raw file;
3. 4 KiB files created, written and closed: 1 writer and 8 writers (threads), vs raw create +
   write + fsync with the same threads;
   each of 1-3 also beside two baselines: the FUSE ceiling (the same loop through a null
   pyfuse3 + trio daemon, bench/nullfs.py, which keeps nothing) and the durability floor
   (what the rule "sealed and mirrored when close returns" costs with wormfs removed: the
   raw work on the primary's disk with its fsync, then the same bytes appended to a file
   in the mirror's directory with an fdatasync, one after the other; the bench's mirror is
   on the same disk as the primary, as on this machine);
4. the daemon's RSS and the mount time with N records in the store (records made through the
   store API, which is faster than through FUSE): neither should grow with N.

Needs root and /dev/fuse. Not run by CI; figures go to bench/RESULTS.md.
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

WORMFS = [sys.executable, "-m", "wormfs"]
HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 1 << 20


def sh(*args):
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class Mounted:
    def __init__(self, root):
        self.root = root
        self.store = os.path.join(root, "store")
        self.mnt = os.path.join(root, "mnt")
        os.makedirs(self.mnt)
        sh(*WORMFS, "mkfs", self.store, "--mirror", os.path.join(root, "mirror"),
           "--allow-same-device", "--default-retention", "1d")

    def mount(self):
        t = time.perf_counter()
        sh(*WORMFS, "mount", self.store, self.mnt)
        return time.perf_counter() - t

    def umount(self):
        sh(*WORMFS, "umount", self.mnt)

    def daemon_rss_kib(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if b"mount" in cmd and self.store.encode() in cmd:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                return int(line.split()[1])
            except OSError:
                continue
        return None


def write_file(path, data, fsync):
    with open(path, "wb") as f:
        mv = memoryview(data)
        for off in range(0, len(data), BLOCK):
            f.write(mv[off:off + BLOCK])
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def read_file(path):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                return n
            n += len(b)


def run_threads(work, threads):
    """Seconds for ``work(k)`` to finish in ``threads`` threads, k = 0 .. threads - 1."""
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return time.perf_counter() - t


def small_files(directory, blobs, threads, fsync, tag):
    def work(k):
        for i in range(k, len(blobs), threads):
            with open(os.path.join(directory, f"{tag}-{i}"), "wb") as f:
                f.write(blobs[i])
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
    return run_threads(work, threads)


def floor_small(primary, mirror, blobs, threads):
    """Raw create + write + fsync of each file, then its bytes appended to the writer's own
    log beside the mirror and fdatasynced: the two syncs every sealed, mirrored file needs,
    in the order it needs them (the mirror never holds what the primary may lose)."""
    def work(k):
        fd = os.open(os.path.join(mirror, f"log-{k}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        try:
            for i in range(k, len(blobs), threads):
                with open(os.path.join(primary, f"f-{i}"), "wb") as f:
                    f.write(blobs[i])
                    f.flush()
                    os.fsync(f.fileno())
                os.write(fd, blobs[i])
                os.fdatasync(fd)
        finally:
            os.close(fd)
    return run_threads(work, threads)


def floor_write(primary, mirror, data):
    write_file(primary, data, True)
    write_file(mirror, data, True)


class NullMount:
    """bench/nullfs.py mounted on ``mnt`` (the FUSE ceiling)."""

    def __init__(self, mnt):
        self.mnt = mnt
        os.makedirs(mnt)
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "nullfs.py"), mnt])
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the null daemon did not mount")
            time.sleep(0.05)

    def umount(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        self.proc.wait(timeout=20)


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def line(label, ours, theirs, unit, base_label, null=None, floor=None):
    extra = ""
    if null is not None:
        extra += f"   | null daemon {null:9.1f} ({null / theirs:4.2f}x)"
    if floor is not None:
        extra += f"   | two-sync floor {floor:9.1f} ({floor / theirs:4.2f}x)"
    print(f"{label:28} wormfs {ours:9.1f} {unit}   {base_label} {theirs:9.1f} {unit}   "
          f"ratio {ours / theirs:5.2f}x{extra}", flush=True)


def bench_io(root, args):
    m = Mounted(os.path.join(root, "io"))
    raw = os.path.join(root, "raw")
    rawm = os.path.join(root, "raw-mirror")
    os.makedirs(raw)
    os.makedirs(rawm)
    m.mount()
    null = NullMount(os.path.join(root, "null"))
    try:
        w_ours, w_raw, r_ours, r_raw, w_null, w_floor, r_null = [], [], [], [], [], [], []
        size = args.mib << 20
        cold = True
        for r in range(args.rounds):
            data = os.urandom(size)                       # unique every round: no dedup
            w_ours.append(size / timed(write_file, os.path.join(m.mnt, f"big{r}"), data, False))
            w_raw.append(size / timed(write_file, os.path.join(raw, f"big{r}"), data, True))
            w_null.append(size / timed(write_file, os.path.join(null.mnt, f"big{r}"), data,
                                       False))
            w_floor.append(size / timed(floor_write, os.path.join(raw, f"fl{r}"),
                                        os.path.join(rawm, f"fl{r}"), data))
            os.unlink(os.path.join(raw, f"fl{r}"))
            os.unlink(os.path.join(rawm, f"fl{r}"))
            del data
            cold = drop_caches() and cold
            r_ours.append(size / timed(read_file, os.path.join(m.mnt, f"big{r}")))
            cold = drop_caches() and cold
            r_raw.append(size / timed(read_file, os.path.join(raw, f"big{r}")))
            cold = drop_caches() and cold
            r_null.append(size / timed(read_file, os.path.join(null.mnt, f"big{r}")))
        med = statistics.median
        print(f"{args.mib} MiB unique data, {args.rounds} interleaved rounds, median")
        line("sequential write", med(w_ours) / 1e6, med(w_raw) / 1e6, "MB/s",
             "raw write+fsync", med(w_null) / 1e6, med(w_floor) / 1e6)
        line("cold read" if cold else "read (caches NOT dropped)", med(r_ours) / 1e6,
             med(r_raw) / 1e6, "MB/s", "raw read       ", med(r_null) / 1e6)
        blobs = [os.urandom(4096) for _ in range(args.files)]
        for threads in (1, 8):
            ours, theirs, nulls, floors = [], [], [], []
            for r in range(args.rounds):
                d1 = os.path.join(m.mnt, f"small{threads}-{r}")
                d2 = os.path.join(raw, f"small{threads}-{r}")
                d3 = os.path.join(null.mnt, f"small{threads}-{r}")
                d4 = os.path.join(raw, f"fl{threads}-{r}")
                d5 = os.path.join(rawm, f"fl{threads}-{r}")
                for d in (d1, d2, d3, d4, d5):
                    os.mkdir(d)
                ours.append(args.files / small_files(d1, blobs, threads, False, "f"))
                theirs.append(args.files / small_files(d2, blobs, threads, True, "f"))
                nulls.append(args.files / small_files(d3, blobs, threads, False, "f"))
                floors.append(args.files / floor_small(d4, d5, blobs, threads))
            line(f"{args.files} x 4 KiB, {threads} writer{'s' if threads > 1 else ''}",
                 med(ours), med(theirs), "files/s", "raw create+fsync", med(nulls),
                 med(floors))
    finally:
        null.umount()
        m.umount()


def fill(store, n):
    """Make n small records through the store API (unique content, 100 per directory)."""
    from wormfs.actor import Actor
    from wormfs.store.store import Store
    actor = Actor(0, 0, os.getpid(), "bench")
    with Store(store) as st:
        d = None
        for i in range(n):
            if i % 100 == 0:
                d = st.mkdir(1, b"d%06d" % (i // 100), 0o755, actor).ino
            f = st.create(d, b"r%d" % i, 0o644, actor)
            st.write(f.ino, 0, b"record %d\n" % i)
            st.seal(f.ino, actor)


def cold_mount(m, n, while_mounted=None):
    """Mount ``m`` (n records made by ``fill``) with the page cache dropped: (mount seconds,
    daemon RSS KiB after the mount, after stat-ing 1000 records, what ``while_mounted(m)``
    returned)."""
    drop_caches()
    t = m.mount()
    try:
        rss0 = m.daemon_rss_kib()
        for i in range(0, min(n, 1000)):
            os.stat(os.path.join(m.mnt, "d%06d" % (i // 100), "r%d" % i))
        rss1 = m.daemon_rss_kib()
        extra = while_mounted(m) if while_mounted else None
    finally:
        m.umount()
    return t, rss0, rss1, extra


def bench_scale(root, counts):
    print("records   mount time   daemon RSS after mount   after stat of 1000 records")
    for n in counts:
        m = Mounted(os.path.join(root, f"scale{n}"))
        fill(m.store, n)
        t, rss0, rss1, _ = cold_mount(m, n)
        print(f"{n:7d}   {t * 1000:7.0f} ms   {rss0 / 1024:10.1f} MiB   {rss1 / 1024:18.1f} MiB",
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", default="10000,100000")
    ap.add_argument("--skip-io", action="store_true")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    try:
        if not args.skip_io:
            bench_io(root, args)
        counts = [int(c) for c in args.records.split(",") if c]
        if counts:
            bench_scale(root, counts)
    finally:
        subprocess.run(["chattr", "-R", "-i", root], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
