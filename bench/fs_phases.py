"""Where one small file's time goes through the mount: a client writes 4 KiB files (open
O_CREAT|O_EXCL, write, close, each system call timed), and the daemon, started with timing
wrapped around its FUSE handlers and its thread hops, says how long each handler ran, how
long each hop to a worker thread cost beyond the work done there, and how long the
last-close check (closers.writable_fd_open) took.

    python bench/fs_phases.py [--dir /var/tmp] [--files 1000]

A store with a local mirror on the same disk, as the other benchmarks. Not run by CI. The
wrappers are installed by this script in the daemon's process only (``--daemon``), never in
the product.
"""
import argparse
import atexit
import collections
import functools
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import remove_tree


def daemon(report, argv):
    """The daemon's side: wrap, then run ``wormfs`` as the command line would."""
    from wormfs.cli import main
    from wormfs.fs import closers, operations as O
    stats = collections.defaultdict(lambda: [0, 0.0])

    def add(name, dt):
        s = stats[name]
        s[0] += 1
        s[1] += dt

    for name, fn in list(vars(O.WormOperations).items()):
        if inspect.iscoroutinefunction(fn) and not name.startswith("_"):
            def wrap(fn=fn, name=name):
                @functools.wraps(fn)
                async def handler(self, *a):
                    t = time.perf_counter()
                    try:
                        return await fn(self, *a)
                    finally:
                        add(f"handler {name}", time.perf_counter() - t)
                return handler
            setattr(O.WormOperations, name, wrap())
    real_run = O.WormOperations._run

    async def run(self, fn, *a, **kw):
        inner = [0.0]

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                inner[0] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            return await real_run(self, timed, *a, **kw)
        finally:
            name = getattr(fn, "__name__", "?")
            add(f"hop to {name}: overhead", time.perf_counter() - t - inner[0])
            add(f"hop to {name}: work", inner[0])
    O.WormOperations._run = run
    real_check = closers.writable_fd_open

    def check(*a):
        t = time.perf_counter()
        try:
            return real_check(*a)
        finally:
            add("closers.writable_fd_open", time.perf_counter() - t)
    closers.writable_fd_open = check

    def dump():
        with open(report, "w") as f:
            for k, (n, t) in sorted(stats.items()):
                f.write(f"  {k:36s} {n:6d} calls {t / n * 1e6:7.0f} us each\n")
    atexit.register(dump)
    sys.exit(main(argv))


def client(mnt, files):
    data = os.urandom(4096)
    ph = {"open(O_CREAT)": [], "write 4 KiB": [], "close": []}
    for i in range(files + 50):
        t0 = time.perf_counter()
        fd = os.open(os.path.join(mnt, f"x{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        t1 = time.perf_counter()
        os.write(fd, data)
        t2 = time.perf_counter()
        os.close(fd)
        t3 = time.perf_counter()
        if i >= 50:
            for k, a, b in zip(ph, (t0, t1, t2), (t1, t2, t3)):
                ph[k].append((b - a) * 1e6)
    total = 0
    for k, v in ph.items():
        total += statistics.mean(v)
        print(f"  {k:14s} median {statistics.median(v):6.0f} us   mean {statistics.mean(v):6.0f} us")
    print(f"  a file       {total:6.0f} us = {1e6 / total:5.0f} files/s")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--daemon":
        return daemon(sys.argv[2], sys.argv[3:])
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        return client(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    store, mirror, mnt = (os.path.join(root, n) for n in ("s", "m", "mnt"))
    report = os.path.join(root, "daemon.txt")
    os.makedirs(mnt)
    py = [sys.executable]
    subprocess.run(py + ["-m", "wormfs", "mkfs", store, "--mirror", mirror,
                         "--allow-same-device"], check=True, capture_output=True)
    proc = subprocess.Popen(py + [os.path.abspath(__file__), "--daemon", report, "mount",
                                  store, mnt, "--foreground"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, "no mount"
            time.sleep(0.05)
        print(f"{args.files} x 4 KiB through the mount, one writer, local mirror; the client:")
        # A process of its own, as a writer is: not the daemon's parent (the last-close
        # check looks at the writer's descendants, which would then be the daemon).
        subprocess.run(py + [os.path.abspath(__file__), "--client", mnt, str(args.files)],
                       check=True)
    finally:
        subprocess.run(py + ["-m", "wormfs", "umount", mnt], capture_output=True)
        proc.wait(timeout=60)
    print("the daemon (per call):")
    with open(report) as f:
        print(f.read(), end="")
    remove_tree(root)


if __name__ == "__main__":
    main()
