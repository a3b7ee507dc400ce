"""The binary inode record (store/inode.py, docs/FORMAT.md "Inodes"): every record reads back
as it was written, the JSON an older wormfs wrote still reads, values the binary form cannot
hold fall back to JSON, and the bytes are what FORMAT.md says (a reader without our code)."""
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wormfs.store import inode as I
from wormfs.store.inode import Inode, Kind, State

ACTOR = {"uid": 1000, "gid": 1000, "pid": 4242, "program": "cp", "user": "trader"}


def a_record(**changes):
    fields = dict(ino=5, kind=Kind.FILE, parent=4, name="r12345", mode=0o444, uid=1000,
                  gid=1000, size=2600, ctime=1768467600000000, mtime=1768467500000000,
                  atime=1957770000000000, cookie=6, creator=dict(ACTOR),
                  state=State.SEALED,
                  retention={"event_date": None, "event_period": None, "indefinite": False,
                             "until": 1957770000000000},
                  serial=1, committed=1768467600000000, blake3="1f" * 32,
                  path="/d000001/r12345", writer=dict(ACTOR), seal_seq=7)
    fields.update(changes)
    return Inode(**fields)


def test_a_record_is_a_third_of_its_json_and_reads_back_equal():
    rec = a_record()
    raw = rec.to_bytes()
    assert raw[0] == I.VERSION and len(raw) < len(json.dumps(rec.to_json())) / 2.5
    assert Inode.from_bytes(raw) == rec
    assert Inode.from_bytes(json.dumps(rec.to_json()).encode()) == rec   # the older form


def test_the_bytes_are_what_format_md_says():
    """Decoded here by hand from FORMAT.md's description alone."""
    raw = a_record().to_bytes()
    head = struct.Struct("<BBBHQQIIIQqqqQ")
    (version, kind, state, flags, ino, parent, mode, uid, gid, size, ctime, mtime, atime,
     cookie) = head.unpack_from(raw)
    assert (version, chr(kind), state, ino, parent, mode, size, cookie) == \
        (1, "f", 3, 5, 4, 0o444, 2600, 6)
    # serial, committed, blake3, seal_seq, until; then name, path, creator; writer = creator
    assert flags == 1 | 2 | 4 | 8 | 128 | 256 | 512 | 4096 | 16384
    serial, committed, digest, seal_seq, until = struct.unpack_from("<Qq32sQq", raw, head.size)
    assert (serial, committed, digest.hex(), seal_seq, until) == \
        (1, 1768467600000000, "1f" * 32, 7, 1957770000000000)
    off = head.size + 64
    (n,) = struct.unpack_from("<H", raw, off)
    assert raw[off + 2:off + 2 + n] == b"r12345"
    off += 2 + n
    (n,) = struct.unpack_from("<I", raw, off)
    assert raw[off + 4:off + 4 + n] == b"/d000001/r12345"
    off += 4 + n
    (n,) = struct.unpack_from("<I", raw, off)
    assert json.loads(raw[off + 4:off + 4 + n]) == ACTOR and off + 4 + n == len(raw)


@pytest.mark.parametrize("changes", [
    dict(mode=1 << 40), dict(size=-1), dict(serial=1 << 64), dict(blake3="AB" * 32),
    dict(blake3="12"), dict(mode=True), dict(name=7), dict(ctime=1.5)],
    ids=["mode", "size", "serial", "upper-hex", "short-digest", "bool", "name", "float"])
def test_values_the_binary_record_cannot_hold_are_stored_as_json(changes):
    """Only a forged event could make these; the replay must store them anyway (a unit that
    cannot be replayed cannot be opened), and as exactly what it was given."""
    rec = a_record(**changes)
    raw = rec.to_bytes()
    assert raw[:1] == b"{"
    back = Inode.from_bytes(raw)
    assert back == rec and all(type(getattr(back, k)) is type(v) for k, v in changes.items())


def test_a_directory_a_deleted_record_and_odd_retentions_read_back():
    d = Inode(ino=2, kind=Kind.DIR, parent=1, name="mail", mode=0o755, subdirs=3,
              creator=dict(ACTOR))
    assert Inode.from_bytes(d.to_bytes()) == d and d.to_bytes()[:1] == b"\x01"
    for rec in (a_record(state=State.DELETED, deleted=5, disposed=6),
                a_record(retention={"event_date": None, "event_period": "6y",
                                    "indefinite": False, "until": None}),
                a_record(retention="2030-01-01"), a_record(holds={"CASE-1": "SEC"}),
                a_record(writer={"uid": 0}), a_record(writer={**ACTOR, "uid": True}),
                a_record(recovered_from={"serial": 3}), a_record(name="caf\udce9"),
                a_record(state=State.OPEN, serial=None, committed=None, blake3=None,
                         seal_seq=None, path=None, writer=None)):
        raw = rec.to_bytes()
        assert raw[:1] == b"\x01", rec
        back = Inode.from_bytes(raw)
        assert back == rec
        assert json.dumps(back.to_json(), sort_keys=True) == \
            json.dumps(rec.to_json(), sort_keys=True)   # types too, not only equal values


def test_trailing_bytes_and_another_version_are_refused():
    raw = a_record().to_bytes()
    with pytest.raises(ValueError):
        Inode.from_bytes(raw + b"x")
    with pytest.raises(ValueError):
        Inode.from_bytes(b"\x02" + raw[1:])


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda c: st.lists(c, max_size=3) |
                           st.dictionaries(st.text(), c, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "ino": st.integers(0, 1 << 64), "parent": st.integers(0, 1 << 64),
    "mode": st.integers(0, 1 << 33), "size": st.integers(-1, 1 << 64),
    "mtime": st.integers(-(1 << 63) - 1, 1 << 63), "name": st.none() | st.text(),
    "path": st.none() | st.text(), "serial": st.none() | st.integers(0, 1 << 64),
    "blake3": st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    "retention": st.none() | json_values, "holds": st.none() | json_values,
    "creator": st.none() | json_values, "writer": st.none() | json_values,
    "recovered_from": st.none() | json_values, "subdirs": st.integers(0, 1 << 33),
    "state": st.sampled_from([None, *State]), "kind": st.sampled_from(list(Kind)),
    "deleted": st.none() | st.integers(-5, 1 << 62)}))
def test_any_record_reads_back_exactly(fields):
    rec = Inode(**fields)
    if rec.kind is Kind.DIR and rec.holds == {}:
        rec.holds = None    # what either stored form gives a directory with no holds
    raw = rec.to_bytes()
    back = Inode.from_bytes(raw)
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(rec.to_json(),
                                                                    sort_keys=True)
    # A search by path reads the path alone, the same from either form.
    assert I.stored_path(raw) == (rec.state is State.SEALED, rec.path)
    # A directory listing reads the stat fields alone, the same as the whole record has.
    seen = Inode.from_bytes(raw, listing=True)
    for field in STAT_FIELDS:
        assert getattr(seen, field) == getattr(back, field), field


STAT_FIELDS = ("ino", "kind", "state", "mode", "uid", "gid", "size", "ctime", "mtime",
               "atime", "retention", "subdirs", "orphan", "serial")


def test_an_index_of_json_inodes_still_verifies_deep_and_is_rewritten_as_it_changes(
        tmp_path, fake_time):
    """An index an older wormfs wrote holds JSON inodes; it is not rebuilt to be read.
    verify --deep compares its inodes with a replay's (binary) by what they say, so it is
    clean; an inode that says something else is still a finding."""
    import os

    from tests.conftest import clear_immutable, make_pair
    from wormfs.mirror import verification
    from wormfs.store.index import Index, k64
    from wormfs.store.store import Store
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time)
    try:
        inos = []
        with Store(p, time_source=fake_time) as s:
            for i in range(5):
                ino = s.create(1, b"r%d" % i, 0o644, None).ino
                s.write(ino, 0, b"x" * (i + 1))
                s.seal(ino)
                inos.append(ino)
        for unit in (p, m):
            ix = Index(os.path.join(unit, "index"))
            with ix.write() as txn:
                for key, raw in list(txn.cursor(db=ix.db["inodes"])):
                    old = json.dumps(Inode.from_bytes(raw).to_json(), sort_keys=True)
                    txn.put(key, old.encode(), db=ix.db["inodes"])
            ix.close()
        with Store(p, time_source=fake_time) as s:
            rep = verification.run(s, deep=True)
            assert rep.ok, rep.findings
            s.place_hold(inos[0], "CASE", "why", None)
            with s.ix.read() as txn:
                kinds = {bytes(raw[:1]) for _, raw in txn.cursor(db=s.ix.db["inodes"])}
            assert kinds == {b"{", b"\x01"}        # what changed is written anew
            assert verification.run(s, deep=True).ok
        ix = Index(os.path.join(m, "index"))
        with ix.write() as txn:
            raw = txn.get(k64(inos[1]), db=ix.db["inodes"])
            rec = Inode.from_bytes(raw)
            rec.size += 1
            txn.put(k64(inos[1]), json.dumps(rec.to_json()).encode(), db=ix.db["inodes"])
        ix.close()
        with Store(p, time_source=fake_time) as s:
            rep = verification.run(s, deep=True)
        assert any(f["kind"] == "index" and f["unit"] == "WU-M" and "'inodes'" in f["detail"]
                   for f in rep.findings), rep.findings
    finally:
        clear_immutable(str(tmp_path))
