"""One writer holding many files open, then closing them: each close checks the writer's
descriptors in /proc (fs/closers.py), so its cost grows with how many it holds.

    python bench/open_files.py [--files 1000]

Not run by CI.
"""
import argparse
import os
import resource
import tempfile
import time

from benchlib import remove_tree
from fs import Mounted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.files + 100)), hard))
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    m = Mounted(root)
    m.mount()
    try:
        t = time.perf_counter()
        fds = []
        for i in range(args.files):
            fds.append(os.open(os.path.join(m.mnt, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o644))
            os.write(fds[-1], b"x" * 100)
        opened = time.perf_counter() - t
        t = time.perf_counter()
        for fd in fds:
            os.close(fd)
        closed = time.perf_counter() - t
        print(f"{args.files} files held open: create+write {opened:.2f} s, "
              f"closing them {closed:.2f} s ({closed / args.files * 1000:.1f} ms a close)")
    finally:
        m.umount()
        remove_tree(root)


if __name__ == "__main__":
    main()
