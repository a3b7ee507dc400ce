"""Sealing with the duplicate in an S3 Object Lock bucket vs in a local directory, below FUSE,
interleaved in one run, beside the S3 baseline: the same bytes PUT to the same bucket by
boto3, one locked object per file (what any S3 duplicate must at least pay).

    set -a; . /tmp/wormfs-ceph/s3.env; set +a     # packaging/dev/ceph-rgw.sh start
    python bench/s3_mirror.py [--dir /var/tmp] [--mib 64] [--files 200] [--rounds 3]

Not run by CI.
"""
import argparse
import base64
import collections
import datetime
import hashlib
import os
import statistics
import tempfile
import uuid

from benchlib import remove_tree, seal_big, seal_small, timed
from mirror import SETTINGS, new_store
from wormfs.mirror import s3bucket
from wormfs.mirror.s3bucket import _client
from wormfs.mirror.s3target import create_unit
from wormfs.store.store import Store, create_store

BUCKET = "wormfs-bench"
REQUESTS = collections.Counter()   # S3 calls wormfs made, by operation


def _counting_client(endpoint, _make=_client):
    """wormfs's S3 clients, each counting its calls (what the duplicate costs in requests,
    which is what a cloud bucket bills): a wrapper in this benchmark only."""
    c = _make(endpoint)
    c.meta.events.register("before-call.s3", lambda model, **kw: REQUESTS.update([model.name]))
    return c


s3bucket._client = _counting_client


def new_s3_store(root, endpoint):
    path = os.path.join(root, uuid.uuid4().hex)
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    log_uuid = str(uuid.uuid4())
    create_unit(url, endpoint, dict(role="mirror", mode="compliance", peer_serial="WU-P",
                                    peer_path=path, label="bench", segment_size=128 << 20,
                                    chunking=None, same_device=False, no_mirror=False,
                                    serial="WU-M", log_uuid=log_uuid))
    create_store(path, role="primary", mode="compliance", label="bench", settings=SETTINGS,
                 init={"default_retention": "1d", "admin_gid": None}, peer_serial="WU-M",
                 peer_path=url, serial="WU-P", log_uuid=log_uuid, peer_endpoint=endpoint)
    return Store(path)


def put_locked(s3, prefix, blobs):
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    for i, b in enumerate(blobs):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{i}", Body=b,
                      ContentMD5=base64.b64encode(hashlib.md5(b).digest()).decode(),
                      ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    root = tempfile.mkdtemp(prefix="wormfs-bench-", dir=args.dir)
    local, remote = new_store(root, root), new_s3_store(root, endpoint)
    s3 = _client(endpoint)
    base = f"baseline-{uuid.uuid4().hex[:8]}"
    rows = {"big": [], "small": []}
    calls = {"big": [], "small": []}
    try:
        for r in range(args.rounds):
            n = args.mib << 20
            big_local = n / timed(seal_big, local, os.urandom(n), b"l%d" % r)
            before = REQUESTS.copy()
            big_s3 = n / timed(seal_big, remote, os.urandom(n), b"s%d" % r)
            calls["big"].append((REQUESTS - before, args.mib))
            rows["big"].append((big_local, big_s3,
                                n / timed(put_locked, s3, f"{base}/b{r}", [os.urandom(n)])))
            k = args.files
            small_local = k / timed(seal_small, local, [os.urandom(4096) for _ in range(k)],
                                    b"l%d" % r)
            before = REQUESTS.copy()
            small_s3 = k / timed(seal_small, remote, [os.urandom(4096) for _ in range(k)],
                                 b"s%d" % r)
            calls["small"].append((REQUESTS - before, k))
            rows["small"].append((small_local, small_s3, k / timed(
                put_locked, s3, f"{base}/s{r}", [os.urandom(4096) for _ in range(k)])))
        print(f"endpoint {endpoint}; median of {args.rounds} interleaved rounds")
        for label, key, unit, scale in (("big file, unique data", "big", "MB/s", 1e6),
                                        ("4 KiB files, sequential", "small", "files/s", 1)):
            lo, s3r, put = (statistics.median(row[i] for row in rows[key]) / scale
                            for i in range(3))
            print(f"{label:24s} local dup {lo:8.1f}  S3 dup {s3r:8.1f} {unit}  ratio "
                  f"{s3r / lo:4.2f}x   | boto3 locked PUT alone {put:8.1f}  S3 dup / PUT "
                  f"{s3r / put:4.2f}x")
        for key, per in (("big", "MiB"), ("small", "seal")):
            total, units = collections.Counter(), 0
            for c, u in calls[key]:
                total += c
                units += u
            print(f"S3 requests per {per:4s} ({key}): " + ", ".join(
                f"{op} {v / units:.2f}" for op, v in sorted(total.items())) +
                f"; all {sum(total.values()) / units:.2f}")
    finally:
        local.close()
        remote.close()
        remove_tree(root)


if __name__ == "__main__":
    main()
