"""Export throughput (R32: "a documented throughput applies to bulk export"), beside
baselines in the same run: copying the same files out of the mount with cp -r, and out of a
plain directory on the same disk with cp -r (what the disk and page cache allow).

    .venv/bin/python bench/export.py [--mib 256] [--small 2000] [--rounds 3]

Writes the files through a real mount (needs root and /dev/fuse), then per round: export to a
directory, to a .zip and to a .tar (each reads every record, writes it, reads the production
back to check it and hashes everything with SHA-256 and BLAKE3), cp -r from the mount, and
cp -r from a plain directory. Page caches are dropped before each measurement where allowed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import remove_tree  # noqa: E402

WORMFS = [sys.executable, "-m", "wormfs"]


def run(*args):
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def drop_caches():
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def timed(*args):
    drop_caches()
    t = time.perf_counter()
    run(*args)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256, help="MiB in big files (16 MiB each)")
    ap.add_argument("--small", type=int, default=2000, help="number of 4 KiB files")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="wormfs-bench-export-", dir="/var/tmp")
    store, mirror, mnt, plain = (os.path.join(root, n) for n in
                                 ("store", "mirror", "mnt", "plain"))
    os.makedirs(mnt)
    run(*WORMFS, "mkfs", store, "--mirror", mirror, "--allow-same-device")
    run(*WORMFS, "mount", store, mnt)
    try:
        total = 0
        for base in (mnt, plain):
            os.makedirs(os.path.join(base, "big"), exist_ok=True)
            os.makedirs(os.path.join(base, "small"), exist_ok=True)
        for i in range(a.mib // 16):
            data = os.urandom(16 << 20)
            for base in (mnt, plain):
                with open(os.path.join(base, "big", f"f{i}"), "wb") as f:
                    f.write(data)
            total += len(data)
        for i in range(a.small):
            data = os.urandom(4096)
            for base in (mnt, plain):
                with open(os.path.join(base, "small", f"s{i}"), "wb") as f:
                    f.write(data)
            total += len(data)
        n = a.mib // 16 + a.small
        print(f"{n} records, {total / 2**20:.0f} MiB ({a.mib // 16} x 16 MiB, {a.small} x 4 KiB)")
        rows = {k: [] for k in ("export dir", "export zip", "export tar", "cp -r mount",
                                "cp -r plain")}
        for r in range(a.rounds):
            out = os.path.join(root, f"out{r}")
            os.makedirs(out)
            rows["export dir"].append(timed(*WORMFS, "export", mnt, "--out", f"{out}/d"))
            rows["export zip"].append(timed(*WORMFS, "export", mnt, "--out", f"{out}/e.zip"))
            rows["export tar"].append(timed(*WORMFS, "export", mnt, "--out", f"{out}/e.tar"))
            rows["cp -r mount"].append(timed("cp", "-r", mnt, f"{out}/cpm"))
            rows["cp -r plain"].append(timed("cp", "-r", plain, f"{out}/cpp"))
            shutil.rmtree(out)
        base = min(rows["cp -r plain"])
        for k, ts in rows.items():
            best = min(ts)
            print(f"{k:<12} {total / 2**20 / best:8.1f} MiB/s  {n / best:8.0f} files/s  "
                  f"best of {len(ts)}: {best:6.2f} s   ratio to cp -r plain {base / best:5.2f}x")
    finally:
        subprocess.run(WORMFS + ["umount", mnt], capture_output=True)
        remove_tree(root)


if __name__ == "__main__":
    main()
