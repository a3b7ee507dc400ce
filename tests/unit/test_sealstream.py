"""Chunking while a file is written (sealstream.py): whatever order the writes come in, the
record is exactly the staged bytes, and in-order writes leave only the tail for the seal."""
import os
import random
import threading

import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wormfs.actor import Actor
from wormfs.cli import main as cli
from wormfs.store.maintenance import verify_log
from wormfs.store.sealstream import MAX_PENDING, SealStream

from ..conftest import dump_index, staged_files

USER = Actor(1000, 1000, 7, "pytest")
MIB = 1 << 20


def write_all(store, ino, pieces):
    for off, data in pieces:
        store.write(ino, off, data)


def check_record(store, rec, expected):
    assert rec.sealed and rec.size == len(expected)
    assert rec.blake3 == blake3.blake3(expected).hexdigest()
    assert store.read(rec.ino, 0, len(expected) + 1) == expected


def test_in_order_writes_are_stored_before_close(store):
    data = random.Random(1).randbytes(6 * MIB)
    f = store.create(1, b"big", 0o644, USER)
    write_all(store, f.ino, [(o, data[o:o + MIB]) for o in range(0, len(data), MIB)])
    # Most chunks are in the log already; the seal only cuts the tail.
    assert store.stats()["stored_bytes"] > 5 * MIB
    before = store.stats()["stored_bytes"]
    rec = store.seal(f.ino, USER)
    check_record(store, rec, data)
    assert store.stats()["stored_bytes"] - before < 600 << 10
    assert verify_log(store.log)[1] >= 6


def test_writes_a_little_out_of_order_still_stream(store):
    data = random.Random(2).randbytes(4 * MIB)
    pieces = [(o, data[o:o + MIB]) for o in range(0, len(data), MIB)]
    pieces[0], pieces[1] = pieces[1], pieces[0]
    f = store.create(1, b"swapped", 0o644, USER)
    write_all(store, f.ino, pieces)
    assert store.stats()["stored_bytes"] > 3 * MIB
    check_record(store, store.seal(f.ino, USER), data)


def test_rewrite_and_truncate_fall_back_to_the_staged_bytes(store):
    rnd = random.Random(3)
    data = bytearray(rnd.randbytes(3 * MIB))
    f = store.create(1, b"edited", 0o644, USER)
    write_all(store, f.ino, [(o, bytes(data[o:o + MIB])) for o in range(0, len(data), MIB)])
    store.write(f.ino, 100, b"REWRITTEN")
    data[100:109] = b"REWRITTEN"
    check_record(store, store.seal(f.ino, USER), bytes(data))

    g = store.create(1, b"cut", 0o644, USER)
    store.write(g.ino, 0, bytes(data))
    store.truncate(g.ino, MIB + 5)
    check_record(store, store.seal(g.ino, USER), bytes(data[:MIB + 5]))


def test_a_reused_caller_buffer_does_not_change_what_waits(store):
    f = store.create(1, b"reuse", 0o644, USER)
    buf = bytearray(b"B" * 1000)
    store.write(f.ino, 1000, buf)      # ahead of the stream: waits
    buf[:] = b"X" * 1000                  # the caller reuses its buffer
    store.write(f.ino, 0, b"A" * 1000)
    check_record(store, store.seal(f.ino, USER), b"A" * 1000 + b"B" * 1000)


def test_concurrent_writers_to_one_file(store):
    data = random.Random(4).randbytes(8 * MIB)
    f = store.create(1, b"threads", 0o644, USER)
    pieces = [(o, data[o:o + 256 << 10]) for o in range(0, len(data), 256 << 10)]

    def work(k):
        write_all(store, f.ino, pieces[k::4])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check_record(store, store.seal(f.ino, USER), data)


def test_too_much_waiting_stops_the_stream():
    from wormfs import _chunker
    s = SealStream(_chunker.Params())
    stored = []
    s.add(0, b"a" * 10, stored.extend)
    s.add(MAX_PENDING * 2, b"b", stored.extend)   # far ahead: fine, it waits
    assert not s.broken
    s.add(MAX_PENDING * 3, b"c" * MAX_PENDING, stored.extend)   # too many bytes waiting
    assert s.broken and not s.usable(10)


def test_index_rebuilt_from_a_streamed_log_is_identical(store):
    data = random.Random(5).randbytes(3 * MIB)
    f = store.create(1, b"s", 0o644, USER)
    write_all(store, f.ino, [(o, data[o:o + MIB]) for o in range(0, len(data), MIB)])
    g = store.create(1, b"abandoned", 0o644, USER)
    store.write(g.ino, 0, random.Random(6).randbytes(2 * MIB))  # streamed, never sealed
    store.unlink(1, b"abandoned", USER)
    store.seal(f.ino, USER)
    path = store.path
    store.close()
    before = dump_index(path)
    assert cli(["rebuild-index", path]) == 0
    assert dump_index(path) == before


# Failures that did not replay from hypothesis's database were health checks, not findings:
# too_slow under load, and data_too_large (each example writes up to 3.6 MB through a store,
# which is the point of it).
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.integers(0, 600_000), st.integers(1, 300_000), st.booleans()),
                min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_any_write_order_gives_the_staged_bytes(tmp_path_factory, ops, rnd):
    from ..conftest import make_unit
    from wormfs.store.store import Store
    path = make_unit(tmp_path_factory.mktemp("s"))
    model = bytearray()
    with Store(path) as store:
        f = store.create(1, b"f", 0o644, USER)
        for off, length, truncate in ops:
            if truncate:
                size = off % (len(model) + 1)
                store.truncate(f.ino, size)
                model = model[:size]
                continue
            data = rnd.randbytes(length)
            store.write(f.ino, off, data)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + length] = data
        check_record(store, store.seal(f.ino, USER), bytes(model))
        assert not staged_files(store)
