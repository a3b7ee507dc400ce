"""Disposal below the FUSE layer, on a primary and its mirror with injectable clocks: only
expired, unheld records go; only chunks no retained record refers to are destroyed, on both
units, in place; every event stays; the index stays what a replay of the log gives."""
import os
import random

import pytest

from tests.conftest import clear_immutable, dump_index, make_pair
from wormfs.errors import Refused
from wormfs.mirror import verification
from wormfs.store import disposal
from wormfs.store.maintenance import rebuild_index
from wormfs.store.store import Store

from .test_mirror import same_segments

DAY = 86400


@pytest.fixture
def pair(tmp_path, fake_time):
    # A one-day floor, so that records can be given short retentions to expire; put()
    # gives the others six years, as the usual default would.
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time,
                     mirror_time_source=fake_time, segment_size=1 << 20,
                     default_retention="1d")
    yield p, m
    clear_immutable(str(tmp_path))


def blob(seed, n):
    return random.Random(seed).randbytes(n)


def put(st, name, data, retain="2032-01-15"):
    ino = st.create(1, name, 0o644, None).ino
    if retain:
        st.set_retain_until(ino, retain, None)
    st.write(ino, 0, data)
    return st.seal(ino)


def chunk_ids(st, rec):
    with st.ix.read() as txn:
        return {cid: length for _, length, cid in st.ix.manifest_from(txn, rec.serial, 0)}


def segment_bytes(unit):
    out = b""
    for name in sorted(os.listdir(f"{unit}/segments")):
        with open(f"{unit}/segments/{name}", "rb") as f:
            out += f.read()
    return out


def test_two_records_share_most_chunks_and_only_the_first_ones_unique_chunks_go(
        pair, fake_time):
    p, m = pair
    common = blob(1, 3 << 20)
    a_data = common + blob(2, 400_000)
    b_data = common + blob(3, 400_000)
    marker_a, marker_b = a_data[-100_000:-99_900], b_data[-100_000:-99_900]
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        a = put(st, b"a.eml", a_data, retain="2026-02-01")
        b = put(st, b"b.eml", b_data)
        held = put(st, b"held.eml", blob(4, 50_000), retain="2026-02-01")
        st.place_hold(held.ino, "CASE-1", "inquiry", None)
        unique = {c: n for c, n in chunk_ids(st, a).items() if c not in chunk_ids(st, b)}
        assert unique and len(unique) < len(chunk_ids(st, a)) / 2   # most are shared
        before = st.stats()

        early = disposal.run(st, None)                 # nothing has expired yet
        assert early["records"] == [] and early["event"] is None
        fake_time.advance(30 * DAY)
        dry = disposal.run(st, None, dry_run=True)
        assert [r["serial"] for r in dry["records"]] == [a.serial]
        assert set(dry["chunk_ids"]) == {c.hex() for c in unique}
        assert st.stats() == before                     # a dry run changes nothing

        cert = disposal.run(st, None)
        assert [r["serial"] for r in cert["records"]] == [a.serial]
        assert cert["records"][0]["blake3"] == a.blake3
        assert cert["bytes"] == sum(unique.values()) and cert["chunks"] == len(unique)
        assert cert["destroyed_on"] == ["WU-P", "WU-M"]
        after = st.stats()
        assert before["stored_bytes"] - after["stored_bytes"] == sum(unique.values())
        assert after["records"] == before["records"] - 1
        assert st.read(b.ino, 0, len(b_data)) == b_data
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]
        types = [e["type"] for e in st.events()]
        assert types[-4:] == ["delete", "dispose", "disposal_done", "verify"]
        assert disposal.run(st, None)["event"] is None   # nothing left to do
    same_segments(p, m)
    for unit in (p, m):
        data = segment_bytes(unit)
        assert marker_a not in data and marker_b in data   # destroyed, not just unindexed
        # The index is still exactly what the log says.
        live = dump_index(unit)
        os.rename(f"{unit}/index", f"{unit}/index.live")
        os.makedirs(f"{unit}/index")
        rebuild_index(unit)
        assert dump_index(unit) == live
    with Store(m, readonly=True) as ms:
        assert ms.read(b.ino, 0, len(b_data)) == b_data
        assert ms.stats() == after


def test_a_file_being_written_keeps_the_chunks_it_matched(pair, fake_time):
    p, m = pair
    data = blob(5, 1 << 20)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        old = put(st, b"old", data, retain="2026-02-01")
        ino = st.create(1, b"copy", 0o644, None).ino
        st.write(ino, 0, data)                  # streamed: matches old's chunks
        streamed = {cid.hex() for _, cid in st._open[ino].stream.chunks}
        assert streamed
        fake_time.advance(30 * DAY)
        cert = disposal.run(st, None)
        assert [r["serial"] for r in cert["records"]] == [old.serial]
        # What the open file has matched stays; the rest (its tail, still in the chunker)
        # is destroyed and stored again when the file is sealed.
        assert not streamed & set(cert["chunk_ids"])
        rec = st.seal(ino)
        assert st.read(rec.ino, 0, len(data)) == data
        assert verification.run(st).ok


def test_disposal_waits_for_the_mirror_and_runs_on_the_primary_only(pair, fake_time):
    p, m = pair
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"x", b"x" * 1000, retain="2026-02-01")
        fake_time.advance(30 * DAY)
        os.rename(m, m + ".away")
        st.mirror_poll()
        with pytest.raises(Exception, match="mirror is unreachable"):
            disposal.run(st, None)
        os.rename(m + ".away", m)
    with Store(m, readonly=True) as ms, pytest.raises(Refused):
        disposal.run(ms, None)


def test_a_crash_between_the_event_and_the_destruction_is_finished_at_open(pair, fake_time):
    p, m = pair
    data = blob(6, 500_000)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"gone", data, retain="2026-02-01")
        fake_time.advance(30 * DAY)
        real = disposal.destroy
        disposal.destroy = lambda log, ev: 0     # the primary dies before destroying
        try:
            disposal.run(st, None)
        finally:
            disposal.destroy = real
        assert data[1000:1100] in segment_bytes(p)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        assert data[1000:1100] not in segment_bytes(p)
        assert verification.run(st, deep=True).ok


def test_a_crash_inside_the_destruction_is_finished_before_the_log_is_read(pair, fake_time,
                                                                           monkeypatch):
    """Power cut after a destroy zeroed the payloads (durable) and before it rewrote the
    headers: those frames fail their checksum. The index is not synced per commit, so after
    a power cut it can be older than the frames, and the replay at open reads them: the
    destroy's journal makes the open finish them first (found by the power-cut test:
    'segment 12 is damaged ... frame payload checksum mismatch')."""
    import shutil
    from wormfs.store import frames as F
    p, m = pair
    data = blob(7, 400_000)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time):
        pass
    shutil.copytree(f"{p}/index", f"{p}/index.before")   # an index older than the record
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"gone", data, retain="2026-02-01")
        fake_time.advance(30 * DAY)

        def cut(*a):
            raise OSError(5, "the power goes")
        with monkeypatch.context() as mp:
            mp.setattr(F, "disposed_header", cut)
            with pytest.raises(OSError):
                disposal.run(st, None)
    shutil.rmtree(f"{p}/index")
    os.rename(f"{p}/index.before", f"{p}/index")
    assert os.path.exists(f"{p}/destroying.json")
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        assert not os.path.exists(f"{p}/destroying.json")
        assert data[1000:1100] not in segment_bytes(p)
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings


def test_a_crash_just_before_the_journal_goes_leaves_both_units_openable(pair, fake_time):
    """Power cut after a destroy rewrote the headers and before it removed its journal: the
    next open has nothing left to do and must remove the journal, and no other log of the
    unit (its own chain in local/, a log of its own) may take it for its own. Found by the
    power-cut test: the mirror would not open ('segment 2 is missing': its local/ chain
    tried to finish the main log's destroy)."""
    import json
    p, m = pair
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"gone", blob(8, 400_000), retain="2026-02-01")
        fake_time.advance(30 * DAY)
        cert = disposal.run(st, None)
        ev = next(e for e in st.events() if e["type"] == "dispose")
    assert cert["records"]
    segno = ev["chunks"][0][1]
    journal = json.dumps({"segno": segno, "frames": [[off, cid, n] for cid, s, off, n
                                                     in ev["chunks"] if s == segno]})
    for unit in (p, m):
        with open(f"{unit}/destroying.json", "w") as f:
            f.write(journal)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        for unit in (p, m):
            assert not os.path.exists(f"{unit}/destroying.json"), unit
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings


def test_the_mirror_refuses_a_forged_disposal_of_a_retained_record(pair, fake_time):
    from wormfs.mirror.replica import Replica
    from wormfs.store import events as E
    from wormfs.store import frames as F

    from .test_mirror import _log_uuid
    p, m = pair
    data = blob(7, 300_000)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        rec = put(st, b"kept.eml", data)
        chunks = [[c.hex(), *st.ix.chunk(st.ix.read(), c)] for c in chunk_ids(st, rec)]
        head_seq, head_hash = st.journal.last_seq, st.journal.last_hash
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        ev = {"seq": head_seq + 1, "prev": head_hash, "time": "2040-01-01T00:00:00.000000Z",
              "time_us": 2208988800 * 10**6, "type": "dispose", "serials": [rec.serial],
              "records": [], "chunks": chunks, "bytes": len(data)}
        end = rep.end()
        rep.receive(end[0], end[1], F.encode_event(E.encode(ev)))  # kept, not applied
        assert "is not deleted here" in rep.kept_refusals()[-1]["reason"]
        assert rep.end() > end
    finally:
        rep.close()
    assert data[5000:5100] in segment_bytes(m)


# -- the mirror's clock behind the primary's ------------------------------------------------
# After a power cut each unit's compliance clock resumes from what that unit had made
# durable, so they can differ by seconds; the mirror judges every delete again by its own
# (rules.py). Found by the power-cut test: the primary deleted and disposed of a record by its
# clock, the mirror refused both, and the primary had destroyed its copy of the chunks.

@pytest.fixture
def late_mirror(tmp_path):
    """A primary and a mirror, each in a fake world of its own, so that one clock can be
    set behind the other; both start at the same time."""
    from tests.conftest import FakeTime
    prim, mir = FakeTime(), FakeTime()
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=prim,
                     mirror_time_source=mir, segment_size=1 << 20, default_retention="1d")
    yield p, m, prim, mir
    clear_immutable(str(tmp_path))


def _to(world, date, seconds):
    """Real time passes in ``world`` until ``seconds`` after ``date``."""
    from wormfs.timeutil import US, parse_date
    world.advance((parse_date(date) - world.wall) / US + seconds)


def test_a_delete_waits_for_the_mirrors_clock_and_the_mirror_never_refuses_it(late_mirror):
    p, m, prim, mir = late_mirror
    with Store(p, time_source=prim, mirror_time_source=mir) as st:
        rec = put(st, b"r.eml", blob(11, 5000), retain="2026-02-01")
        _to(prim, "2026-02-01", 30)      # expired here ...
        _to(mir, "2026-02-01", -600)     # ... and ten minutes short of it on the mirror
        with pytest.raises(Refused, match="by the mirror's compliance clock"):
            st.unlink(1, b"r.eml", None)
        assert st.inode(rec.ino).sealed
        last = list(st.events())[-1]
        assert (last["type"], last["op"], last["ino"]) == ("refused", "unlink", rec.ino)
        _to(mir, "2026-02-01", 1)
        st.unlink(1, b"r.eml", None)
        st.mirror_poll()
        assert st.mirror.exclusive(lambda t: t.kept_refusals()) == []
        assert st.mirror_state()[0] == "synced"
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]
    same_segments(p, m)


def test_disposal_goes_by_the_earlier_clock_and_destroys_on_both_units(late_mirror):
    p, m, prim, mir = late_mirror
    data = blob(12, 300_000)
    with Store(p, time_source=prim, mirror_time_source=mir) as st:
        rec = put(st, b"d.eml", data, retain="2026-02-01")
        _to(prim, "2026-02-01", 30)
        _to(mir, "2026-02-01", -600)
        assert disposal.run(st, None, dry_run=True)["records"] == []
        cert = disposal.run(st, None)
        assert cert["records"] == [] and cert["event"] is None
        assert data[1000:1100] in segment_bytes(p)
        _to(mir, "2026-02-01", 1)
        assert [r["serial"] for r in disposal.run(st, None, dry_run=True)["records"]] == \
            [rec.serial]
        cert = disposal.run(st, None)
        assert [r["serial"] for r in cert["records"]] == [rec.serial]
        assert cert["destroyed_on"] == ["WU-P", "WU-M"]
        assert st.mirror.exclusive(lambda t: t.kept_refusals()) == []
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]
    same_segments(p, m)
    for unit in (p, m):
        assert data[1000:1100] not in segment_bytes(unit)


def test_the_primary_destroys_nothing_before_the_mirror_holds_the_dispose_event(
        pair, fake_time, monkeypatch):
    """The mirror's device fails while the dispose event ships: the event is durable here,
    the chunks stay here, and they go on both units once the mirror is back and has the
    event: with the mount's poll, and at the next open."""
    import time
    from wormfs.mirror.replica import Replica
    p, m = pair
    data = blob(13, 300_000)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"gone.eml", data, retain="2026-02-01")
        fake_time.advance(30 * DAY)
        real = Replica.receive

        def failing(self, segno, offset, frames):
            raise OSError(5, "Input/output error", "the mirror's disk")
        monkeypatch.setattr(Replica, "receive", failing)
        cert = disposal.run(st, None)
        assert cert["event"] and cert["destroyed_on"] == [] and "pending" in cert
        assert st.dispose_pending == cert["event"]
        for unit in (p, m):
            assert data[1000:1100] in segment_bytes(unit), unit
        monkeypatch.setattr(Replica, "receive", real)
        time.sleep(2.1)                   # the replicator's retry interval (RETRY_S)
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced" and st.dispose_pending is None
        for unit in (p, m):
            assert data[1000:1100] not in segment_bytes(unit), unit
        done = [e for e in st.events() if e["type"] == "disposal_done"]
        assert done[-1]["dispose_seq"] == cert["event"] and done[-1]["finished"] is True
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]
    same_segments(p, m)


def test_a_dispose_left_pending_is_finished_at_the_next_open(pair, fake_time, monkeypatch):
    from wormfs.mirror.replica import Replica
    p, m = pair
    data = blob(14, 300_000)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"gone.eml", data, retain="2026-02-01")
        fake_time.advance(30 * DAY)
        monkeypatch.setattr(Replica, "receive", lambda *a: (_ for _ in ()).throw(
            OSError(5, "Input/output error")))
        assert disposal.run(st, None)["destroyed_on"] == []
        monkeypatch.undo()
    # Closing shipped the event (the mirror destroyed its copy); the primary's next open
    # finishes its own once the mirror is attached and holds it.
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        st.mirror_poll()
        assert st.dispose_pending is None
        for unit in (p, m):
            assert data[1000:1100] not in segment_bytes(unit), unit
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]


def test_the_mirror_never_resumes_far_behind_the_time_it_told_for_a_deletion(pair, fake_time):
    """The primary deleted by the mirror's clock at T; a power cut then loses what the mirror
    had not made durable; after the reboot (no downtime counted) the mirror's clock must
    still read at least T less a second, or the delete, shipped after the reboot, would be
    refused there (more than CLOCK_SKEW_WAIT_US short)."""
    from wormfs.mirror.replica import Replica
    from wormfs.timeutil import US

    from .test_mirror import _log_uuid
    p, m = pair
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        fake_time.advance(25)            # less than the clock's own persist interval
        told, why = st.mirror.peer_clock()
        assert why is None
        with open(f"{m}/clock.json", "rb") as f:
            at_the_cut = f.read()
    with open(f"{m}/clock.json", "wb") as f:   # what the closing store wrote is lost
        f.write(at_the_cut)
    fake_time.reboot(downtime_seconds=60)
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        assert rep.clock.now() >= told - 1 * US
    finally:
        rep.close()


# -- disposal in batches ---------------------------------------------------------------------
# A run disposes of BATCH_RECORDS records per write transaction (and per dispose event), so
# that seals wait for one batch at most, whatever the number of records expiring; which
# chunks no retained record lists comes from the index's reference counts (chunkrefs), not a
# pass over every manifest.

def rebuilt_equals_live(unit):
    live = dump_index(unit)
    os.rename(f"{unit}/index", f"{unit}/index.live")
    os.makedirs(f"{unit}/index")
    rebuild_index(unit)
    rebuilt = dump_index(unit)
    for name in live:
        assert rebuilt[name] == live[name], (unit, name)


def test_a_run_in_batches_disposes_of_exactly_what_it_would_in_one(pair, fake_time,
                                                                   monkeypatch):
    p, m = pair
    shared_ab, shared_kept = blob(10, 1 << 20), blob(11, 1 << 20)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        # a and d share chunks and fall in different batches; b shares chunks with kept, a
        # retained record; c is deleted by hand after it expires (undisposed until the run);
        # h is held.
        a = put(st, b"a", shared_ab + blob(12, 300_000), retain="2026-02-01")
        b = put(st, b"b", shared_kept + blob(13, 300_000), retain="2026-02-01")
        c = put(st, b"c", blob(14, 300_000), retain="2026-02-01")
        d = put(st, b"d", blob(15, 300_000) + shared_ab, retain="2026-02-01")
        h = put(st, b"h", blob(16, 300_000), retain="2026-02-01")
        st.place_hold(h.ino, "CASE-1", "inquiry", None)
        kept = put(st, b"kept", shared_kept + blob(17, 300_000))
        in_ab = set(chunk_ids(st, a)) & set(chunk_ids(st, d))
        in_kept = set(chunk_ids(st, b)) & set(chunk_ids(st, kept))
        assert in_ab and in_kept
        fake_time.advance(30 * DAY)
        st.unlink(1, b"c", None)
        monkeypatch.setattr(disposal, "BATCH_RECORDS", 2)
        dry = disposal.run(st, None, dry_run=True)
        cert = disposal.run(st, None)
        dead = {a.serial, b.serial, c.serial, d.serial}
        assert {r["serial"] for r in cert["records"]} == dead
        assert {r["serial"] for r in dry["records"]} == dead
        assert set(dry["chunk_ids"]) == set(cert["chunk_ids"])
        assert (dry["chunks"], dry["bytes"]) == (cert["chunks"], cert["bytes"])
        gone = {bytes.fromhex(x) for x in cert["chunk_ids"]}
        assert in_ab <= gone and not in_kept & gone
        assert cert["destroyed_on"] == ["WU-P", "WU-M"]
        disposes = [e for e in st.events() if e["type"] == "dispose"]
        assert len(disposes) == 2 == len(cert["events"])
        assert [e["seq"] for e in disposes] == cert["events"]
        assert all(len(e["serials"]) <= 2 for e in disposes)
        assert disposes[1]["continues"] == disposes[0]["seq"]
        assert "continues" not in disposes[0]
        # Each batch is destroyed on both units before the next is planned.
        types = [e["type"] for e in st.events() if e["seq"] > disposes[0]["seq"]]
        assert types[0] == "disposal_done" and "dispose" in types[1:]
        assert st.read(kept.ino, 0, 100) == (shared_kept + blob(17, 300_000))[:100]
        assert st.read(h.ino, 0, 10)
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.as_dict()["findings"]
        assert disposal.run(st, None)["event"] is None
    same_segments(p, m)
    for unit in (p, m):
        rebuilt_equals_live(unit)


def test_a_run_of_many_batches_lists_a_bounded_certificate(pair, fake_time, monkeypatch):
    p, m = pair
    monkeypatch.setattr(disposal, "BATCH_RECORDS", 3)
    monkeypatch.setattr(disposal, "LISTED", 4)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        recs = [put(st, b"r%d" % i, blob(20 + i, 2000), retain="2026-02-01")
                for i in range(10)]
        fake_time.advance(30 * DAY)
        cert = disposal.run(st, None)
        assert len(cert["records"]) == 4 and cert["unlisted_records"] == 6
        assert len(cert["chunk_ids"]) == 4 and cert["unlisted_chunks"] == cert["chunks"] - 4
        assert len(cert["events"]) == 4
        named = [s for e in st.events() if e["type"] == "dispose" for s in e["serials"]]
        assert sorted(named) == sorted(r.serial for r in recs)   # the events name them all


def test_the_mirror_refuses_to_dispose_of_a_chunk_a_retained_record_still_lists(pair,
                                                                               fake_time):
    from wormfs.mirror.replica import Replica
    from wormfs.store import events as E
    from wormfs.store import frames as F

    from .test_mirror import _log_uuid
    p, m = pair
    shared = blob(30, 1 << 20)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        gone = put(st, b"gone", shared + blob(31, 200_000), retain="2026-02-01")
        kept = put(st, b"kept", shared + blob(32, 200_000))
        fake_time.advance(30 * DAY)
        st.unlink(1, b"gone", None)               # deleted on both units, not disposed
        chunks = [[c.hex(), *st.ix.chunk(st.ix.read(), c)] for c in chunk_ids(st, gone)]
        assert set(chunk_ids(st, gone)) & set(chunk_ids(st, kept))
        head_seq, head_hash = st.journal.last_seq, st.journal.last_hash
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        ev = {"seq": head_seq + 1, "prev": head_hash, "time": "2040-01-01T00:00:00.000000Z",
              "time_us": 2208988800 * 10**6, "type": "dispose", "serials": [gone.serial],
              "records": [], "chunks": chunks, "bytes": 0}
        end = rep.end()
        rep.receive(end[0], end[1], F.encode_event(E.encode(ev)))
        assert "still part of a retained record" in rep.kept_refusals()[-1]["reason"]
    finally:
        rep.close()
    assert shared[5000:5100] in segment_bytes(m)


def _make_old_index(unit):
    """What wormfs made before reference counts: the index without chunkrefs, undisposed
    and meta 'layout'."""
    import lmdb
    env = lmdb.open(f"{unit}/index", max_dbs=20)
    with env.begin(write=True) as txn:
        for name in (b"chunkrefs", b"undisposed"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        txn.delete(b"layout", db=env.open_db(b"meta", txn=txn))
    env.close()


def test_an_index_made_before_reference_counts_is_rebuilt_at_the_first_writable_open(
        pair, fake_time):
    from wormfs.errors import StoreError
    p, m = pair
    shared = blob(40, 1 << 20)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        put(st, b"early", shared + blob(41, 100_000), retain="2026-02-01")
        fake_time.advance(30 * DAY)
        disposal.run(st, None)                         # a disposed record: counted out
        for i in range(7):
            put(st, b"r%d" % i, shared + blob(42 + i, 100_000), retain="2026-03-15")
        put(st, b"zeros", bytes(600_000) + bytes(600_000))  # one chunk listed many times
        fake_time.advance(60 * DAY)
        st.unlink(1, b"r3", None)                      # deleted, not disposed
    want = {u: dump_index(u) for u in (p, m)}
    for unit in (p, m):
        _make_old_index(unit)
    with Store(m, readonly=True) as ms:                # read-only: it reads, says what is missing
        assert ms.stats()["records"] == 7
        with pytest.raises(StoreError, match="mount the store once"):
            disposal.run(ms, None, dry_run=True)
        rep = verification.run(ms, deep=True)          # an older index is not a finding
        assert rep.ok, rep.as_dict()["findings"]
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        cert = disposal.run(st, None, dry_run=True)
        assert {r["path"] for r in cert["records"]} == {"/r%d" % i for i in range(7)}
    for unit in (p, m):
        got = dump_index(unit)
        for name in ("chunkrefs", "undisposed"):
            assert got[name] == want[unit][name] and got[name], (unit, name)
        rebuilt_equals_live(unit)


def test_the_command_says_how_many_it_did_not_list_and_which_events_certify_it(
        pair, fake_time, monkeypatch, capsys):
    from wormfs.admin.commands import print_certificate
    p, m = pair
    monkeypatch.setattr(disposal, "BATCH_RECORDS", 2)
    monkeypatch.setattr(disposal, "LISTED", 3)
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        for i in range(5):
            put(st, b"r%d" % i, blob(50 + i, 3000), retain="2026-02-01")
        fake_time.advance(30 * DAY)
        print_certificate(disposal.run(st, None, dry_run=True))
        dry = capsys.readouterr().out
        cert = disposal.run(st, None)
        print_certificate(cert)
        done = capsys.readouterr().out
    assert dry.startswith("would dispose of 5 records\n") and "... and 2 more" in dry
    assert "certificate of destruction" not in dry
    first, last = cert["events"][0], cert["events"][-1]
    assert done.startswith("disposed of 5 records\n") and "... and 2 more" in done
    assert (f"certificate of destruction: events {first} to {last} (3 dispose events, "
            f"each naming the one before) of the audit trail; destroyed on WU-P, WU-M") in done
