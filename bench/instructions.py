"""User-space instructions per small file, counted by valgrind: the steady figure for A/B work
on a host whose CPU and disk timings swing by 2x within the hour.

    python bench/instructions.py [--files 100,400] [--no-mirror] [--src OTHER/src ...]

Runs create + write(4 KiB) + seal through the store API (a local mirror unless --no-mirror),
under ``valgrind --tool=callgrind``, once with each of the two file counts; the difference
divided by the difference in files is the instructions of one file, start-up excluded. Each
``--src`` (the ``src`` directory of another checkout, say a git worktree of the base commit)
is measured the same way, beside this checkout's. Kernel work (fsync, page-cache copies) is
not counted: the timed benchmarks (phases.py, fs.py) are still the ones that say how fast.

Two runs of the same code agree to about 0.1%. Not run by CI. Needs valgrind.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OWN_SRC = os.path.join(os.path.dirname(HERE), "src")


def child(n, mirror):
    sys.path.insert(0, HERE)
    from benchlib import remove_tree
    from mirror import new_store
    from wormfs.actor import Actor
    import wormfs.store.index as index
    index.MAP_SIZE = 1 << 30  # valgrind cannot reserve the terabyte of address space
    actor = Actor(0, 0, os.getpid(), "bench")
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir="/var/tmp")
    mroot = tempfile.mkdtemp(prefix="wormfs-bench-m-", dir="/var/tmp") if mirror else None
    st = new_store(root, mroot)
    try:
        blobs = [os.urandom(4096) for _ in range(n)]
        for i, data in enumerate(blobs):
            made = st.create(1, b"f%d" % i, 0o644, actor)
            ino = made["ino"] if isinstance(made, dict) else made.ino  # a --src before 2026-12
            st.write(ino, 0, data)
            st.seal(ino, actor)
    finally:
        st.close()
        remove_tree(root)
        if mroot:
            remove_tree(mroot)


def count(src, n, mirror):
    env = dict(os.environ, PYTHONPATH=src)
    out = tempfile.mktemp(prefix="wormfs-callgrind-", dir="/var/tmp")
    try:
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, os.path.abspath(__file__), "--child", str(n)]
                           + ([] if mirror else ["--no-mirror"]),
                           env=env, capture_output=True, text=True)
    finally:
        if os.path.exists(out):
            os.unlink(out)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        sys.exit(f"valgrind run failed:\n{r.stderr[-3000:]}")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default="100,400")
    ap.add_argument("--no-mirror", action="store_true")
    ap.add_argument("--src", action="append", default=[],
                    help="another checkout's src directory to measure beside this one")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, not args.no_mirror)
    a, b = (int(x) for x in args.files.split(","))
    print(f"4 KiB files, {'no mirror' if args.no_mirror else 'local mirror'}: user-space "
          f"instructions per file ((run of {b} - run of {a}) / {b - a})")
    for src in [OWN_SRC] + args.src:
        ia, ib = count(src, a, not args.no_mirror), count(src, b, not args.no_mirror)
        print(f"  {(ib - ia) / (b - a) / 1e6:7.3f} M   {src}", flush=True)


if __name__ == "__main__":
    main()
