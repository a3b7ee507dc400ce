"""Reading records (store/reader.py): every range gives the record's bytes, whichever way
they are read; a read that must not wait (the mount's event loop) never waits for the disk,
never repairs and never returns bytes that fail their checks."""
import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wormfs.actor import Actor
from wormfs.errors import IntegrityError
from wormfs.store import reader
from wormfs.store.hostfs import set_immutable
from wormfs.store.store import Store

from ..conftest import make_unit

USER = Actor(1000, 1000, 7, "pytest")
R = random.Random(17)
A, B, C = R.randbytes(300_000), R.randbytes(200_000), R.randbytes(90_000)
# A record whose manifest has a chunk twice (A's chunks again after B: frames that do not
# follow each other) and a record whose frames interleave with another's.
LAYOUT = {b"repeats": A + B + A + C, b"plain": B + C + R.randbytes(400_000)}


def put(store, name, data):
    f = store.create(1, name, 0o644, USER)
    store.write(f.ino, 0, data)
    return store.seal(f.ino, USER)


@pytest.fixture
def records(store):
    return store, {put(store, name, data).ino: data for name, data in LAYOUT.items()}


def _evict(store):
    """Drop the segments' pages from the page cache (they are clean: sealing fsyncs them),
    and the reader's chunk cache."""
    store.reader.forget()
    for segno in store.log.segment_numbers()[0]:
        fd = os.open(store.log.path(segno), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(sorted(LAYOUT)), offset=st.integers(0, 1_000_000),
       size=st.integers(0, 1_200_000), forget=st.booleans())
def test_every_range_reads_as_the_record(records, which, offset, size, forget):
    store, data = records
    ino = next(i for i, d in data.items() if d == LAYOUT[which])
    want = data[ino][offset:offset + size]
    if forget:
        store.reader.forget()
    assert store.read(ino, offset, size) == want
    # The page cache holds the whole store (written a moment ago): nothing to wait for.
    assert store.read_at_once(ino, offset, size) == want


def test_a_read_that_must_not_wait_leaves_uncached_bytes_to_one_that_may(records):
    store, data = records
    ino, blob = next(iter(data.items()))
    _evict(store)
    assert store.read_at_once(ino, 0, 1 << 20) is None
    assert store.read(ino, 0, 1 << 20) == blob[:1 << 20]
    assert store.read_at_once(ino, 0, 1 << 20) == blob[:1 << 20]   # cached by that read


def test_a_read_that_must_not_wait_never_returns_damaged_bytes_nor_repairs(records):
    store, data = records
    ino, blob = next(iter(data.items()))
    assert store.read(ino, 0, len(blob)) == blob
    with store.ix.read() as txn:
        pieces = list(store.ix.manifest_from(txn, store.inode(ino).serial, 0))
        start, length, cid = pieces[1]
        segno, off, _ = store.ix.chunk(txn, cid)
    seg = store.log.path(segno)
    set_immutable(seg, False)
    os.chmod(seg, 0o644)
    with open(seg, "r+b") as f:         # behind the store's back, into the page cache
        f.seek(off + 56 + length // 2)
        b = f.read(1)
        f.seek(off + 56 + length // 2)
        f.write(bytes([b[0] ^ 0x01]))
    store.reader.forget()
    before = store.stats()
    assert store.read_at_once(ino, 0, len(blob)) is None
    assert store.read_at_once(ino, start, length) is None
    with pytest.raises(IntegrityError, match="checksum"):   # no duplicate to repair from
        store.read(ino, 0, len(blob))
    assert store.stats() == before


def test_read_ahead_left_queued_by_a_closed_store_never_reads_another_files_pages(
        records, tmp_path, fake_time, monkeypatch):
    """The advisor thread may get to a store's read-ahead after the store closed and the
    descriptor's number went to another file: it must still advise the file it was asked
    for. (CI saw the pages of a new store read back in behind a test's eviction.)"""
    old, data = records
    ino, blob = next(iter(data.items()))
    real, gate, advised = os.posix_fadvise, threading.Event(), []

    def held(fd, off, length, advice):
        gate.wait(10)
        advised.append(length)
        real(fd, off, length, advice)
    monkeypatch.setattr(os, "posix_fadvise", held)
    old.reader.forget()
    assert old.read(ino, 0, 64 << 10) == blob[:64 << 10]   # queues read-ahead past 64 KiB
    number = old.log.fd(old.log.segment_numbers()[0][0])
    old.close()                          # the fixture's close later does nothing more
    path = str(tmp_path / "second")
    make_unit(path, fake_time)
    new = Store(path, time_source=fake_time)
    held_open = []
    try:
        ino2 = put(new, b"other", blob).ino
        # The number the advice was queued with now names the new store's segment (the
        # kernel gives out the lowest free number: take them until it comes).
        seg = new.log.path(new.log.segment_numbers()[0][0])
        while not os.path.exists(f"/proc/self/fd/{number}"):
            held_open.append(os.open(seg, os.O_RDONLY))
        assert os.path.samefile(f"/proc/self/fd/{number}", seg), "the number went elsewhere"
        monkeypatch.setattr(os, "posix_fadvise", real)
        _evict(new)
        monkeypatch.setattr(os, "posix_fadvise", held)
        reader._advisor().put((os.dup(0), 0, 12345))   # the last: when it is done, all are
        gate.set()
        for _ in range(1000):
            if 12345 in advised:
                break
            threading.Event().wait(0.01)
        assert len(advised) >= 2 and advised[-1] == 12345
        assert new.read_at_once(ino2, 256 << 10, 256 << 10) is None   # inside what was advised
    finally:
        for fd in held_open:
            os.close(fd)
        new.close()
