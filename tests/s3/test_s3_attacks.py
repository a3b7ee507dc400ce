"""Someone who owns the primary host attacks the S3 duplicate with the primary's own
credentials and ordinary S3 calls (boto3), against a real Ceph RGW. The locks hold, so every
attack can only *add* to the bucket: a newer version, a new key, a delete marker, a legal
hold switched off, a lifecycle rule, a weaker default retention. Each is reported by
``verify`` of the primary and of ``s3://`` alone (and so by ``status``), and none is read as
the record: the bucket alone, promoted, gives back the true history."""
import base64
import hashlib
import os
import time
import shutil
import uuid

import blake3
import pytest

from tests.conftest import clear_immutable
from tests.fs.conftest import Mount, is_mounted, pytestmark as fuse_mark, wormfs
from wormfs.mirror.s3bucket import parse_url, to_datetime
from wormfs import retention
from wormfs.store.store import Store
from wormfs.timeutil import US, parse_date

from .test_s3_mirror import _wait_synced

pytestmark = [fuse_mark]

RECORDS = {"mail/a.eml": b"From: a\n\nfirst\n" * 500, "mail/held.eml": os.urandom(120_000),
           "blotter.csv": b"id,qty\n1,100\n2,250\n"}


@pytest.fixture
def written(tmp_path, s3_url):
    """A store with an S3 duplicate holding three records, one held, one extended; unmounted
    (the attacks come while the primary's daemon is down, as a root user would time them)."""
    m = Mount(tmp_path / "s", mirror=s3_url)
    m.mount()
    for name, data in RECORDS.items():
        os.makedirs(os.path.dirname(m.path(name)) or m.mnt, exist_ok=True)
        with open(m.path(name), "wb") as f:
            f.write(data)
    os.setxattr(m.path("mail/held.eml"), "user.worm.hold.case-7", b"SEC inquiry")
    os.setxattr(m.path("blotter.csv"), "user.worm.retain_until", b"2045-01-01")
    _wait_synced(m)
    m.umount()
    yield m
    if is_mounted(m.mnt):
        m.umount()
    for mp in (tmp_path / "promoted-mnt",):
        if is_mounted(mp):
            wormfs("umount", mp, check=False)
    clear_immutable(str(tmp_path))


def _s3(rgw):
    return rgw.client()


def _keys(client, url):
    bucket, prefix = parse_url(url)
    r = client.list_object_versions(Bucket=bucket, Prefix=prefix + "/")
    return bucket, prefix, {v["Key"][len(prefix) + 1:] for v in r.get("Versions", [])}


def _forge_put(client, bucket, key, body):
    """A new COMPLIANCE-locked version with correct checksums and b3 metadata, as wormfs
    itself would write it."""
    client.put_object(Bucket=bucket, Key=key, Body=body,
                      ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
                      ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=to_datetime(
                          int((time.time() + 400 * 86400) * US)),
                      Metadata={"b3": blake3.blake3(body).hexdigest()})


def _verify(target, *extra):
    r = wormfs("verify", str(target), *extra, check=False)
    return r.returncode, r.stdout + r.stderr


def _reported_everywhere(store, url, text):
    """A weakened bucket is NOT COMPLIANT at once: verify of the primary and of the bucket
    alone, and status (which reads the bucket's settings every time)."""
    for target in (store, url):
        code, out = _verify(target)
        assert code == 1 and text in out, out
    st = wormfs("status", store, check=False)
    assert st.returncode == 1 and text in st.stdout, st.stdout


def _promote_and_check(s3_url, tmp_path, ignored):
    """The primary is gone: the bucket alone, promoted, must hold every record as written,
    the hold and the extension; the promote names what it ignored."""
    to = tmp_path / "promoted"
    r = wormfs("mirror", "promote", s3_url, "--to", to, check=False)
    assert any(w in r.stdout for w in ignored), r.stdout + r.stderr
    with Store(str(to), readonly=True) as st:
        ino = st.lookup(st.lookup(1, b"mail").ino, b"held.eml").ino
        assert "case-7" in st._inode(ino).holds
        b = st.lookup(1, b"blotter.csv")
        assert retention.effective(st._inode(b.ino).retention)[1] >= \
            parse_date("2045-01-01")
    pm = tmp_path / "promoted-mnt"
    pm.mkdir()
    wormfs("mount", to, pm)
    try:
        for name, data in RECORDS.items():
            assert (pm / name).read_bytes() == data, name
    finally:
        wormfs("umount", pm)


def test_a_clean_bucket_verifies_ok_alone(written, s3_url, rgw):
    code, out = _verify(s3_url, "--deep")
    assert code == 0, out
    code, out = _verify(written.store, "--deep")
    assert code == 0, out
    # The bucket keeps its own chain heads, locked like the log.
    _, _, keys = _keys(_s3(rgw), s3_url)
    assert any(k.startswith("head/") for k in keys), keys


def test_a_head_past_the_log_is_reported(written, s3_url, rgw):
    """A head object says the bucket once held more of the log than can be read from it:
    events were lost behind the S3 API (the object store's admin tools). Simulated by a head
    with a later event than the log has."""
    c = _s3(rgw)
    bucket, prefix = parse_url(s3_url)
    body = b'{"kind": "wormfs-head", "event_seq": 999, "event_hash": "00", "next_serial": 9}'
    _forge_put(c, bucket, f"{prefix}/head/{999:012d}", body)
    code, out = _verify(s3_url)
    assert code == 1 and "events" in out and "are missing" in out, out
    code, out = _verify(written.store)
    assert code == 1 and "are missing" in out and "never wrote" in out, out


def test_the_endpoint_the_unit_records_is_used(written, s3_url, tmp_path):
    """Read once with the endpoint named; later commands without it go where the unit
    lives (not to AWS's public endpoint); a unit reached elsewhere than it says it lives,
    through an endpoint nobody named for this command (here ~/.aws/config's), is refused."""
    assert _verify(s3_url)[0] == 0
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    r = wormfs("verify", s3_url, check=False, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nendpoint_url = {endpoint.replace('127.0.0.1', 'localhost')}\n")
    r = wormfs("verify", s3_url, check=False,
               env={**env, "AWS_CONFIG_FILE": str(config),
                    "WORMFS_S3_CACHE": str(tmp_path / "fresh-cache")})
    assert r.returncode != 0 and "lives at" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_forged_newer_version_of_a_tail_is_reported_and_never_read(written, s3_url, rgw,
                                                                      tmp_path):
    c = _s3(rgw)
    bucket, prefix, keys = _keys(c, s3_url)
    for tail in sorted(k for k in keys if k.startswith("tail/")):
        real = c.get_object(Bucket=bucket, Key=f"{prefix}/{tail}")["Body"].read()
        if b"first" in real:
            break
    forged = real.replace(b"first", b"FORGD")   # a record's bytes replaced
    assert forged != real
    _forge_put(c, bucket, f"{prefix}/{tail}", forged)
    code, out = _verify(written.store)
    assert code == 1 and "is not the one wormfs wrote" in out, out
    st = wormfs("status", written.store, check=False)
    assert st.returncode == 1 and "NOT COMPLIANT" in st.stdout, st.stdout
    code, out = _verify(s3_url, "--deep")
    assert code == 1 and tail in out and "is not the one wormfs wrote" in out, out
    shutil.rmtree(written.store, ignore_errors=True)
    _promote_and_check(s3_url, tmp_path, ["is not the one wormfs wrote"])


def test_a_forged_new_segment_object_is_reported_and_never_read(written, s3_url, rgw,
                                                                tmp_path):
    c = _s3(rgw)
    bucket, prefix, keys = _keys(c, s3_url)
    assert "seg/0000000001" not in keys        # segment 1 is still open: tails only
    tails = sorted(k for k in keys if k.startswith("tail/0000000001/"))
    whole = bytearray()
    with open(os.path.join(written.store, "segments", "0000000001.open"), "rb") as f:
        whole += f.read()
    _forge_put(c, bucket, f"{prefix}/seg/0000000001", bytes(whole).replace(b"first", b"FORGD"))
    code, out = _verify(written.store)
    assert code == 1 and "never wrote" in out, out
    code, out = _verify(s3_url)
    assert code == 1 and "seg/0000000001" in out and "disagrees with tail/0000000001/*, " \
        "written before it" in out, out
    assert tails
    shutil.rmtree(written.store, ignore_errors=True)
    _promote_and_check(s3_url, tmp_path, ["disagrees with"])


def _frames(data):
    """(offset, type, key, length) of each frame of a segment's bytes."""
    from wormfs.store import frames as F
    out, off = [], F.SEG_HEADER_LEN
    while off < len(data):
        ftype, key, plen, _, hl = F.parse_header(data[off:off + F.HEADER_PEEK])
        out.append((off, ftype, key, hl + plen))
        off += hl + plen
    return out


def test_a_forged_redacted_copy_destroys_nothing(written, s3_url, rgw, tmp_path):
    """A dispose stores a redacted copy of a segment (dseg/S/Q) that readers prefer. Forged
    with the primary's credentials, one that destroys a retained record's chunk (no dispose
    event names it), changes an event or runs past the log is reported and ignored: the
    bucket alone still gives back every record."""
    from wormfs.store import frames as F
    c = _s3(rgw)
    bucket, prefix, _ = _keys(c, s3_url)
    with open(os.path.join(written.store, "segments", "0000000001.open"), "rb") as f:
        real = f.read()
    frames = _frames(real)
    off, _, key, length = next(fr for fr in frames if fr[1] == F.T_CHUNK)
    hl = F.FIXED_LEN + 32
    destroyed = bytearray(real)
    destroyed[off:off + length] = F.disposed_header(key, length - hl) + bytes(length - hl)
    _forge_put(c, bucket, f"{prefix}/dseg/0000000001/000000000998", bytes(destroyed))
    ev_off, _, _, ev_len = next(fr for fr in frames if fr[1] in (F.T_EVENT, F.T_ZEVENT))
    changed = bytearray(real)
    changed[ev_off + ev_len - 2] ^= 1   # inside the last byte of an event's payload
    _forge_put(c, bucket, f"{prefix}/dseg/0000000001/000000000999", bytes(changed))
    appended = real + real[ev_off:ev_off + ev_len]   # agrees where the tails end, goes on
    _forge_put(c, bucket, f"{prefix}/dseg/0000000001/000000000997", appended)
    code, out = _verify(written.store)
    assert code == 1 and "never wrote" in out, out
    code, out = _verify(s3_url)
    assert code == 1 and "dseg/0000000001/000000000998" in out and \
        "no dispose event names" in out, out
    assert "dseg/0000000001/000000000999" in out and "disagrees with" in out, out
    assert "dseg/0000000001/000000000997" in out and "where neither a tail" in out, out
    shutil.rmtree(written.store, ignore_errors=True)
    _promote_and_check(s3_url, tmp_path, ["no dispose event names"])


def test_delete_markers_hide_nothing(written, s3_url, rgw, tmp_path):
    c = _s3(rgw)
    bucket, prefix, keys = _keys(c, s3_url)
    tail = sorted(k for k in keys if k.startswith("tail/"))[-1]
    c.delete_object(Bucket=bucket, Key=f"{prefix}/{tail}")
    c.delete_object(Bucket=bucket, Key=f"{prefix}/unit.json")
    code, out = _verify(written.store)
    assert code == 1 and "delete marker" in out and tail in out and "unit.json" in out, out
    code, out = _verify(s3_url)
    assert code == 1 and "delete marker" in out, out
    shutil.rmtree(written.store, ignore_errors=True)
    _promote_and_check(s3_url, tmp_path, ["delete marker"])


def test_a_legal_hold_switched_off_is_reported_and_put_back_by_scrub(written, s3_url, rgw):
    c = _s3(rgw)
    bucket, prefix, keys = _keys(c, s3_url)
    held = []
    for k in keys:
        for v in c.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/{k}")["Versions"]:
            h = c.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            if h.get("ObjectLockLegalHoldStatus") == "ON":
                held.append((v["Key"], v["VersionId"]))
    assert held
    for key, vid in held:
        c.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=vid,
                                LegalHold={"Status": "OFF"})
    code, out = _verify(written.store)
    assert code == 1 and "legal hold is off" in out, out
    r = wormfs("scrub", written.store, "--repair", check=False)
    assert "legal hold put back" in r.stdout, r.stdout + r.stderr
    for key, vid in held:
        h = c.head_object(Bucket=bucket, Key=key, VersionId=vid)
        assert h.get("ObjectLockLegalHoldStatus") == "ON"
    code, out = _verify(written.store)
    assert code == 0, out
    with Store(str(written.store), readonly=True) as st:
        assert any(e["type"] == "repair" and "legal hold" in e.get("detail", "")
                   for e in st.events())


def test_a_lifecycle_rule_is_reported(written, s3_url, rgw):
    c = _s3(rgw)
    bucket, prefix = parse_url(s3_url)
    c.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [{
        "ID": f"sweep-{prefix}", "Status": "Enabled", "Filter": {"Prefix": prefix + "/"},
        "Expiration": {"Days": 1}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    try:
        _reported_everywhere(written.store, s3_url, "lifecycle rule")
    finally:
        c.delete_bucket_lifecycle(Bucket=bucket)


def test_a_weakened_default_retention_is_reported(tmp_path, rgw, monkeypatch):
    """On a bucket of its own: the default retention is the bucket's, shared by all units."""
    monkeypatch.setenv("WORMFS_S3_CACHE", str(tmp_path / "s3cache"))
    name = f"wormfs-weak-{uuid.uuid4().hex[:8]}"
    url = f"s3://{name}/unit"
    m = Mount(tmp_path / "s", mirror=url)
    m.mount()
    try:
        with open(m.path("r.eml"), "wb") as f:
            f.write(b"a record\n")
        _wait_synced(m)
    finally:
        m.umount()
    c = rgw.client()
    c.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    _reported_everywhere(m.store, url, "GOVERNANCE")
    clear_immutable(str(tmp_path))


def test_a_key_forged_before_wormfs_writes_it_never_counts_as_stored(s3_url, rgw):
    """Someone who can guess the next key puts a forgery there first: wormfs's own PUT then
    becomes a newer version, which the bucket's truth (the first version) does not hold, so
    it is refused (the batch stays pending and verify names the key). wormfs's own repeat of
    an upload that a crash left unrecorded holds the same bytes: its first version counts."""
    from wormfs.errors import IntegrityError
    from wormfs.mirror.s3bucket import Bucket
    b = Bucket(s3_url)
    until = int((time.time() + 3600) * US)
    v1, _, _ = b.put("tail/0000000001/000000000048", b"frames", until)
    v2, _, _ = b.put("tail/0000000001/000000000048", b"frames", until + 3600 * US)
    assert v2 == v1                        # the same bytes: the first version is ours
    assert b.head("tail/0000000001/000000000048", v1)["retain_until"] >= until + 3600 * US
    bucket, prefix = parse_url(s3_url)
    _forge_put(rgw.client(), bucket, f"{prefix}/tail/0000000001/000000000054", b"forged")
    with pytest.raises(IntegrityError, match="another writer was first"):
        b.put("tail/0000000001/000000000054", b"genuine", until)
