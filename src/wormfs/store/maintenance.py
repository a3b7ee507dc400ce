"""Whole-log work on a unit: replaying frames into the index, rebuilding the index from the
segments alone, and checking the log end to end. No clock and no new events here: these only
read the log (rebuild also writes the index)."""
import os

import blake3

from ..errors import IntegrityError
from . import events as E
from . import frames as F
from .index import Index
from .replay import Replayer
from .segments import SegmentLog
from .unit import read_unit


def apply_frame(replayer, txn, fr):
    """Apply one scanned frame to the index (live catch-up and rebuild alike)."""
    if fr.ftype == F.T_CHUNK:
        replayer.apply_chunk(txn, fr.key, fr.segno, fr.offset, fr.payload_len)
    else:
        replayer.apply_event(txn, E.decode(fr.payload), E.event_hash(fr.payload), fr.segno,
                             fr.offset)
    replayer.ix.put_meta(txn, "applied", [fr.segno, fr.end])


def rebuild_index(path):
    """Recreate a unit's index from its segments alone, into an empty ``index/``. A pure
    replay: it reads no clock and appends nothing, so the result equals the live index.
    Returns (events, stats)."""
    unit = read_unit(path)
    uuid_bytes = bytes.fromhex(unit["uuid"].replace("-", ""))
    log = SegmentLog(os.path.join(path, "segments"), uuid_bytes, unit["segment_size"],
                     readonly=True)
    ix = Index(os.path.join(path, "index"))
    rp = Replayer(ix)
    try:
        txn = ix.write()
        try:
            for n, fr in enumerate(log.scan(), 1):
                apply_frame(rp, txn, fr)
                if n % 4096 == 0:
                    txn.commit()
                    txn = ix.write()
            txn.commit()
        except F.FrameError as e:
            txn.abort()
            raise IntegrityError(
                f"segment {e.segno} is damaged at offset {e.offset}: {e}. If it is the end of "
                f"the last segment (a crash), opening the store cuts it; otherwise repair it "
                f"from the mirror ('wormfs scrub --repair')") from None
        except BaseException:
            txn.abort()
            raise
        with ix.read() as t:
            seq, stats = ix.meta(t, "last_seq", 0), ix.meta(t, "stats")
        ix.sync()
        try:
            os.unlink(os.path.join(path, "index.dirty"))  # synced and whole: trust it
        except FileNotFoundError:
            pass
        return seq, stats
    finally:
        ix.close()
        log.close()


def verify_log(log, deep=True):
    """Check a unit's whole log: every frame's checksums, every chunk's BLAKE3 id (if
    ``deep``), and the event chain from seq 1. Returns (events, chunks); raises IntegrityError
    naming the first bad place."""
    seq, prev, n_chunks = 0, E.GENESIS, 0
    for fr in log.scan(chunk_payloads=deep):
        if fr.ftype == F.T_CHUNK:
            n_chunks += 1
            if deep:
                if blake3.blake3(fr.payload).digest() != fr.key:
                    raise IntegrityError(f"chunk at segment {fr.segno} offset {fr.offset} does "
                                         f"not match its id")
            continue
        ev = E.decode(fr.payload)
        if ev.get("seq") != seq + 1 or ev.get("prev") != prev:
            raise IntegrityError(f"event chain broken at segment {fr.segno} offset {fr.offset} "
                                 f"(seq {ev.get('seq')}, expected {seq + 1})")
        seq, prev = ev["seq"], E.event_hash(fr.payload)
    return seq, n_chunks
