"""The S3 unit below the FUSE layer, with an injectable clock inside this process (the object
store keeps its own real clock): disposal with an S3 duplicate, and the shipping cache lost
and rebuilt from the bucket."""
import os
import random
import shutil
import time

import pytest

from tests.conftest import FakeTime, clear_immutable
from wormfs.errors import NotFound
from wormfs.mirror import verification
from wormfs.mirror.s3bucket import Bucket
from wormfs.mirror.s3copy import fetch
from wormfs.mirror.s3state import S3State
from wormfs.mirror.s3target import cache_path, create_unit
from wormfs.store import disposal
from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, Store, create_store
from wormfs.timeutil import US, format_us, parse_date

DAY = 86400


def new_pair(path, s3_url, clock, default_retention, log_uuid):
    """A primary at ``path`` whose duplicate is a fresh S3 unit at ``s3_url``."""
    create_unit(s3_url, None, dict(role="mirror", mode="compliance", peer_serial="WU-P",
                                   peer_path=path, label="t", segment_size=1 << 20,
                                   chunking=None, same_device=False, no_mirror=False,
                                   serial="WU-M", log_uuid=log_uuid))
    create_store(path, role="primary", mode="compliance", label="t", serial="WU-P",
                 peer_serial="WU-M", peer_path=s3_url, log_uuid=log_uuid,
                 segment_size=1 << 20,
                 settings={"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": "24h",
                           "mirror_max_lag": "24h"},
                 init={"default_retention": default_retention, "admin_gid": None,
                       "time_source": clock, "mirror_time_source": clock})


@pytest.fixture
def s3_store(tmp_path, s3_url):
    clock = FakeTime(start=format_us(int(time.time() * US)))
    path = str(tmp_path / "p")
    new_pair(path, s3_url, clock, "1d", "6b3c2a54-3a0e-4b8e-9d51-4f0c8b1f0a11")
    yield path, clock, s3_url
    clear_immutable(str(tmp_path))


def put(st, name, data):
    ino = st.create(1, name, 0o644, None).ino
    st.write(ino, 0, data)
    return st.seal(ino)


def bucket_log(url, dest):
    """The log a stranger reads back from the bucket into ``dest`` (no finding allowed),
    every segment's bytes end to end."""
    state, findings = fetch(Bucket(url), dest)
    state.close()
    assert findings == []
    return b"".join(open(os.path.join(dest, "segments", n), "rb").read()
                    for n in sorted(os.listdir(os.path.join(dest, "segments"))))


def test_disposal_with_an_s3_duplicate_leaves_both_sound(s3_store):
    path, clock, url = s3_store
    rnd = random.Random(5)
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        gone_data = rnd.randbytes(600_000)
        gone = put(st, b"gone.eml", gone_data)
        put(st, b"kept.eml", rnd.randbytes(300_000))
        st.set_retain_until(st.lookup(1, b"kept.eml").ino, "2040-01-01", None)
        st.mirror_poll()
        clock.advance(2 * DAY)
        cert = disposal.run(st, None)
        assert [r["serial"] for r in cert["records"]] == [gone.serial]
        # The certificate tells the truth: destroyed on the primary (and its shipping cache),
        # still held in the bucket's locked objects.
        assert cert["destroyed_on"] == ["WU-P"]
        assert cert["still_held"]["unit"] == "WU-M" and cert["still_held"]["objects"]
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    # The bucket cannot destroy before the locks end: its objects still hold the chunks, and
    # a unit read back from it drops them as the replay does.
    state = S3State(os.path.join(cache_path(path), "s3state.db"), readonly=True)
    try:
        assert all(o.retain_until > time.time() * US for o in state.live())
    finally:
        state.close()
    # Read back by a stranger: the log is whole, no finding, and no plaintext of the
    # disposed record lands in the local copy.
    dest = os.path.join(os.path.dirname(path), "readback")
    blob = bucket_log(url, dest)
    assert gone_data[:4096] not in blob and gone_data[-4096:] not in blob
    with Store(dest, readonly=True) as copy:   # and it verifies clean: no false findings
        rep = verification.run_readonly(copy)
        assert rep.ok, rep.findings
    assert any(v.rel.startswith("dseg/0000000001/") for v in Bucket(url).versions())
    # The segment the disposal touched while it was open is finished afterwards: its
    # segment object holds the destroyed frames, its tails the plaintext (until their locks
    # end). A stranger's read, and a shipping cache rebuilt from the bucket, agree with it.
    clear_immutable(cache_path(path))
    shutil.rmtree(cache_path(path))
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        for i in range(3):
            put(st, b"later%d" % i, rnd.randbytes(400_000))
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    assert any(v.rel == "seg/0000000001" for v in Bucket(url).versions())
    dest = os.path.join(os.path.dirname(path), "readback2")
    blob = bucket_log(url, dest)
    assert gone_data[:4096] not in blob and gone_data[-4096:] not in blob
    with Store(dest, readonly=True) as copy:
        rep = verification.run_readonly(copy)
        assert rep.ok, rep.findings


def test_a_lost_shipping_cache_is_rebuilt_from_the_bucket(s3_store):
    path, clock, url = s3_store
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        for i in range(5):
            put(st, b"r%d" % i, os.urandom(300_000 + i))
        st.mirror_poll()
    clear_immutable(cache_path(path))
    shutil.rmtree(cache_path(path))
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        assert st.mirror_state()[0] == "synced"
        put(st, b"after", b"one more\n")
        st.mirror_poll()
        assert st.mirror.acked_seq == st.journal.last_seq
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    listed = [v.rel for v in Bucket(url).versions()]
    assert any(r.startswith("seg/") for r in listed)


def test_every_local_clock_set_ahead_is_held_at_the_buckets_clock(s3_store):
    """A time namespace and a settimeofday together move all three local sources by the same
    two years, so they agree with each other: only the bucket's clock, on another machine,
    says otherwise. Nothing expires early; deletion and disposal are refused, audited, and
    status names the bucket."""
    from wormfs.clock import SETTLE_US
    from wormfs.errors import Refused
    path, clock, url = s3_store
    two_years = 2 * 365 * DAY * US
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        put(st, b"a.eml", os.urandom(1000))
        st.mirror_poll()
        t0 = st.now()
        clock.wall += two_years
        clock.boot += two_years
        clock.advance(5)
        assert st.now() <= t0 + 10 * US      # held at the bucket's time
        with pytest.raises(Refused, match="retained until 2026"):
            st.unlink(1, b"a.eml", None)     # by the bucket's time it has not expired
        with pytest.raises(Refused, match="S3 bucket"):
            disposal.run(st, None)
        assert st.lookup(1, b"a.eml") is not None
        assert any("S3 bucket" in p for p in st.clock_problems())
        rows = [e for e in st.events() if e["type"] == "clock" and e["kind"] == "disagree"]
        assert rows and "S3 bucket" in rows[-1]["detail"]
        # The host's clocks are put right; two days later the record has expired by every
        # clock, and after SETTLE of agreement deletions go by it.
        clock.wall -= two_years
        clock.boot -= two_years
        st.now()
        clock.advance(2 * DAY)
        st.now()
        clock.advance(SETTLE_US / US + 1)
        st.unlink(1, b"a.eml", None)
        assert "settled" in [e["kind"] for e in st.events() if e["type"] == "clock"]


class RealTime(FakeTime):
    """The fake world's clocks, moving with real time (the bucket enforces its locks in
    real time): every source agrees, as on an honest host."""
    def __init__(self):
        super().__init__(start=format_us(int(time.time() * US)))
        self.t0 = time.monotonic()

    def _passed(self):
        return int((time.monotonic() - self.t0) * US)

    def wall_us(self):
        return self.wall + self._passed()

    def boot_us(self):
        return self.boot + self._passed()

    def uptime_us(self):
        return self.boot + self._passed() + self.uptime_skew

    def kernel_wall_us(self, probe_path):
        return self.wall_us() - self.process_skew

    def server_us(self, date_us):
        return self.true + self._passed() + self.server_skew


def test_a_dispose_run_of_many_batches_copies_each_segment_once_at_its_end(s3_store,
                                                                           monkeypatch):
    """Each batch of a run is its own dispose event; the bucket would store a segment again
    for every one that destroyed frames in it. The S3 unit holds the copies until the run
    ends and makes one per segment, for the last event; read back, the bucket holds none of
    the disposed records' bytes, and nothing about the copy is a finding."""
    path, clock, url = s3_store
    monkeypatch.setattr(disposal, "BATCH_RECORDS", 2)
    rnd = random.Random(11)
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        gone = [rnd.randbytes(60_000) for _ in range(7)]     # one segment, seven records
        for i, data in enumerate(gone):
            put(st, b"gone%d.eml" % i, data)
        kept_data = rnd.randbytes(50_000)
        kept = put(st, b"kept.eml", kept_data)
        st.set_retain_until(kept.ino, "2040-01-01", None)
        st.mirror_poll()
        clock.advance(2 * DAY)
        cert = disposal.run(st, None)
        assert len(cert["records"]) == 7 and len(cert["events"]) == 4
        made = sorted({v.rel for v in Bucket(url).versions() if v.rel.startswith("dseg/")})
        assert made == [f"dseg/0000000001/{cert['events'][-1]:012d}"], made
        st.mirror_poll()
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    blob = bucket_log(url, os.path.join(os.path.dirname(path), "readback"))
    assert not any(d[:4096] in blob or d[-4096:] in blob for d in gone)
    assert kept_data[:4096] in blob


def test_disposal_redacts_the_bucket_and_a_later_dispose_deletes_what_expired(
        tmp_path, s3_url, monkeypatch):
    """The bucket cannot destroy a frame in place. A dispose stores a redacted copy of each
    segment it touched (``dseg/S/Q``) that carries the segment from then on; the objects it
    replaced are no longer lengthened, and the first dispose after their locks end deletes
    them, recorded as a ``bucket_destroyed`` event. Locks this short exist only inside this
    test process (the installed floor is a year); the bucket enforces them in real time, so
    the fake clock only moves as real time does."""
    from wormfs.mirror import s3target
    monkeypatch.setattr(s3target, "MIN_LOCK", "10s")
    monkeypatch.setattr(s3target, "LOCK_STEP_US", US)
    clock = RealTime()
    path = str(tmp_path / "p")
    new_pair(path, s3_url, clock, "2s", "0b3c2a54-3a0e-4b8e-9d51-4f0c8b1f0a12")

    wait = time.sleep

    rnd = random.Random(9)
    gone_data = rnd.randbytes(900_000)
    bucket = Bucket(s3_url)
    try:
        with Store(path, time_source=clock, mirror_time_source=clock) as st:
            gone = put(st, b"gone.eml", gone_data)           # fills segment 1
            kept_data = rnd.randbytes(200_000)
            kept = put(st, b"kept.eml", kept_data)           # segment 2, held
            st.place_hold(kept.ino, "case-1", "litigation", None)
            st.mirror_poll()
            assert any(v.rel == "seg/0000000001" for v in bucket.versions())
            wait(3)
            cert = disposal.run(st, None)
            assert [r["serial"] for r in cert["records"]] == [gone.serial]
            assert "bucket_destroyed" not in cert   # their locks have not ended yet
            held = {o["rel"] for o in cert["still_held"]["objects"]}
            assert "seg/0000000001" in held and any(r.startswith("tail/0000000001/")
                                                    for r in held)
            rels = {v.rel for v in bucket.versions()}
            redacted = [r for r in rels if r.startswith("dseg/0000000001/")]
            assert redacted, sorted(rels)
            # Read back now, the bucket still holds the plaintext, but the reader takes the
            # redacted copy: none of it lands in the local copy, and nothing is a finding.
            blob = bucket_log(s3_url, str(tmp_path / "readback"))
            assert gone_data[:4096] not in blob and gone_data[-4096:] not in blob
            assert kept_data[:4096] in blob
            # The replaced objects' locks end (they are no longer lengthened, while the copy
            # that carries their bytes now is, by what the primary ships meanwhile); the
            # next dispose, with nothing to dispose of, deletes them.
            last = max(parse_date(o["retain_until"]) for o in cert["still_held"]["objects"])
            ticks = 0
            while time.time() * US < last + 2 * US:
                wait(1)
                ticks += 1
                ino = st.create(1, b"tick%d" % ticks, 0o644, None).ino
                st.set_retain_until(ino, "2040-01-01", None)   # kept: disposes of nothing
                st.write(ino, 0, b"a new record to ship")
                st.seal(ino)
                st.mirror_poll()
            cert2 = disposal.run(st, None)
            assert cert2["records"] == []

            deleted = {o["rel"] for o in cert2["bucket_destroyed"]["objects"]}
            assert held <= deleted, (held, deleted)
            rels = {v.rel for v in bucket.versions()}
            assert not rels & held
            assert not any(v.rel.startswith("tail/0000000001/") for v in bucket.versions())
            events = [ev for ev in st.events() if ev["type"] == "bucket_destroyed"]
            assert events and {o["rel"] for o in events[-1]["objects"]} == deleted
            st.mirror_poll()
            rep = verification.run(st, deep=True)
            assert rep.ok, rep.findings
        # A stranger reads the bucket as it is now: the whole log, the held record, no
        # finding, and a copy that verifies.
        dest = str(tmp_path / "readback2")
        state, findings = fetch(bucket, dest)
        state.close()
        assert findings == []
        with Store(dest, readonly=True) as copy:
            rep = verification.run_readonly(copy)
            assert rep.ok, rep.findings
            rec = copy.lookup(1, b"kept.eml")
            assert copy.read(rec.ino, 0, len(kept_data)) == kept_data
            with pytest.raises(NotFound):
                copy.lookup(1, b"gone.eml")
    finally:
        clear_immutable(str(tmp_path))


def test_a_shipping_cache_changed_behind_wormfs_never_replaces_the_bucket(s3_store):
    """A redacted copy is made from the shipping cache's file. Root can edit that file (it is
    on the primary host): a copy made from it would replace what the bucket holds. So the
    copy is made only if the file agrees with the bucket's objects but for the disposed
    frames; otherwise none is made, and the cache's own chain says why."""
    path, clock, url = s3_store
    rnd = random.Random(11)
    kept_data = rnd.randbytes(300_000)
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        put(st, b"gone.eml", rnd.randbytes(600_000))
        put(st, b"kept.eml", kept_data)
        st.set_retain_until(st.lookup(1, b"kept.eml").ino, "2040-01-01", None)
        st.mirror_poll()
        seg = os.path.join(cache_path(path), "segments", "0000000001.open")
        with open(seg, "r+b") as f:
            blob = f.read()
            at = blob.find(kept_data[1000:1064])
            assert at > 0
            f.seek(at)
            f.write(bytes(b ^ 0xFF for b in kept_data[1000:1064]))   # a retained record
        clock.advance(2 * DAY)
        cert = disposal.run(st, None)
        assert cert["records"]
        assert not any(v.rel.startswith("dseg/") for v in Bucket(url).versions())
        events = [ev for ev in st.mirror.target.local.events()
                  if ev.get("type") == "redact_refused"]
        assert events and "differs from the bucket" in events[-1]["reason"]
