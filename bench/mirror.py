"""What the mirror costs: sealing with a mirror unit vs without, below FUSE, interleaved in one
run, beside the raw baseline of writing the same bytes once vs twice (to the store's and the
mirror's directories, each fsynced).

    python bench/mirror.py [--dir /var/tmp] [--mirror-dir DIR] [--mib 256] [--files 1000]
                           [--rounds 3]

The issue's goal: the mirror should cost little more than the second disk write, so compare
"with / without mirror" against "raw twice / raw once". Not run by CI.
"""
import argparse
import os
import statistics
import tempfile
import uuid

from benchlib import raw_small, raw_write, remove_tree, seal_big, seal_small, timed
from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, Store, create_store
from wormfs.store.unit import write_unit
SETTINGS = {"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": "24h",
            "mirror_max_lag": "24h"}


def new_store(root, mirror_root=None):
    path = os.path.join(root, uuid.uuid4().hex)
    peer = {}
    if mirror_root:
        log_uuid, mpath = str(uuid.uuid4()), os.path.join(mirror_root, uuid.uuid4().hex)
        write_unit(mpath, role="mirror", mode="compliance", peer_serial="WU-P",
                   peer_path=path, serial="WU-M", log_uuid=log_uuid)
        peer = dict(peer_serial="WU-M", peer_path=mpath, serial="WU-P", log_uuid=log_uuid)
    create_store(path, role="primary", mode="compliance", label="bench", settings=SETTINGS,
                 init={"default_retention": "1d", "admin_gid": None}, **peer)
    return Store(path)



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--mirror-dir", help="where the mirror and the second raw copy go "
                    "(default: beside the store; give another disk to see a real duplicate)")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    mroot = tempfile.mkdtemp(prefix="wormfs-bench-m-", dir=args.mirror_dir or args.dir)
    raw1, raw2 = os.path.join(root, "raw"), os.path.join(mroot, "raw")
    os.makedirs(raw1)
    os.makedirs(raw2)
    alone, paired = new_store(root), new_store(root, mroot)
    rows = {"big": [], "small": []}
    try:
        for r in range(args.rounds):
            data = os.urandom(args.mib << 20)
            n = len(data)
            rows["big"].append((
                n / timed(seal_big, alone, data, b"a%d" % r),
                n / timed(seal_big, paired, os.urandom(n), b"p%d" % r),
                n / timed(raw_write, [raw1], f"b1-{r}", data),
                n / timed(raw_write, [raw1, raw2], f"b2-{r}", data)))
            blobs = [os.urandom(4096) for _ in range(args.files)]
            k = args.files
            rows["small"].append((
                k / timed(seal_small, alone, blobs, b"a%d" % r),
                k / timed(seal_small, paired, [os.urandom(4096) for _ in blobs], b"p%d" % r),
                k / timed(raw_small, [raw1], blobs, f"1-{r}"),
                k / timed(raw_small, [raw1, raw2], blobs, f"2-{r}")))
        print(f"store {root}, mirror {mroot}; median of {args.rounds} interleaved rounds")
        for label, key, unit, scale in (("big file, unique data", "big", "MB/s", 1e6),
                                        ("4 KiB files, sequential", "small", "files/s", 1)):
            a, p, r1, r2 = (statistics.median(row[i] for row in rows[key]) / scale
                            for i in range(4))
            print(f"{label:24s} seal alone {a:8.1f}  with mirror {p:8.1f} {unit}  "
                  f"ratio {p / a:4.2f}x   | raw once {r1:8.1f}  raw twice {r2:8.1f}  "
                  f"ratio {r2 / r1:4.2f}x")
    finally:
        alone.close()
        paired.close()
        remove_tree(root)
        remove_tree(mroot)


if __name__ == "__main__":
    main()
