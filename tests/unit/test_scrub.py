"""verify and scrub on a primary and its mirror (below the FUSE layer): damage is found on
either side, repaired from the sound copy, audited; reads are served from the mirror."""
import os

import pytest

from tests.conftest import clear_immutable, make_pair
from tests.conftest import flip_byte as flip
from wormfs.errors import IntegrityError
from wormfs.mirror import verification
from wormfs.store.hostfs import is_immutable
from wormfs.store.index import Index
from wormfs.store.store import Store

SEG = 256 << 10


@pytest.fixture
def filled(tmp_path, fake_time):
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time,
                     segment_size=SEG)
    data = {}
    with Store(p, time_source=fake_time) as st:
        for i in range(12):
            blob = os.urandom(60_000 + 9_000 * i)
            ino = st.create(1, f"r{i}".encode(), 0o644, None).ino
            st.write(ino, 0, blob)
            data[st.seal(ino).ino] = blob
    yield p, m, data, fake_time
    clear_immutable(str(tmp_path))


def segfiles(unit):
    d = os.path.join(unit, "segments")
    return sorted(os.path.join(d, n) for n in os.listdir(d))


def biggest_finished(unit):
    return max((f for f in segfiles(unit) if f.endswith(".seg")), key=os.path.getsize)


def check(p, fake_time, **kw):
    with Store(p, time_source=fake_time) as st:
        return verification.run(st, **kw)


def events(p, fake_time, etype):
    with Store(p, readonly=True, time_source=fake_time) as st:
        return [e for e in st.events() if e["type"] == etype]


def test_clean_pair_verifies(filled):
    p, m, data, t = filled
    rep = check(p, t, deep=True)
    assert rep.ok and not rep.findings
    assert [u["records"] for u in rep.as_dict()["units"]] == [12, 12]
    assert events(p, t, "verify")[-1]["ok"] is True


@pytest.mark.parametrize("side", ["primary", "mirror"])
def test_a_flipped_byte_is_found_and_repaired_from_the_other_unit(filled, side):
    p, m, data, t = filled
    victim = biggest_finished(p if side == "primary" else m)
    flip(victim, os.path.getsize(victim) // 2)
    rep = check(p, t)
    assert not rep.ok
    unit = "WU-P" if side == "primary" else "WU-M"
    [f] = [f for f in rep.findings if f["kind"] == "damaged"]
    assert f["unit"] == unit
    # ...and the record that holds the damaged chunk is named, on that unit only.
    assert {(g["kind"], g["unit"]) for g in rep.findings} == {("damaged", unit),
                                                               ("record", unit)}
    rep = check(p, t, repair=True)
    assert rep.ok and rep.findings[0]["repaired"]
    assert check(p, t, deep=True).ok
    others = [f for f in segfiles(os.path.dirname(os.path.dirname(victim)))
              if f.endswith(".seg") and f != victim]
    assert is_immutable(victim) == is_immutable(others[0])            # flag set again
    assert not os.stat(victim).st_mode & 0o222                         # read-only again
    [r] = events(p, t, "repair")
    assert r["unit"] == f["unit"] and r["cause"] == "scrub"
    kinds = [(e["type"], e["ok"]) for e in events(p, t, "verify") + events(p, t, "scrub")]
    assert ("verify", False) in kinds and ("scrub", True) in kinds and ("verify", True) in kinds


def test_reads_are_served_from_the_mirror_and_repair_the_primary(filled):
    p, m, data, t = filled
    victim = biggest_finished(p)
    flip(victim, os.path.getsize(victim) // 2)
    with Store(p, time_source=t) as st:
        for ino, blob in data.items():
            assert st.read(ino, 0, len(blob)) == blob
    assert check(p, t, deep=True).ok            # the read put the frame back
    [r] = events(p, t, "repair")
    assert r["cause"] == "read" and r["source"] == "WU-M"


@pytest.mark.parametrize("side", ["primary", "mirror"])
def test_a_deleted_segment_is_put_back(filled, side):
    p, m, data, t = filled
    victim = biggest_finished(p if side == "primary" else m)
    clear_immutable(os.path.dirname(victim))
    os.unlink(victim)
    rep = check(p, t)
    assert not rep.ok and any(f["kind"] == "missing segment" and
                              f["unit"] == ("WU-P" if side == "primary" else "WU-M")
                              for f in rep.findings)
    with Store(p, time_source=t) as st:          # reads still give every byte
        for ino, blob in data.items():
            assert st.read(ino, 0, len(blob)) == blob
    rep = check(p, t, repair=True)
    assert rep.ok, rep.findings
    assert os.path.exists(victim) and not os.stat(victim).st_mode & 0o222
    assert check(p, t, deep=True).ok


def test_damage_on_both_units_at_one_place_is_unrepairable(filled):
    p, m, data, t = filled
    victim = biggest_finished(p)
    twin = os.path.join(m, "segments", os.path.basename(victim))
    off = os.path.getsize(victim) // 2
    flip(victim, off)
    flip(twin, off)
    rep = check(p, t, repair=True)
    assert not rep.ok
    assert {f["unit"] for f in rep.unrepaired} == {"WU-P", "WU-M"}
    with Store(p, time_source=t) as st, pytest.raises(IntegrityError):
        for ino, blob in data.items():
            st.read(ino, 0, len(blob))


def test_an_index_that_disagrees_with_the_log_is_a_finding(filled):
    p, m, data, t = filled
    ix = Index(os.path.join(p, "index"))
    with ix.write() as txn:
        key, _ = next(iter(txn.cursor(db=ix.db["chunks"])))
        txn.delete(key, db=ix.db["chunks"])
    ix.close()
    rep = check(p, t)
    assert not rep.ok and any(f["kind"] in ("index", "record") for f in rep.findings)


def test_deep_verify_compares_the_index_with_a_replay(filled):
    p, m, data, t = filled
    assert check(p, t, deep=True).ok
    ix = Index(os.path.join(m, "index"))     # an index entry the log does not say
    with ix.write() as txn:
        ino = next(iter(txn.cursor(db=ix.db["inodes"])))[0]
        txn.put(ino, b'{"tampered": true}', db=ix.db["inodes"])
    ix.close()
    rep = check(p, t, deep=True)
    assert any(f["kind"] == "index" and f["unit"] == "WU-M" and "'inodes'" in f["detail"]
               for f in rep.findings), rep.findings


def _drop_serial(unit, which):
    """Remove a record's serial from a unit's index behind its back; returns the serial."""
    ix = Index(os.path.join(unit, "index"))
    try:
        with ix.write() as txn:
            keys = [k for k, _ in txn.cursor(db=ix.db["serials"])]
            key = keys[which]
            txn.delete(key, db=ix.db["serials"])
        return int.from_bytes(key, "big")
    finally:
        ix.close()


def _parity(rep):
    return sorted(f["detail"] for f in rep.findings if f["kind"] == "parity")


@pytest.mark.parametrize("which", [0, 5, -1])   # the walk in step: first, middle, last
def test_a_record_one_unit_lists_and_the_other_does_not_is_a_parity_finding(filled, which):
    p, m, data, t = filled
    gone_on_mirror = _drop_serial(m, which)
    rep = check(p, t)
    assert any(f"record {gone_on_mirror} (" in d and "is not on the mirror" in d
               for d in _parity(rep)), rep.findings
    gone_on_primary = _drop_serial(p, which)   # now neither has that one; drop another
    assert gone_on_primary == gone_on_mirror
    other = _drop_serial(p, 2 if which != 2 else 3)
    assert _parity(check(p, t)) == [
        f"record {other} is on the mirror but not on the primary"]


def test_a_record_whose_digest_differs_between_the_units_is_a_parity_finding(filled):
    p, m, data, t = filled
    ix = Index(os.path.join(m, "index"))
    with ix.write() as txn:
        serial, ino = next(iter(txn.cursor(db=ix.db["serials"])))
        rec = ix.inode(txn, int.from_bytes(ino, "big"))
        rec.blake3 = "0" * 64
        ix.put_inode(txn, rec)
    ix.close()
    assert _parity(check(p, t)) == [
        f"record {int.from_bytes(serial, 'big')}: blake3 differs between the units"]


def test_findings_past_the_listed_number_are_counted_not_kept(filled, monkeypatch):
    """A mirror that lost most of its records lists a bounded number of them: the rest are
    counted (the daemon's background scrub keeps a report in memory), the result still
    fails and the verify event counts all of them."""
    from wormfs.mirror import scrub
    p, m, data, t = filled
    gone = [_drop_serial(m, 0) for _ in range(8)]
    monkeypatch.setattr(scrub, "LISTED_PER_KIND", 3)
    rep = check(p, t)
    listed = [f for f in rep.findings if f["kind"] == "parity"]
    assert len(listed) == 3 and rep.unlisted == {"parity": 5}
    assert f"record {gone[0]} (" in listed[0]["detail"]
    assert not rep.ok and rep.count == len(rep.findings) + 5
    assert rep.as_dict()["unlisted"] == {"parity": 5} and not rep.as_dict()["ok"]
    assert events(p, t, "verify")[-1]["findings"] == rep.count


@pytest.mark.parametrize("unit", ["primary", "mirror"])
def test_a_serial_whose_inode_is_gone_is_a_record_finding_and_the_walk_goes_on(filled,
                                                                              unit):
    """The walk of both units in step leaves out a serial with no inode; the record check
    still reports it, on the unit that lost it, and every other record is still read."""
    import struct
    p, m, data, t = filled
    where = p if unit == "primary" else m
    ix = Index(os.path.join(where, "index"))
    try:
        with ix.write() as txn:
            key, val = list(txn.cursor(db=ix.db["serials"]))[4]
            txn.delete(val, db=ix.db["inodes"])
    finally:
        ix.close()
    serial = struct.unpack(">Q", key)[0]
    rep = check(p, t)
    records = [f for f in rep.findings if f["kind"] == "record"]
    assert [(f["unit"], f["detail"]) for f in records] == [
        ("WU-P" if unit == "primary" else "WU-M",
         f"record {serial} has no inode in the index")]
    assert sorted(u["records"] for u in rep.as_dict()["units"]) == [11, 12]
