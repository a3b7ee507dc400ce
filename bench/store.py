"""Store benchmark (below FUSE): sealing through the store vs writing the same bytes straight
to the same disk with one fsync per file, interleaved in one run.

    python bench/store.py [--dir /var/tmp] [--mib 512] [--files 2000] [--rounds 3]

Two workloads: one big file of unique data (write to staging + chunk + hash + append + read
back + fsync vs write + fsync), and many 4 KiB files (group commit helps only with concurrent
sealers; this one is sequential, the worst case). Not run by CI.
"""
import argparse
import os
import shutil
import statistics
import tempfile

from benchlib import raw_small, raw_write, remove_tree, seal_big, seal_small, timed
from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, Store, create_store


def new_store(root):
    path = tempfile.mkdtemp(dir=root)
    shutil.rmtree(path)
    create_store(path, role="primary", mode="compliance", label="bench",
                 settings={"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": "24h"},
                 init={"default_retention": "1d", "admin_gid": None})
    return Store(path)



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    raw_dir = os.path.join(root, "raw")
    os.makedirs(raw_dir)
    st = new_store(root)
    try:
        big, small = [], []
        for r in range(args.rounds):
            data = os.urandom(args.mib << 20)
            w = timed(seal_big, st, data, b"big%d" % r)
            b = timed(raw_write, [raw_dir], f"big{r}", os.urandom(args.mib << 20))
            big.append((len(data) / w / 1e6, len(data) / b / 1e6))
            blobs = [os.urandom(4096) for _ in range(args.files)]
            w = timed(seal_small, st, blobs, b"%d" % r)
            b = timed(raw_small, [raw_dir], blobs, r)
            small.append((args.files / w, args.files / b))
        for label, rows, unit in (("big file, unique data", big, "MB/s"),
                                  ("4 KiB files, sequential", small, "files/s")):
            w = statistics.median(x for x, _ in rows)
            b = statistics.median(y for _, y in rows)
            print(f"{label:26s} wormfs seal {w:8.1f} {unit}   raw write+fsync {b:8.1f} {unit}"
                  f"   ratio {w / b:5.2f}x")
        print(f"fsyncs for {sum(1 for _ in range(args.rounds)) * (args.files + 1)} seals: "
              f"{st.group.syncs}")
    finally:
        st.close()
        remove_tree(root)


if __name__ == "__main__":
    main()
