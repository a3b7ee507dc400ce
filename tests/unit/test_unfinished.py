"""Files that never finished, below FUSE: recovery after a restart, the scratch TTL on the
injectable clock, files unlinked while still open, and readdir in batches."""
import os

import pytest

from wormfs.actor import Actor
from wormfs.errors import NotFound
from wormfs.store.store import Store

from ..conftest import dump_index

A = Actor(1000, 1000, 42, "mailer")


def test_recover_interrupted_after_restart(store, unit_path, fake_time):
    d = store.mkdir(1, b"inbox", 0o755, A).ino
    f = store.create(d, b"msg.eml", 0o644, A).ino
    store.write(f, 0, b"partial message")
    s = store.create(d, b"upload.tmp", 0o644, A).ino   # scratch: left alone
    store.write(s, 0, b"scratch")
    store.close()                                         # as if the daemon died

    st = Store(unit_path, time_source=fake_time)
    try:
        [rec] = st.recover_interrupted("test")
        assert rec.path == f"/.wormfs/recovered/{f}-msg.eml"
        assert rec.recovered_from == "/inbox/msg.eml" and rec.sealed
        assert st.read(rec.ino, 0, 100) == b"partial message"
        with pytest.raises(NotFound):
            st.lookup(d, b"msg.eml")                       # the name is free again
        assert st.lookup(d, b"upload.tmp").state == "scratch"
        assert [i for i, _ in st.unsealed()] == [s]
        ev = [e for e in st.events() if e["type"] == "recovery"]
        assert ev[0]["path"] == "/inbox/msg.eml" and ev[0]["reason"] == "test"
        assert st.recover_interrupted("again") == []
    finally:
        st.close()


def test_scratch_ttl_uses_the_compliance_clock(store, fake_time):
    s = store.create(1, b"a.tmp", 0o644, A).ino
    store.write(s, 0, b"x")
    # rsync sets an old mtime on its temp file: that must not make it look stale.
    store.setattr(s, A, mtime=0)
    assert store.stale_scratch(3600 * 10**6) == []
    fake_time.advance(1800)
    store.read(s, 0, 1)  # a reader does not hold the TTL off
    fake_time.advance(1801)
    assert store.stale_scratch(3600 * 10**6) == [s]
    rec = store.seal(s, None, cause="scratch_ttl")
    assert rec.sealed and rec.mtime == 0
    seal = [e for e in store.events() if e["type"] == "seal"][0]
    assert seal["cause"] == "scratch_ttl"


def test_unlinked_while_open_stays_readable_until_discarded(store):
    f = store.create(1, b"gone", 0o644, A).ino
    store.write(f, 0, b"data")
    store.keep_open = lambda ino: ino == f
    store.unlink(1, b"gone", A)
    with pytest.raises(NotFound):
        store.lookup(1, b"gone")
    assert store.inode(f).orphan is True
    assert store.read(f, 0, 10) == b"data"
    store.write(f, 4, b"more")
    assert store.inode(f).size == 8
    assert not os.path.exists(os.path.join(store.staging, str(f)))
    with pytest.raises(NotFound):
        store.seal(f, A)
    store.discard(f)
    with pytest.raises(NotFound):
        store.inode(f)


def test_readdir_in_batches_resumes_at_cookies(store):
    for i in range(25):
        store.mkdir(1, b"d%02d" % i, 0o755, A)
    seen, after = [], 0
    while True:
        batch = store.readdir(1, after, limit=7)
        seen += [n for _, n, _ in batch]
        if len(batch) < 7:
            break
        after = batch[-1][0]
    assert seen == [b".wormfs"] + [b"d%02d" % i for i in range(25)]


def test_unsealed_table_survives_rebuild(store, unit_path, fake_time):
    from wormfs.store.maintenance import rebuild_index
    import shutil
    store.create(1, b"open", 0o644, A)
    store.create(1, b"x.tmp", 0o644, A)
    f = store.create(1, b"done", 0o644, A).ino
    store.seal(f, A)
    store.close()
    before = dump_index(unit_path)
    shutil.rmtree(os.path.join(unit_path, "index"))
    os.makedirs(os.path.join(unit_path, "index"))
    rebuild_index(unit_path)
    assert dump_index(unit_path) == before
    st = Store(unit_path, time_source=fake_time, readonly=True)
    try:
        assert sorted(s for _, s in st.unsealed()) == ["open", "scratch"]
    finally:
        st.close()
