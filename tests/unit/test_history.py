"""A record's audit history (export's audit.jsonl and each record's audit_events) comes from
the index's ``subjects`` table: exactly the events that reading the whole trail and asking
each one what it is about gives, in seq order, and a rebuilt index holds the same table."""
import os

import pytest

from tests.conftest import dump_index
from wormfs.admin import export
from wormfs.errors import WormError
from wormfs.store.maintenance import rebuild_index
from wormfs.store.store import Store


def record(st, parent, name, data):
    ino = st.create(parent, name, 0o644, None).ino
    st.write(ino, 0, data)
    return ino


def test_histories_from_the_index_are_those_of_the_whole_trail(store, unit_path, fake_time,
                                                               monkeypatch):
    st = store
    d = st.mkdir(1, b"mail", 0o755, None).ino
    a = record(st, d, b"a.tmp", b"draft")
    st.rename(d, b"a.tmp", d, b"a.eml", None)                # renamed while open
    st.setattr(a, None, mode=0o600)
    st.seal(a)
    b = record(st, d, b"b.eml", b"second")
    st.seal(b)
    c = record(st, d, b"c.eml", b"replaced by the next")
    n = record(st, d, b"new", b"the one that replaces it")
    st.rename(d, b"new", d, b"c.eml", None)                  # replaces an open file
    st.seal(n)
    st.place_hold(a, "CASE-1", "inquiry", None)
    st.set_retain_until(b, "2040-01-01", None)
    st.release_hold(a, "CASE-1", None)
    for attempt in (lambda: st.write(a, 0, b"x"), lambda: st.unlink(d, b"b.eml", None)):
        with pytest.raises(WormError):
            attempt()                                        # refused, and audited
    st.note("verify", None, ok=True, findings=0)             # about no record
    with st.ix.read() as txn:
        recs = [st.ix.inode(txn, i) for i in (a, b, n)]
    scratch = export._Scratch(str(unit_path) + "/..")
    try:
        got = {r.serial: export._History(st, scratch).of(r) for r in recs}
        monkeypatch.setattr(st.ix, "has_table", lambda name: False)
        walked = export._History(st, scratch)      # one pass over the trail, into scratch
        assert not walked.indexed
        want = {r.serial: walked.of(r) for r in recs}
    finally:
        scratch.close()
    assert got == want
    assert all(got[r.serial] for r in recs)
    assert "refused" in {ev["type"] for _, ev, _ in got[recs[0].serial]}
    assert any(ev.get("replaced") == c for _, ev, _ in got[recs[2].serial])
    st.close()
    live = dump_index(unit_path)
    os.rename(f"{unit_path}/index", f"{unit_path}/index.live")
    os.makedirs(f"{unit_path}/index")
    rebuild_index(unit_path)
    assert dump_index(unit_path)["subjects"] == live["subjects"]


def test_an_export_reads_only_the_events_about_what_it_exports(store, monkeypatch):
    st = store
    inos = []
    for i in range(40):
        inos.append(record(st, 1, b"r%d" % i, b"record %d" % i))
        st.seal(inos[-1])
    with st.ix.read() as txn:
        recs = [st.ix.inode(txn, inos[7])]
    read = []
    real = export.auditlog.event
    monkeypatch.setattr(export.auditlog, "event",
                        lambda log, ix, seq: read.append(seq) or real(log, ix, seq))
    monkeypatch.setattr(export.auditlog, "iter_events", None)   # no walk of the trail
    scratch = export._Scratch(str(st.path) + "/..")
    try:
        history = export._History(st, scratch).of(recs[0])
    finally:
        scratch.close()
    assert read == [s for s, _, _ in history] and len(read) >= 2
    assert {ev["type"] for _, ev, _ in history} >= {"create", "seal"}
