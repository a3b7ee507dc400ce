"""A cold read of one big record through the mount at several read-ahead sizes, alternated
on the same mount (the mount's /sys/class/bdi/MAJ:MIN/read_ahead_kb written before each
read, page cache dropped). Needs root.

    python bench/readahead.py [--mib 256] [--sizes 128,1024,4096] [--rounds 2]

Not run by CI.
"""
import argparse
import os
import tempfile
import time

from benchlib import remove_tree
from fs import Mounted, drop_caches, read_file
from wormfs.fs import mounts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--sizes", default="128,1024,4096")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    m = Mounted(root)
    m.mount()
    try:
        path = os.path.join(m.mnt, "big")
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        bdi = f"/sys/class/bdi/{mounts.find(m.mnt).dev}/read_ahead_kb"
        with open(bdi) as f:
            print(f"read_ahead_kb as mounted: {f.read().strip()}")
        for _ in range(args.rounds):
            figures = []
            for kib in (int(x) for x in args.sizes.split(",")):
                with open(bdi, "w") as f:
                    f.write(f"{kib}\n")
                drop_caches()
                t = time.perf_counter()
                n = read_file(path)
                figures.append(f"{kib:5d}: {n / (time.perf_counter() - t) / 1e6:7.1f} MB/s")
            print("read_ahead_kb  " + "    ".join(figures))
    finally:
        m.umount()
        remove_tree(root)


if __name__ == "__main__":
    main()
