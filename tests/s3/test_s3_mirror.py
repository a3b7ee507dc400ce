"""The S3 Object Lock unit against a real Ceph RGW: records written through a real mount land
as locked objects that the store itself refuses to delete or shorten; the bucket alone mounts,
verifies, exports and is promoted; a gateway that stops during writes leaves records pending
and the store DEGRADED until it is back."""
import datetime
import hashlib
import os
import shutil
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import clear_immutable, flip_byte
from tests.fs.conftest import Mount, is_mounted, pytestmark as fuse_mark, wormfs
from wormfs.mirror.s3bucket import parse_url
from wormfs.mirror.s3state import S3State
from wormfs.store.store import Store

pytestmark = [fuse_mark]


def _objects(client, url):
    bucket, prefix = parse_url(url)
    out = {}
    for v in client.list_object_versions(Bucket=bucket, Prefix=prefix + "/").get("Versions", []):
        rel = v["Key"][len(prefix) + 1:]
        h = client.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        out.setdefault(rel, []).append(dict(
            key=v["Key"], version=v["VersionId"], size=v["Size"],
            mode=h.get("ObjectLockMode"), until=h.get("ObjectLockRetainUntilDate"),
            hold=h.get("ObjectLockLegalHoldStatus") == "ON"))
    return bucket, out


def _wait_synced(m, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        st = m.status()
        if st["mirror"]["state"] == "synced" and st["mirror"]["lag_events"] == 0:
            return st
        assert time.monotonic() < deadline, st["mirror"]
        time.sleep(1)


@pytest.fixture
def s3mount(tmp_path, s3_url):
    made = []

    def make(**kw):
        m = Mount(tmp_path / f"s{len(made)}", mirror=s3_url, **kw)
        made.append(m)
        return m
    yield make
    for m in made:
        m.umount()
        assert "Traceback" not in m.daemon_log(), m.daemon_log()
    for mp in (tmp_path / "bucket-mnt", tmp_path / "promoted-mnt"):
        if is_mounted(mp):
            wormfs("umount", mp, check=False)
    clear_immutable(str(tmp_path))


def test_records_land_as_locked_objects_the_store_will_not_delete(s3mount, s3_url, rgw):
    m = s3mount(mkfs_args=("--segment-size", "1M")).mount()
    blobs = {f"trades/day{i}.csv": os.urandom(300_000 + i) for i in range(5)}
    for name, data in blobs.items():
        os.makedirs(os.path.dirname(m.path(name)), exist_ok=True)
        with open(m.path(name), "wb") as f:
            f.write(data)
    # Sealed at close, and on the bucket before close returned.
    for name in blobs:
        assert os.getxattr(m.path(name), "user.worm.mirror") == b"synced"
    st = _wait_synced(m)
    assert st["state"] == "OK"
    until = datetime.datetime.fromisoformat(
        os.getxattr(m.path("trades/day0.csv"), "user.worm.retain_until").decode()
        .replace("Z", "+00:00"))

    client = rgw.client()
    bucket, objs = _objects(client, s3_url)
    assert "unit.json" in objs
    segs = [r for r in objs if r.startswith("seg/")]
    tails = [r for r in objs if r.startswith("tail/")]
    assert segs and tails, objs.keys()   # 1.5 MB through 1 MiB segments: at least one rolled
    for rel, versions in objs.items():
        for v in versions:
            assert v["mode"] == "COMPLIANCE", (rel, v)
            if rel != "unit.json":
                assert v["until"] >= until, (rel, v["until"], until)

    # The store itself refuses to destroy or shorten a locked version.
    v = objs[segs[0]][0]
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=bucket, Key=v["key"], VersionId=v["version"])
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key=v["key"], VersionId=v["version"],
                             BypassGovernanceRetention=True)
    with pytest.raises(ClientError):
        client.put_object_retention(
            Bucket=bucket, Key=v["key"], VersionId=v["version"],
            Retention={"Mode": "COMPLIANCE",
                       "RetainUntilDate": datetime.datetime.now(datetime.timezone.utc)
                       + datetime.timedelta(days=1)})
    assert client.head_object(Bucket=bucket, Key=v["key"],
                              VersionId=v["version"])["ObjectLockRetainUntilDate"] == v["until"]

    # A hold and a longer retention reach the objects that carry the record.
    rec = m.path("trades/day3.csv")
    subprocess.run(["setfattr", "-n", "user.worm.hold.case-7", "-v", "subpoena", rec],
                   check=True)
    subprocess.run(["setfattr", "-n", "user.worm.retain_until", "-v", "2045-01-01", rec],
                   check=True)
    _wait_synced(m)
    state = S3State(str(m.store / "s3-mirror-cache" / "s3state.db"), readonly=True)
    try:
        held = [o for o in state.live() if o.legal_hold]
        assert held, "no object took the record's legal hold"
    finally:
        state.close()
    _, objs = _objects(client, s3_url)
    far = datetime.datetime(2045, 1, 1, tzinfo=datetime.timezone.utc)
    assert any(v["hold"] for vs in objs.values() for v in vs)
    assert any(v["until"] and v["until"] >= far for vs in objs.values() for v in vs)
    for o in held:
        v = [x for x in objs[o.rel] if x["version"] == o.version][0]
        assert v["hold"] and v["until"] >= far, (o.rel, v)

    r = wormfs("verify", m.store, "--deep", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_bucket_alone_mounts_verifies_exports_and_is_promoted(s3mount, s3_url, tmp_path):
    m = s3mount().mount()
    blobs = {"mail/a.eml": b"From: a\n\nhello\n" * 1000, "chat/b.json": os.urandom(200_000),
             "blotter.csv": b"id,qty\n1,100\n"}
    for name, data in blobs.items():
        os.makedirs(os.path.dirname(m.path(name)) or m.mnt, exist_ok=True)
        with open(m.path(name), "wb") as f:
            f.write(data)
    _wait_synced(m)
    m.umount()
    # The primary is lost: nothing but the bucket (and credentials) is left.
    clear_immutable(str(m.store))
    shutil.rmtree(m.store)

    mnt = tmp_path / "bucket-mnt"
    mnt.mkdir()
    wormfs("mount", s3_url, mnt)
    try:
        for name, data in blobs.items():
            with open(mnt / name, "rb") as f:
                assert f.read() == data
        with pytest.raises(OSError):
            open(mnt / "new.txt", "wb")
    finally:
        wormfs("umount", mnt)

    r = wormfs("verify", s3_url, "--deep", check=False)
    findings = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    assert r.returncode == 0 and findings == [], r.stdout     # a clean bucket verifies OK
    assert "note: only this mirror unit was checked" in r.stdout

    out = tmp_path / "production"
    wormfs("export", s3_url, "--out", out)
    for name, data in blobs.items():
        assert (out / name).read_bytes() == data
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                          text=True)
    assert sums.returncode == 0, sums.stdout

    r = wormfs("audit", s3_url, "--verify", check=False)
    assert r.returncode == 0 and "intact" in r.stdout, r.stdout + r.stderr

    promoted = tmp_path / "promoted"
    r = wormfs("mirror", "promote", s3_url, "--to", promoted)
    pm = tmp_path / "promoted-mnt"
    pm.mkdir()
    wormfs("mount", promoted, pm)
    try:
        assert (pm / "blotter.csv").read_bytes() == blobs["blotter.csv"]
        (pm / "after.txt").write_bytes(b"the log goes on\n")
        assert os.getxattr(pm / "after.txt", "user.worm.state") == b"sealed"
    finally:
        wormfs("umount", pm)
    with Store(str(promoted), readonly=True) as st:
        types = [e["type"] for e in st.events(1)]
    assert "promote" in types and types.count("seal") == 4


def test_scrub_repairs_a_damaged_local_chunk_from_the_bucket(s3mount, s3_url):
    m = s3mount().mount()
    data = os.urandom(100_000)
    with open(m.path("r.bin"), "wb") as f:
        f.write(data)
    _wait_synced(m)
    m.umount()
    # The same chunk damaged on the primary and in the shipping cache: only the bucket has it.
    with Store(str(m.store), readonly=True) as st:
        with st.ix.read() as txn:
            serial_ino = list(st.ix.serials(txn))[0]
            cid = list(st.ix.manifest_from(txn, serial_ino[0], -1))[0][2]
            segno, off, length = st.ix.chunk(txn, cid)
    for unit in (m.store, m.store / "s3-mirror-cache"):
        seg = [p for p in (unit / "segments").iterdir() if p.name.startswith(f"{segno:010d}")][0]
        flip_byte(seg, off + 100)
    r = wormfs("verify", m.store, check=False)
    assert r.returncode == 1
    r = wormfs("scrub", m.store, "--repair", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert s3_url in r.stdout, r.stdout
    m.mount()
    with open(m.path("r.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    r = wormfs("verify", m.store, "--deep", check=False)
    assert r.returncode == 0, r.stdout


def test_gateway_stopped_during_writes_then_catch_up(s3mount, rgw):
    m = s3mount().mount()
    with open(m.path("before.txt"), "wb") as f:
        f.write(b"before\n")
    assert os.getxattr(m.path("before.txt"), "user.worm.mirror") == b"synced"
    rgw.stop_gateway()
    try:
        t0 = time.monotonic()
        for i in range(20):
            with open(m.path(f"during{i}.txt"), "wb") as f:
                f.write(f"record {i}\n".encode())
        assert time.monotonic() - t0 < 60   # seals do not hang on a dead gateway
        assert os.getxattr(m.path("during19.txt"), "user.worm.mirror") == b"pending"
        st = m.status()
        assert st["state"] == "DEGRADED" and st["mirror"]["state"] != "synced", st
        assert not st["compliant"]
    finally:
        rgw.start_gateway()
    _wait_synced(m, timeout=120)
    for i in range(20):
        assert os.getxattr(m.path(f"during{i}.txt"), "user.worm.mirror") == b"synced"
    states = [e["state"] for e in m.events("mirror")]
    assert "unreachable" in states and states[-1] == "synced", states
    m.umount()
    r = wormfs("verify", m.store, "--deep", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mkfs_refuses_a_used_prefix_and_a_bad_address(tmp_path, s3_url, rgw):
    Mount(tmp_path / "a", mirror=s3_url)
    r = wormfs("mkfs", tmp_path / "b" / "store", "--mirror", s3_url, check=False)
    assert r.returncode == 1 and "already holds objects" in r.stderr, r.stderr
    for bad in ("s3://", "s3://Bucket_X/p", "s3://bucket"):
        r = wormfs("mkfs", tmp_path / "c" / "store", "--mirror", bad, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (bad, r.stderr)
