"""Replication below the FUSE layer: a primary and its mirror in temporary directories, each
with its own injectable clock. The mirror is a real unit (no stand-in): the tests read its
segments, its index and its own chain."""
import filecmp
import os
import shutil

import pytest

from tests.conftest import FakeTime, clear_immutable, dump_index, make_pair
from wormfs.errors import NotFound, Refused, StoreFull
from wormfs.store.localchain import LocalChain
from wormfs.mirror.replica import MirrorRefused, Replica
from wormfs.store import events as E
from wormfs.store import frames as F
from wormfs.store.store import Store


@pytest.fixture
def pair(tmp_path):
    yield str(tmp_path / "p"), str(tmp_path / "m")
    clear_immutable(str(tmp_path))


def put(st, name, data, actor=None):
    ino = st.create(1, name, 0o644, actor).ino
    st.write(ino, 0, data)
    return st.seal(ino)


def same_segments(p, m):
    a, b = sorted(os.listdir(f"{p}/segments")), sorted(os.listdir(f"{m}/segments"))
    assert a == b
    for name in a:
        assert filecmp.cmp(f"{p}/segments/{name}", f"{m}/segments/{name}", shallow=False), name


def local_events(m):
    with open(f"{m}/unit.json") as f:
        import json
        uuid = json.load(f)["uuid"]
    return LocalChain(f"{m}/local", bytes.fromhex(uuid.replace("-", "")), readonly=True).events()


def test_mirror_holds_the_same_log_and_answers_the_same(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time, segment_size=256 << 10)
    with Store(p, time_source=fake_time) as st:
        recs = [put(st, f"f{i}".encode(), os.urandom(50_000 + i * 7000)) for i in range(20)]
        assert all(st.record_mirror_status(r) == "synced" for r in recs)
        assert st.mirror_state()[0] == "synced"
    assert len(os.listdir(f"{p}/segments")) > 3   # several segment rolls were shipped
    same_segments(p, m)
    # Applied frame by frame by the same replay, the mirror's index equals the primary's.
    assert dump_index(p) == dump_index(m)
    with Store(m, readonly=True) as ms:
        for r in recs:
            assert ms.read(r.ino, 0, r.size) == Store.read(ms, r.ino, 0, r.size)
        assert ms.stats()["records"] == 20


def test_only_durable_frames_reach_the_mirror(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time)
    with Store(p, time_source=fake_time) as st:
        ino = st.create(1, b"open", 0o644, None).ino
        st.write(ino, 0, os.urandom(300_000))   # chunks appended, nothing made durable
        st.mirror.ship_durable()                  # ship now, without a sync first
        mirror_end = st.mirror.target.end()
        assert mirror_end == st.group.durable_pos < st.log.end_position()
        st.mirror_poll()                          # the mount's poll: sync, then ship
        assert st.mirror.target.end() == st.log.end_position() == st.group.durable_pos
        st.seal(ino)
    same_segments(p, m)


def test_mirror_away_during_writes_then_catches_up(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time)
    away = m + ".away"
    with Store(p, time_source=fake_time) as st:
        first = put(st, b"before", b"x" * 1000)
        os.rename(m, away)
        st.mirror_poll()                         # notices the directory is gone
        assert st.mirror_state()[0] == "unreachable"
        recs = [put(st, f"r{i}".encode(), os.urandom(3000)) for i in range(50)]
        assert all(st.record_mirror_status(r) == "pending" for r in recs)
        assert st.record_mirror_status(first) == "synced"
        os.rename(away, m)
        fake_time.advance(5)
        st.mirror._next_try = 0                  # do not wait out the back-off
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        assert all(st.record_mirror_status(r) == "synced" for r in recs)
        changes = [(e["state"], e["lag_events"]) for e in st.events() if e["type"] == "mirror"]
    assert [c[0] for c in changes] == ["unreachable", "synced"]
    same_segments(p, m)
    assert dump_index(p) == dump_index(m)


def test_a_delete_the_mirror_clock_forbids_is_refused_by_the_mirror(pair):
    # The primary's clock runs 7 years ahead (real time passing, as far as it can tell); the
    # mirror's does not. While the mirror is connected the primary goes by the earlier
    # clock (Store.peer_deletion_time) and refuses. With the mirror away it deletes a
    # record it thinks expired; the mirror refuses it when it is back, keeps the event
    # unapplied, and takes what comes after it.
    import time
    from wormfs.mirror.status import mirror_report
    from wormfs.store.unit import read_unit
    pt, mt = FakeTime(), FakeTime()
    p, m = make_pair(*pair, time_source=pt, mirror_time_source=mt, default_retention="1y")
    st = Store(p, time_source=pt, mirror_time_source=mt)
    rec = put(st, b"trade.csv", b"blotter" * 1000)
    pt.advance(7 * 365 * 86400)
    with pytest.raises(Refused, match="by the mirror's compliance clock"):
        st.unlink(1, b"trade.csv", None)
    os.rename(m, m + ".away")
    st.mirror_poll()
    assert st.mirror_state()[0] == "unreachable"
    st.unlink(1, b"trade.csv", None)             # allowed by the primary's clock
    os.rename(m + ".away", m)
    time.sleep(2.1)                               # the replicator's retry interval
    st.mirror_poll()
    after = put(st, b"later", b"more")            # the mirror takes the events after it
    assert st.record_mirror_status(after) == "synced"
    mirror_events = [e for e in st.events() if e["type"] == "mirror"]
    refused = [e for e in mirror_events if e["state"] == "refused"]
    assert len(refused) == 1 and "retained until" in refused[0]["reason"]
    seq = st.journal.last_seq
    st.close()
    refusals = [e for e in local_events(m) if e["type"] == "refused"]
    assert len(refusals) == 1 and refusals[0]["event_type"] == "delete"
    assert refusals[0]["serial"] == rec.serial and refusals[0]["kept"] is True
    same_segments(p, m)                           # the log is still one log
    with Store(m, readonly=True) as ms:             # the record is whole on the mirror
        assert ms.read(rec.ino, 0, rec.size) == b"blotter" * 1000
        assert ms.inode(rec.ino).state == "sealed"
        assert ms.inode(after.ino).state == "sealed"
    report = mirror_report(p, read_unit(p), seq)
    assert report["state"] == "refused" and "retained until" in report["detail"]
    assert [r["event_seq"] for r in report["refused_kept"]] == [refusals[0]["event_seq"]]
    # A replay of the mirror's log (rebuild-index) skips it too: the index is the same.
    before = dump_index(m)
    shutil.rmtree(f"{m}/index")
    os.makedirs(f"{m}/index")
    from wormfs.store.maintenance import rebuild_index
    rebuild_index(m)
    assert dump_index(m) == before


def test_a_forged_delete_frame_is_kept_unapplied(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time)
    with Store(p, time_source=fake_time) as st:
        rec = put(st, b"mail.eml", b"From: a\n\nhello\n")
        head_seq, head_hash = st.journal.last_seq, st.journal.last_hash
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        ev = {"seq": head_seq + 1, "prev": head_hash, "time": "2040-01-01T00:00:00.000000Z",
              "time_us": 2208988800 * 10**6, "type": "delete", "ino": rec.ino,
              "serial": rec.serial, "path": "/mail.eml", "blake3": rec.blake3,
              "size": rec.size}
        payload = E.encode(ev)
        frame = F.encode_event(payload)
        end = rep.end()
        assert rep.receive(end[0], end[1], frame) == (end[0], end[1] + len(frame))
        assert rep.head() == (head_seq + 1, E.event_hash(payload))
        assert len(rep.kept_refusals()) == 1
        assert "retained until" in rep.kept_refusals()[0]["reason"]
        with rep.ix.read() as txn:
            assert rep.ix.inode(txn, rec.ino).state == "sealed"
        # A chain break still stops the batch: nothing after it could be checked.
        bad = F.encode_event(E.encode(dict(ev, seq=head_seq + 5)))
        end = rep.end()
        with pytest.raises(MirrorRefused, match="does not continue the chain"):
            rep.receive(end[0], end[1], bad)
        assert rep.end() == end
    finally:
        rep.close()
    assert [e["type"] for e in local_events(m)].count("refused") == 2
    # Reopened, the mirror still skips it (its local chain says so) and still refuses the
    # break.
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        with rep.ix.read() as txn:
            assert rep.ix.inode(txn, rec.ino).state == "sealed"
        assert rep.skip == {head_seq + 1}
    finally:
        rep.close()


def test_damaged_frames_are_not_kept(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time)
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        data = os.urandom(1000)
        import blake3
        import xxhash
        cid = blake3.blake3(data).digest()
        frame = bytearray(F.frame_header(F.T_CHUNK, cid, len(data), xxhash.xxh3_64_intdigest(
            data)) + data)
        frame[-1] ^= 1
        end = rep.end()
        with pytest.raises(Exception, match="checksum"):
            rep.receive(end[0], end[1], bytes(frame))
        assert rep.end() == end
    finally:
        rep.close()


def test_new_files_are_refused_once_the_mirror_is_too_far_behind(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time, settings={"mirror_max_lag": "1h"})
    with Store(p, time_source=fake_time) as st:
        os.rename(m, m + ".away")
        st.mirror_poll()
        put(st, b"a", b"1")                           # within the lag: fine, pending
        fake_time.advance(3601)
        with pytest.raises(StoreFull, match="mirror_max_lag"):
            st.create(1, b"b", 0o644, None)
        os.rename(m + ".away", m)
        st.mirror._next_try = 0
        st.mirror_poll()
        put(st, b"b", b"2")                           # back: new files are fine again
    same_segments(p, m)


def test_a_mirror_that_is_not_a_prefix_is_diverged(pair, fake_time):
    p, m = make_pair(*pair, time_source=fake_time)
    twin = p + ".twin"
    shutil.copytree(p, twin)            # a second primary with the same past and the same peer
    with Store(p, time_source=fake_time) as st:
        put(st, b"a", b"1")
    with Store(twin, time_source=fake_time) as st:
        assert st.mirror_state()[0] == "diverged"
        rec = put(st, b"zzz", b"other")               # the twin goes on alone
        assert st.record_mirror_status(rec) == "pending"
    with Store(m, readonly=True) as mirror:           # and the mirror kept its own history
        assert mirror.lookup(1, b"a").size == 1
        with pytest.raises(NotFound):
            mirror.lookup(1, b"zzz")


def _log_uuid(m):
    import json
    with open(f"{m}/unit.json") as f:
        return json.load(f)["log_uuid"]


def test_a_torn_end_of_the_mirrors_open_segment_is_cut_and_kept(pair, fake_time):
    # A crash of the mirror's host during an append leaves a partial frame at the end of its
    # open segment: the mirror cuts it at open, keeps the bytes in quarantine/, records it in
    # its own chain, and the primary ships the rest again.
    p, m = make_pair(*pair, time_source=fake_time)
    with Store(p, time_source=fake_time) as st:
        put(st, b"a", b"first")
    seg = [n for n in os.listdir(f"{m}/segments") if n.endswith(".open")][0]
    size = os.path.getsize(f"{m}/segments/{seg}")
    with open(f"{m}/segments/{seg}", "ab") as f:
        f.write(b"WF\x01\x00torn-by-a-crash")
    with Store(p, time_source=fake_time) as st:
        r = put(st, b"b", b"second")
        assert st.record_mirror_status(r) == "synced"
    torn = [e for e in local_events(m) if e["type"] == "torn_tail"]
    assert len(torn) == 1 and torn[0]["offset"] == size and torn[0]["sound_after"] is False
    assert os.path.getsize(os.path.join(m, torn[0]["quarantine"])) == 19
    same_segments(p, m)


def test_a_forged_create_or_state_that_names_a_record_state_is_kept_unapplied(pair, fake_time):
    """Only a seal makes a record. A create that says its file is already 'sealed', or a
    state change to 'sealed' or 'deleted', would give the mirror a record with no serial, no
    content and no retention: the mirror refuses them (kept in its chain, not applied)."""
    p, m = make_pair(*pair, time_source=fake_time)
    with Store(p, time_source=fake_time) as st:
        opened = st.create(1, b"draft.txt", 0o644, None)
        st.sync()
        head_seq, head_hash = st.journal.last_seq, st.journal.last_hash
    rep = Replica(m, serial="WU-M", log_uuid=_log_uuid(m), time_source=fake_time)
    try:
        forged = [
            {"type": "create", "ino": opened.ino + 1, "parent": 1, "name": "fake.eml",
             "mode": 0o444, "uid": 0, "gid": 0, "state": "sealed"},
            {"type": "state", "ino": opened.ino, "state": "deleted"},
            {"type": "state", "ino": 1, "state": "open"},   # the root is no file
        ]
        seq, prev = head_seq, head_hash
        for i, fields in enumerate(forged):
            seq += 1
            payload = E.encode(dict(fields, seq=seq, prev=prev, time_us=fake_time.wall_us(),
                                    time="2026-01-01T00:00:00.000000Z"))
            prev = E.event_hash(payload)
            end = rep.end()
            rep.receive(end[0], end[1], F.encode_event(payload))
        reasons = [r["reason"] for r in rep.kept_refusals()]
        assert len(reasons) == 3, reasons
        assert "state 'sealed' is not one of open, scratch" in reasons[0]
        assert "state 'deleted' is not one of open, scratch" in reasons[1]
        assert "not an open or scratch file" in reasons[2]
        with rep.ix.read() as txn:
            assert rep.ix.inode(txn, opened.ino + 1) is None
            assert rep.ix.inode(txn, opened.ino).state == "open"
            assert rep.ix.inode(txn, 1).state is None
    finally:
        rep.close()
