"""The record store below FUSE: files, records, dedup, refusals, the index as a cache of the
log, damage detection."""
import json
import os
import random

import blake3
import pytest

from wormfs.actor import Actor
from wormfs.cli import main as cli
from wormfs.errors import Exists, IntegrityError, IsADirectory, NotEmpty, NotFound, Refused
from wormfs.store.maintenance import verify_log
from wormfs.store.store import Store

from ..conftest import dump_index, make_unit, staged_files

USER = Actor(1000, 1000, 7, "pytest")


def put(store, name, data, parent=1):
    f = store.create(parent, name, 0o644, USER)
    store.write(f.ino, 0, data)
    return store.seal(f.ino, USER)


def test_open_file_random_writes_then_record(store):
    f = store.create(1, b"blotter.csv", 0o644, USER)
    assert f.state == "open"
    store.write(f.ino, 10, b"world")
    store.write(f.ino, 0, b"hello")
    store.truncate(f.ino, 12)
    store.write(f.ino, 12, b"!")
    assert store.read(f.ino, 0, 100) == b"hello\0\0\0\0\0wo!"
    r = store.seal(f.ino, USER)
    assert r.state == "sealed" and r.serial == 1 and r.size == 13
    assert r.blake3 == blake3.blake3(b"hello\0\0\0\0\0wo!").hexdigest()
    assert r.mode == 0o444
    assert store.read(r.ino, 5, 4) == b"\0\0\0\0"
    assert not staged_files(store)


def test_empty_and_sparse_and_large(store):
    assert put(store, b"empty", b"").blake3 == blake3.blake3(b"").hexdigest()
    assert store.read(store.lookup(1, b"empty").ino, 0, 10) == b""
    f = store.create(1, b"sparse", 0o644, USER)
    store.write(f.ino, 5 << 20, b"end")
    r = store.seal(f.ino, USER)
    assert r.size == (5 << 20) + 3
    assert store.read(r.ino, (5 << 20) - 2, 10) == b"\0\0end"
    stats = store.stats()
    assert stats["stored_bytes"] < 1 << 20     # the zeros are one chunk, stored once


def test_identical_content_stored_once(store):
    data = random.Random(1).randbytes(2_000_000)
    put(store, b"a", data)
    before = store.stats()["stored_bytes"]
    put(store, b"b", data)
    put(store, b"c", data[:1_000_000] + b"x" + data[1_000_000:])
    s = store.stats()
    assert s["records"] == 3 and s["logical_bytes"] == 6_000_001
    assert before == 2_000_000
    assert s["stored_bytes"] < before + 600_000   # the edit costs a few chunks, not a copy
    for name, expect in ((b"a", data), (b"b", data)):
        assert store.read(store.lookup(1, name).ino, 0, len(data)) == expect


def test_records_refuse_change(store):
    r = put(store, b"rec", b"content")
    ino = r.ino
    for fn in (lambda: store.write(ino, 0, b"x", USER), lambda: store.truncate(ino, 0, USER),
               lambda: store.setattr(ino, USER, mode=0o666),
               lambda: store.setattr(ino, USER, mtime=0),
               lambda: store.rename(1, b"rec", 1, b"other", USER),
               lambda: store.create(1, b"rec", 0o644, USER),
               lambda: store.unlink(1, b"rec", USER)):
        with pytest.raises(Refused):
            fn()
    put(store, b"new", b"n")
    with pytest.raises(Refused):
        store.rename(1, b"new", 1, b"rec", USER)        # onto a record
    refused = [e for e in store.events() if e["type"] == "refused"]
    assert len(refused) == 8
    assert all(e["serial"] == 1 and e["path"] == "/rec" and e["actor"]["uid"] == 1000
               for e in refused[:7])
    assert store.read(ino, 0, 100) == b"content"
    assert store.inode(ino).blake3 == blake3.blake3(b"content").hexdigest()


def test_directories(store):
    d = store.mkdir(1, b"d", 0o755, USER)
    e = store.mkdir(d.ino, b"e", 0o755, USER)
    with pytest.raises(Exists):
        store.mkdir(1, b"d", 0o755, USER)
    with pytest.raises(NotEmpty):
        store.rmdir(1, b"d", USER)
    store.rename(1, b"d", 1, b"d2", USER)               # no records below: allowed
    put(store, b"r", b"x", parent=e.ino)
    with pytest.raises(Refused):
        store.rename(1, b"d2", 1, b"d3", USER)
    with pytest.raises(Refused):
        store.rmdir(d.ino, b"e", USER)
    with pytest.raises(IsADirectory):
        store.unlink(1, b"d2", USER)
    assert [n for _, n, _ in store.readdir(1)] == [b".wormfs", b"d2"]
    assert store.resolve("/d2/e/r").state == "sealed"
    assert store.path_of(store.resolve("/d2/e/r").ino) == "/d2/e/r"
    store.mkdir(1, b"gone", 0o755, USER)
    store.rmdir(1, b"gone", USER)
    with pytest.raises(NotFound):
        store.lookup(1, b"gone")


def test_readdir_cookies_only_grow(store):
    for i in range(5):
        store.mkdir(1, b"d%d" % i, 0o755, USER)
    first = store.readdir(1)
    assert first[0][1] == b".wormfs"  # made with the store
    cookies = [c for c, _, _ in first[1:]]
    assert cookies == sorted(cookies)
    store.rename(1, b"d0", 1, b"z", USER)
    after = store.readdir(1, cookies[2])
    assert [n for _, n, _ in after] == [b"d3", b"d4", b"z"]


def test_scratch_and_open_files_can_go(store):
    f = store.create(1, b".report.csv.a1B2c3", 0o644, USER)
    assert f.state == "scratch"
    store.write(f.ino, 0, b"draft")
    r = store.rename(1, b".report.csv.a1B2c3", 1, b"report.csv", USER)
    assert r.state == "open"
    g = store.create(1, b"x.tmp", 0o644, USER)
    store.unlink(1, b"x.tmp", USER)
    with pytest.raises(NotFound):
        store.lookup(1, b"x.tmp")
    assert not os.path.exists(os.path.join(store.path, "staging", str(g.ino)))


def test_a_reused_staging_file_starts_empty_whatever_was_put_in_it(store):
    put(store, b"first", b"x" * 5000)
    spares = os.listdir(os.path.join(store.path, "staging"))
    assert spares and not staged_files(store)  # kept for the next create, empty
    with open(os.path.join(store.path, "staging", spares[0]), "wb") as f:
        f.write(b"planted behind the store's back" * 300)   # root, in the unit
    g = store.create(1, b"second", 0o644, USER)
    store.write(g.ino, 4096, b"tail")   # a hole before it: zeros, never the planted bytes
    assert store.read(g.ino, 0, 10_000) == bytes(4096) + b"tail"
    r = store.seal(g.ino, USER)
    assert r.size == 4100 and store.read(r.ino, 0, 10_000) == bytes(4096) + b"tail"


def test_leftover_staging_files_are_emptied_and_links_never_followed_at_open(unit_path,
                                                                           fake_time, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the store's")
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        f = st.create(1, b"left-open", 0o644, USER)
        st.write(f.ino, 0, b"unfinished")
        staging = os.path.join(st.path, "staging")
    for name, data in (("999", b"a seal that ended before its unlink"), ("spare-4", b"junk")):
        with open(os.path.join(staging, name), "wb") as fh:
            fh.write(data)
    os.symlink(victim, os.path.join(staging, "spare-9"))
    os.symlink(victim, os.path.join(staging, "998"))
    linked = tmp_path / "linked"   # a hard link planted in staging/: its file is not ours
    linked.write_bytes(b"has another name")
    os.link(linked, os.path.join(staging, "997"))
    os.mkfifo(os.path.join(staging, "996"))
    nxt = str(f.ino + 1)   # a directory where the next create's bytes go
    os.mkdir(os.path.join(staging, nxt))
    with open(os.path.join(staging, nxt, "x"), "wb") as fh:
        fh.write(b"inside")
    with Store(unit_path, time_source=fake_time) as st:
        assert [n for n in staged_files(st) if ".not-ours-" not in n] == [str(f.ino)]
        names = os.listdir(staging)   # the open file's bytes stay (and the moved directory)
        assert all(os.path.getsize(os.path.join(staging, n)) == 0 and
                   not os.path.islink(os.path.join(staging, n))
                   for n in names if n.startswith("spare-"))
        assert st.read(f.ino, 0, 100) == b"unfinished"
        for i in range(3):   # the spares are taken: each new file holds just its bytes
            r = put(st, b"n%d" % i, b"new %d" % i)
            assert st.read(r.ino, 0, 100) == b"new %d" % i
    assert victim.read_bytes() == b"not the store's"
    assert linked.read_bytes() == b"has another name"
    assert not os.path.exists(os.path.join(staging, "997"))
    assert not os.path.exists(os.path.join(staging, "996"))
    moved = [n for n in os.listdir(staging) if n.startswith(nxt + ".not-ours-")]
    assert len(moved) == 1   # moved aside whole, so that inode's create (above) could stage
    with open(os.path.join(staging, moved[0], "x"), "rb") as fh:
        assert fh.read() == b"inside"


def test_a_failed_transaction_leaves_the_counters_as_committed(unit_path, fake_time):
    """The chain head and counters wait in the write transaction until commit (index.py
    HOT_META): an abort must leave them as LMDB has them, or the next event breaks the
    chain."""
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        put(st, b"a", b"one")

        def half_done(journal):
            journal.event("refused", None, op="test", reason="then it fails", errno="EPERM")
            raise RuntimeError("failed after appending")   # the event was applied already
        with pytest.raises(RuntimeError):
            st.transact(half_done)
        r = put(st, b"b", b"two")   # the next events follow the committed head
        assert r.serial == 2 and st.read(r.ino, 0, 10) == b"two"
        assert st.stats()["records"] == 2
        events, _ = verify_log(st.log)
        assert [e["seq"] for e in st.events()] == list(range(1, events + 1))
        assert not any(e.get("op") == "test" for e in st.events())
    before = dump_index(unit_path)
    assert cli(["rebuild-index", unit_path]) == 0
    assert dump_index(unit_path) == before


def test_write_at_once_takes_only_small_in_order_writes(store):
    """The mount's event loop writes a small file itself (Store.write_at_once); anything
    that might wait or needs the rules (a rewrite, bytes ahead, a chunk's worth, a record)
    is left to ``write`` in a worker: None, and nothing done."""
    ino = store.create(1, b"q", 0o644, USER).ino
    assert store.write_at_once(ino, 0, b"abc") == 3
    assert store.write_at_once(ino, 10, b"x") is None          # ahead of the stream
    assert store.write_at_once(ino, 1, b"z") is None           # a rewrite
    assert store.write_at_once(ino, 3, bytes(20_000)) is None  # could cut a chunk
    assert store.read(ino, 0, 100) == b"abc"
    store.write(ino, 3, b"def")
    r = store.seal(ino, USER)
    assert store.write_at_once(ino, 6, b"late") is None        # a record: refused elsewhere
    with pytest.raises(Refused):
        store.write(ino, 6, b"late")
    assert store.read(r.ino, 0, 100) == b"abcdef" and r.size == 6


def test_rebuild_index_answers_exactly_as_before(unit_path, fake_time, capsys):
    make_unit(unit_path, fake_time, segment_size=300_000)   # many segments
    with Store(unit_path, time_source=fake_time) as st:
        d = st.mkdir(1, b"mail", 0o755, USER)
        rng = random.Random(3)
        for i in range(12):
            put(st, b"m%d" % i, rng.randbytes(rng.randint(0, 400_000)), parent=d.ino)
        st.set_retain_until(st.lookup(d.ino, b"m1").ino, "2040-01-01", USER)
        st.place_hold(st.lookup(d.ino, b"m2").ino, "case", "why", None)
        st.rename(1, b"mail", 1, b"mail", USER)
        with pytest.raises(Refused):
            st.unlink(d.ino, b"m3", USER)
    before = dump_index(unit_path)
    assert len(os.listdir(os.path.join(unit_path, "segments"))) > 3
    assert cli(["rebuild-index", unit_path]) == 0
    assert dump_index(unit_path) == before
    with Store(unit_path, time_source=fake_time) as st:
        assert st.resolve("/mail/m2").holds == {"case": "why"}


def test_finished_segments_are_read_only(unit_path, fake_time):
    make_unit(unit_path, fake_time, segment_size=200_000)
    with Store(unit_path, time_source=fake_time) as st:
        put(st, b"big", random.Random(5).randbytes(1_000_000))
    segs = sorted(os.listdir(os.path.join(unit_path, "segments")))
    assert segs[-1].endswith(".open") and all(s.endswith(".seg") for s in segs[:-1])
    p = os.path.join(unit_path, "segments", segs[0])
    assert os.stat(p).st_mode & 0o222 == 0


def flip_byte_in_chunk(path, st, record_ino):
    with st.ix.read() as txn:
        _, _, cid = next(st.ix.manifest_from(txn, st.inode(record_ino).serial, 0))
        segno, off, length = st.ix.chunk(txn, cid)
    seg = st.log.path(segno)
    from wormfs.store.hostfs import set_immutable
    set_immutable(seg, False)
    os.chmod(seg, 0o644)
    with open(seg, "r+b") as f:
        f.seek(off + 56 + length // 2)
        b = f.read(1)
        f.seek(off + 56 + length // 2)
        f.write(bytes([b[0] ^ 0x01]))


def test_flipped_byte_is_an_integrity_error_never_wrong_bytes(store):
    data = random.Random(9).randbytes(300_000)
    r = put(store, b"r", data)
    flip_byte_in_chunk(store.path, store, r.ino)
    store.reader.forget()
    with pytest.raises(IntegrityError, match="checksum"):
        store.read(r.ino, 0, len(data))
    with pytest.raises(IntegrityError):
        verify_log(store.log)


def test_torn_tail_is_cut_and_quarantined(unit_path, fake_time):
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        r = put(st, b"ok", b"kept")
        end = st.log.end_position()
    seg = os.path.join(unit_path, "segments", "%010d.open" % end[0])
    with open(seg, "ab") as f:
        f.write(b"WF\x02\x00\xff\xff\x00\x00garbage-from-a-crash")
    with Store(unit_path, time_source=fake_time) as st:
        assert st.read(r.ino, 0, 10) == b"kept"
        ev = [e for e in st.events() if e["type"] == "torn_tail"]
        assert len(ev) == 1 and ev[0]["offset"] == end[1]
        assert os.path.exists(os.path.join(unit_path, ev[0]["quarantine"]))
        verify_log(st.log)


def test_damage_before_the_tail_is_not_cut(unit_path, fake_time):
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        st.journal.mutate(lambda txn: None)
        start = st.log.end_position()
        put(st, b"a", b"first")
        put(st, b"b", b"second")
    # Lose the index's record of the last frames and damage a frame in the middle of them.
    import shutil
    shutil.rmtree(os.path.join(unit_path, "index"))
    os.makedirs(os.path.join(unit_path, "index"))
    seg = os.path.join(unit_path, "segments", "%010d.open" % start[0])
    with open(seg, "r+b") as f:
        f.seek(start[1] + 30)
        f.write(b"\xff\xff")
    size = os.path.getsize(seg)
    with pytest.raises(IntegrityError, match="damaged"):
        Store(unit_path, time_source=fake_time)
    assert os.path.getsize(seg) == size      # nothing cut, nothing lost


def _lose_a_page_then_power_cut(unit_path, fake_time, with_mirror_head=False):
    """Three records in the open segment, the middle one's frames hit by a lost page (zeros
    where an unsynced write never reached the disk, while the later frames did), and the
    index left dirty by a boot that is over: what a power cut leaves."""
    with Store(unit_path, time_source=fake_time) as st:
        ra = put(st, b"a", b"acknowledged before the cut")
        start = st.log.end_position()
        put(st, b"b", os.urandom(20_000))
        rc = put(st, b"c", b"written after b, and on the disk")
    seg = os.path.join(unit_path, "segments", "%010d.open" % start[0])
    with open(seg, "r+b") as f:
        f.seek(start[1] + 4096)
        f.write(bytes(4096))
    with open(os.path.join(unit_path, "index.dirty"), "w") as f:
        f.write("boot-before-the-cut\n")
    fake_time.reboot(60)
    return seg, start, ra, rc


def test_a_power_cut_that_lost_an_earlier_page_is_cut_there(unit_path, fake_time):
    make_unit(unit_path, fake_time)
    seg, start, ra, rc = _lose_a_page_then_power_cut(unit_path, fake_time)
    size = os.path.getsize(seg)
    with Store(unit_path, time_source=fake_time) as st:
        assert st.read(ra.ino, 0, 100) == b"acknowledged before the cut"
        with pytest.raises(NotFound):
            st.lookup(1, b"c")              # after the hole: never acknowledged, cut too
        ev = [e for e in st.events() if e["type"] == "torn_tail"]
        assert len(ev) == 1 and ev[0]["sound_after"] is True
        assert start[1] < ev[0]["offset"] <= start[1] + 4096
        q = os.path.join(unit_path, ev[0]["quarantine"])
        assert os.path.getsize(q) == size - ev[0]["offset"]   # kept, not destroyed
        verify_log(st.log)


def test_the_same_hole_without_a_power_cut_is_damage(unit_path, fake_time):
    # The same boot: the page cache survived the crash of the process, so no write can be
    # missing out of order; a hole with sound frames after it is damage, never cut.
    make_unit(unit_path, fake_time)
    seg, start, ra, rc = _lose_a_page_then_power_cut(unit_path, fake_time)
    with open(os.path.join(unit_path, "index.dirty"), "w") as f:
        f.write(fake_time.boot_id() + "\n")
    import shutil
    shutil.rmtree(os.path.join(unit_path, "index"))
    size = os.path.getsize(seg)
    with pytest.raises(IntegrityError, match="damaged"):
        Store(unit_path, time_source=fake_time)
    assert os.path.getsize(seg) == size


def test_a_hole_before_what_the_mirror_acknowledged_is_damage_after_a_power_cut(tmp_path,
                                                                               fake_time):
    # The mirror acknowledged every event (its head, recorded at close): those frames were
    # durable here, so a hole among them is damage to repair, never a lost write.
    from tests.conftest import clear_immutable, make_pair
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time)
    try:
        seg, start, ra, rc = _lose_a_page_then_power_cut(p, fake_time)
        size = os.path.getsize(seg)
        with pytest.raises(IntegrityError, match="damaged"):
            Store(p, time_source=fake_time)
        assert os.path.getsize(seg) == size
    finally:
        clear_immutable(str(tmp_path))


def test_second_writer_is_refused(store, unit_path):
    from wormfs.errors import StoreError
    with pytest.raises(StoreError, match="in use"):
        Store(unit_path)


def test_cli_mkfs_and_status(tmp_path, capsys):
    s, m = str(tmp_path / "s"), str(tmp_path / "m")
    assert cli(["mkfs", s, "--mirror", m, "--default-retention", "7x",
                "--allow-same-device"]) == 2
    assert "bad retention period '7x'" in capsys.readouterr().err
    assert not os.path.exists(s)
    assert cli(["mkfs", s, "--mirror", m]) == 2          # same device, refused
    assert "same device" in capsys.readouterr().err
    assert cli(["mkfs", s]) == 2
    assert cli(["mkfs", s, "--mirror", m, "--allow-same-device", "--label", "x"]) == 0
    out = capsys.readouterr().out
    serials = [w for w in out.split() if w.startswith("WU-")]
    assert len(serials) == 2 and serials[0] != serials[1]
    assert cli(["mkfs", s, "--mirror", str(tmp_path / "m2"), "--allow-same-device"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli(["status", s]) == 1                      # same device, mirror not synced yet
    out = capsys.readouterr().out
    assert "NOT COMPLIANT" in out and "same device" in out and serials[0] in out
    n = str(tmp_path / "n")
    assert cli(["mkfs", n, "--no-mirror"]) == 0
    capsys.readouterr()
    assert cli(["status", n, "--json"]) == 1
    assert '"compliant": false' in capsys.readouterr().out
    assert cli(["status", str(tmp_path / "nothing")]) == 1
    assert "not a wormfs unit" in capsys.readouterr().err
    assert cli(["frobnicate"]) == 2


def test_concurrent_seals_share_fsyncs(store):
    import threading
    import time
    files = [store.create(1, b"g%d" % i, 0o644, USER) for i in range(24)]
    for f in files:
        store.write(f.ino, 0, os.urandom(20_000))
    syncs_before = store.group.syncs
    barrier = threading.Barrier(8)
    real_sync = store.group._sync

    def slow_disk():  # a disk slower than the CPU, so seals reliably pile up behind a sync
        time.sleep(0.02)
        real_sync()
    store.group._sync = slow_disk

    def worker(k):
        barrier.wait()
        for f in files[k::8]:
            store.seal(f.ino, USER)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(store.inode(f.ino).state == "sealed" for f in files)
    assert sorted(store.inode(f.ino).serial for f in files) == list(range(1, 25))
    assert store.group.syncs - syncs_before < 24   # group commit: fewer fsyncs than seals


def test_segments_immutable_and_format_doc_in_unit(unit_path, fake_time):
    from wormfs.store.hostfs import is_immutable, set_immutable
    make_unit(unit_path, fake_time, segment_size=200_000)
    with Store(unit_path, time_source=fake_time) as st:
        put(st, b"big", random.Random(6).randbytes(600_000))
    seg = sorted(os.listdir(os.path.join(unit_path, "segments")))[0]
    p = os.path.join(unit_path, "segments", seg)
    probe = os.path.join(unit_path, "probe")
    open(probe, "w").close()
    if set_immutable(probe, True):           # the host supports chattr +i here
        set_immutable(probe, False)
        assert is_immutable(p)
        with pytest.raises(PermissionError):
            open(p, "r+b")
    with open(os.path.join(unit_path, "FORMAT.md")) as f:
        assert "wormfs on-disk format" in f.read()


def test_open_segment_with_torn_header_is_restarted(unit_path, fake_time):
    make_unit(unit_path, fake_time, segment_size=200_000)
    data = random.Random(8).randbytes(500_000)
    with Store(unit_path, time_source=fake_time) as st:
        r = put(st, b"r", data)
        st.log.roll()       # a fresh, empty open segment, as right after a roll
        segno = st.log.cur_segno
    seg = os.path.join(unit_path, "segments", "%010d.open" % segno)
    os.truncate(seg, 10)    # the crash hit before its header reached the disk
    with Store(unit_path, time_source=fake_time) as st:
        assert st.read(r.ino, 0, len(data)) == data
        put(st, b"after", b"more")
        verify_log(st.log)


def test_an_index_lmdb_cannot_read_is_rebuilt_from_the_log(unit_path, fake_time):
    # Root overwrites the index's first pages (or a disk lost them): the index is derived,
    # so the next open rebuilds it from the log and answers as before; nothing is lost.
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        r = put(st, b"kept", b"a record")
    before = dump_index(unit_path)
    with open(os.path.join(unit_path, "index", "data.mdb"), "r+b") as f:
        f.write(bytes(8192))
    with Store(unit_path, time_source=fake_time) as st:
        assert st.read(r.ino, 0, 100) == b"a record"
    assert dump_index(unit_path) == before


@pytest.mark.parametrize("raw", [
    b'{"a": 1, "name": "caf\\u00e9 \\udcff"}',      # what we write: ASCII, escapes
    '{"n": "é"}'.encode(),                          # UTF-8 that is not ASCII
    b'\xef\xbb\xbf{"bom": true}',                   # a UTF-8 byte order mark
    '{"u16": 1}'.encode("utf-16-le"),               # UTF-16 without a BOM
    '{"u16": 2}'.encode("utf-16"),                  # UTF-16 with one
    b'{"s": "\xed\xb3\xbf"}',                       # a surrogate encoded as UTF-8
    b'{"bad": "\xff"}', b'', b'[1, 2', b'7', b'null', b' "x" ',
])
def test_stored_json_parses_exactly_as_json_loads_parses_it(raw):
    """events.loads skips json.loads's encoding detection for plain UTF-8 (the index's and
    the log's hot path); every input must still give json.loads's answer, or its error."""
    import json
    from wormfs.store import events as E
    try:
        want = ("ok", json.loads(raw))
    except ValueError as e:
        want = ("error", type(e))
    try:
        got = ("ok", E.loads(raw))
    except ValueError as e:
        got = ("error", type(e))
    assert got == want


def test_an_unchanged_counter_is_not_rewritten_and_a_changed_one_is(unit_path, fake_time):
    """WriteTxn.commit skips a hot value equal to the one committed: what LMDB holds after a
    create (next_serial untouched) and a seal (next_ino untouched) is still what a rebuilt
    index holds, and what a fresh open reads."""
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        put(st, b"a", b"one")
        st.create(1, b"open", 0o644, USER)
        put(st, b"b", b"two")
        keys = ("next_ino", "next_serial", "last_seq")
        want = dict(zip(keys, st.ix.committed_meta(*((k, None) for k in keys))))
    from wormfs.store.index import Index
    ix = Index(os.path.join(unit_path, "index"))
    try:
        with ix.read() as txn:
            assert {k: ix.meta(txn, k) for k in want} == want
    finally:
        ix.close()
    assert want["next_serial"] == 3
    before = dump_index(unit_path)
    assert cli(["rebuild-index", unit_path]) == 0
    assert dump_index(unit_path) == before


def test_the_scratch_matcher_answers_as_fnmatchcase_pattern_by_pattern():
    """Store.is_scratch runs the store's scratch patterns as one regex; for any name it must
    say what fnmatch.fnmatchcase says of the patterns one by one (the SPEC's rule)."""
    import fnmatch
    from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, _scratch_matcher
    pats = tuple(DEFAULT_SCRATCH_PATTERNS) + ("[!a]*.x", "*[", "a\nb*", "")
    match = _scratch_matcher(pats)
    rnd = random.Random(7)
    names = ["".join(rnd.choice(".~$#tmpswx[]!a\nb\udcff") for _ in range(rnd.randint(0, 9)))
             for _ in range(20000)]
    names += [".a.bcdefg", "x.tmp", "~$doc", ".~lock.x#", ".f.swp", "plain", ""]
    for s in names:
        assert (match(s) is not None) == any(fnmatch.fnmatchcase(s, p) for p in pats), s
    assert _scratch_matcher(())("x.tmp") is None


# The inode record: typed, stored as a binary record (JSON where it cannot be), read back the
# same whichever form the index holds.

OLD_FORM = (  # what wormfs wrote before the typed record: every key, nulls included
    '{"atime":5,"blake3":"%s","committed":5,"cookie":9,"creator":null,"ctime":5,"gid":0,'
    '"holds":{},"ino":%d,"kind":"f","mode":292,"mtime":4,"name":"old.eml","parent":1,'
    '"path":"/old.eml","retention":{"event_date":null,"event_period":null,"indefinite":true,'
    '"until":null},"seal_seq":9,"serial":%d,"size":3,"state":"sealed","uid":0,"writer":null}')


def test_an_inode_stored_with_every_key_reads_as_the_same_record(unit_path, fake_time):
    """An index written before the typed record (every key present, nulls and an empty hold
    list included) opens and answers as before; what is written now is the binary record
    and reads back equal."""
    from wormfs.store.index import Index, k64
    from wormfs.store.inode import Inode, Kind, State
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        rec = put(st, b"old.eml", b"abc")
        digest, ino, serial = rec.blake3, rec.ino, rec.serial
    ix = Index(os.path.join(unit_path, "index"))
    try:
        with ix.write() as txn:
            txn.put(k64(ino), (OLD_FORM % (digest, ino, serial)).encode(), db=ix.db["inodes"])
    finally:
        ix.close()
    with Store(unit_path, time_source=fake_time) as st:
        old = st.inode(ino)
        assert old.kind is Kind.FILE and old.state is State.SEALED and old.sealed
        assert old.holds == {} and old.creator is None and old.writer is None
        assert old.retention["indefinite"] is True and old.subdirs == 0
        assert st.read(ino, 0, 10) == b"abc"
        st.place_hold(ino, "case", "why", None)   # written again, in the new form
        with st.ix.read() as txn:
            raw = txn.get(k64(ino), db=st.ix.db["inodes"])
        assert raw[:1] == b"\x01"           # the binary record now
        stored = Inode.from_bytes(raw)
        assert stored.creator is None and stored.writer is None
        assert stored.holds == {"case": "why"} and stored.state is State.SEALED
        assert st.inode(ino) == old.copy(holds={"case": "why"})
    new = Inode.from_json(old.to_json())
    assert new == old and "creator" not in old.to_json() and "subdirs" not in old.to_json()
    assert str(State.SEALED) == f"{State.SEALED}" == "sealed"


def test_a_record_read_from_the_index_is_the_readers_own_copy(unit_path, fake_time):
    """Index.inode keeps the record it last decoded for each inode: changing what it returned,
    or what a transaction that aborted wrote, must change nothing a later read sees."""
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        rec = put(st, b"r", b"abc")
        st.place_hold(rec.ino, "case", "why", None)
        mine = st.inode(rec.ino)
        mine.holds.clear()
        mine.retention["until"] = 0
        mine.size = 99
        again = st.inode(rec.ino)
        assert again.holds == {"case": "why"} and again.size == 3
        assert again.retention == rec.retention
        txn = st.ix.write()
        st.ix.put_inode(txn, again.copy(size=7, holds={}))
        assert st.ix.inode(txn, rec.ino).size == 7
        txn.abort()
        with st.ix.read() as t:
            assert st.ix.inode(t, rec.ino).size == 3
            assert st.ix.inode(t, rec.ino).holds == {"case": "why"}


def test_inode_record_fields_all_survive_copy_and_storage():
    """Inode.copy, to_json and from_json name each field by hand (for speed): every slot
    set to a value of its own must come through all three, and nothing shared stays
    shared."""
    from wormfs.store.inode import Inode, Kind, State
    values = {name: 1000 + i for i, name in enumerate(Inode.__slots__)}
    values.update(kind=Kind.FILE, state=State.DELETED, name="n", path="/n", blake3="b" * 64,
                  creator={"uid": 1}, writer={"uid": 2}, holds={"h": "r"},
                  retention={"until": 5, "indefinite": False, "event_period": None,
                             "event_date": None},
                  recovered_from="/r", orphan=True)
    rec = Inode(**values)
    copied = rec.copy()
    assert all(getattr(copied, n) == values[n] for n in Inode.__slots__)
    assert copied.holds is not rec.holds and copied.retention is not rec.retention
    stored = rec.to_json()
    assert set(stored) == set(Inode.__slots__) - {"orphan"}
    back = Inode.from_json(stored)
    assert all(getattr(back, n) == values[n] for n in Inode.__slots__ if n != "orphan")
    assert back.orphan is False and back.state is State.DELETED


def test_creates_on_one_thread_while_seals_end_on_others(store):
    """The mount creates small files on its event loop (Store.at_once) while worker threads
    finish seals: a seal's end took its file out of the table of open files without the
    store's lock, and a create counting that table's streams at that moment failed with
    "dictionary changed size during iteration" (EIO through the mount)."""
    import sys
    import threading
    errors, stop = [], threading.Event()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can

    def sealer(k):
        try:
            for i in range(60):
                f = store.create(1, b"s%d-%d" % (k, i), 0o644, USER)
                store.write(f.ino, 0, b"x" * 100)
                store.seal(f.ino, USER)
        except Exception as e:  # noqa: BLE001 - the test reports whatever broke
            errors.append(e)
        finally:
            stop.set()

    def creator():
        i = 0
        try:
            while not stop.is_set() and i < 400:  # each holds a staging descriptor
                done, _ = store.at_once(store.create, 1, b"c%d" % i, 0o644, USER)
                i += done
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    try:
        ts = [threading.Thread(target=sealer, args=(k,)) for k in range(3)]
        ts.append(threading.Thread(target=creator))
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


class _Bucket:
    """A server clock that bounds the compliance clock from above (an S3 bucket's)."""
    name = "the bucket"

    def __init__(self):
        self.upper = None

    def refresh(self):
        pass

    def upper_us(self, source):
        return self.upper


def test_event_times_never_go_back_when_the_clock_is_held_at_a_buckets_time(store,
                                                                            fake_time):
    """Held at an S3 bucket's time, the compliance clock reads less than it showed a moment
    before; the trail is stamped no earlier than its last event all the same, so that time
    order is seq order (audit --since, commit times by serial)."""
    from wormfs.admin import auditlog
    from wormfs.clock import CHECK_INTERVAL_US
    bucket = _Bucket()
    store.clock.server = bucket
    for i in range(3):
        put(store, b"before%d" % i, b"x")
        fake_time.advance(CHECK_INTERVAL_US / 1e6 * 2)
    shown = store.now()
    last = list(store.events())[-1]["time_us"]
    bucket.upper = shown - 30_000_000          # the bucket's clock is 30 s behind ours
    fake_time.advance(CHECK_INTERVAL_US / 1e6 * 2)
    assert store.clock.now(strict=True) < shown   # the clock itself steps back
    later = [put(store, b"after%d" % i, b"y") for i in range(3)]
    times = [ev["time_us"] for ev in store.events()]
    assert times == sorted(times)
    assert all(r.committed >= last for r in later)
    first = auditlog.first_seq_at(store.log, store.ix, last)
    assert all(ev["time_us"] >= last for ev in store.events(first))
