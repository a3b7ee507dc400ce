"""Whole-log work on a unit: replaying frames into the index, rebuilding the index from the
segments alone, and checking the log end to end. No clock and no new events here: these only
read the log (rebuild also writes the index)."""
import logging
import os
from typing import NamedTuple

import blake3
import lmdb

from ..errors import IntegrityError, StoreError, StoreFull
from . import events as E
from . import frames as F
from .hostfs import atomic_write, unlink_quiet
from .index import LAYOUT, Index
from .localchain import skipped_seqs
from .replay import Replayer
from .segments import SegmentLog
from .unit import log_uuid_bytes, read_unit

log = logging.getLogger("wormfs.store")


class TornTail(NamedTuple):
    """What catch_up cut from the end of the open segment."""
    segno: int
    offset: int
    qpath: str         # where the cut bytes are kept (quarantine/)
    nbytes: int
    sound_after: bool  # sound frames followed the first damaged one (writes lost out of order)

LOW_SPACE = 1 << 20  # less free than this when the index cannot be written: the disk is full
FRAMES_PER_TXN = 4096  # a long replay commits as it goes (bounded LMDB transactions)


def apply_frame(replayer, txn, fr):
    """Apply one scanned frame to the index (live catch-up and rebuild alike)."""
    if fr.ftype == F.T_CHUNK:
        replayer.apply_chunk(txn, fr.key, fr.segno, fr.offset, fr.payload_len)
    elif fr.ftype == F.T_EVENT:  # a disposed chunk frame holds nothing to index
        replayer.apply_event(txn, E.decode(fr.payload), E.event_hash(fr.payload), fr.segno,
                             fr.offset)
    replayer.ix.put_meta(txn, "applied", [fr.segno, fr.end])


def apply_frames(replayer, frames):
    """Apply scanned frames to the index in transactions of FRAMES_PER_TXN. A FrameError
    from ``frames`` (damage where the scan got to) commits what was applied before it and
    propagates; any other error aborts the transaction it happened in."""
    ix = replayer.ix
    txn = ix.write()
    try:
        for n, fr in enumerate(frames, 1):
            apply_frame(replayer, txn, fr)
            if n % FRAMES_PER_TXN == 0:
                txn.commit()
                txn = ix.write()
    except F.FrameError:
        txn.commit()
        raise
    except BaseException:
        txn.abort()
        raise
    txn.commit()


def event_at(log, ix, seq):
    """Event ``seq`` as the log holds it (None if the index does not know it)."""
    with ix.read() as txn:
        pos = ix.event_pos(txn, seq)
    return None if pos is None else E.decode(_frame_at(log, pos, seq).payload)


def event_hash_at(log, ix, seq):
    """The hash of event ``seq`` as the log holds it (None if the index does not know it)."""
    with ix.read() as txn:
        pos = ix.event_pos(txn, seq)
    if pos is None:
        return None
    return E.event_hash(_frame_at(log, pos, seq).payload)


def _frame_at(log, pos, seq):
    """The frame of event ``seq`` at ``pos``; a log that ends before it is damage said in
    words (a bare StopIteration told an operator nothing)."""
    fr = next(log.scan(tuple(pos)), None)
    if fr is None or fr.ftype != F.T_EVENT:
        raise IntegrityError(f"the index puts event {seq} at segment {pos[0]} offset {pos[1]}, "
                             f"but the log holds no event there; run 'wormfs verify'")
    return fr


def unit_head(unit_path):
    """(last_seq, last_hash) of a unit's index, read without opening the unit (no lock, no
    catch-up): (0, GENESIS) if it has no index yet. lmdb errors if it cannot be read."""
    path = os.path.join(unit_path, "index")
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0, E.GENESIS
    ix = Index(path, readonly=True)
    try:
        with ix.read() as txn:
            return ix.meta(txn, "last_seq", 0), ix.meta(txn, "last_hash", E.GENESIS)
    finally:
        ix.close()


def unit_last_seq(unit_path):
    """The last event a unit's index holds, read without opening the unit (no lock, no
    catch-up): 0 if it has no index yet. lmdb errors if the index cannot be read."""
    path = os.path.join(unit_path, "index")
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0
    ix = Index(path, readonly=True)
    try:
        with ix.read() as txn:
            return ix.meta(txn, "last_seq", 0)
    finally:
        ix.close()


def open_index(path, boot_id, readonly=False):
    """Open a unit's index for reading, or for writing with the crash rule: an index left
    dirty by another boot may hold unsynced pages and is cleared (the log rebuilds it).

    Returns (index, lost_cache): ``lost_cache`` is True when the last writer did not close
    the unit and its page cache did not survive either (a power cut or a crash of the host:
    another boot; or an index LMDB cannot read). Only then can writes that were never
    fsynced be missing out of order, and ``catch_up`` may cut more than a torn last frame."""
    index_path = os.path.join(path, "index")
    dirty = os.path.join(path, "index.dirty")
    if readonly:
        if not os.path.exists(os.path.join(index_path, "data.mdb")):
            raise StoreError(f"{path} has no index; run 'wormfs rebuild-index {path}'")
        return Index(index_path, readonly=True), False
    lost = False
    if os.path.exists(dirty):
        with open(dirty) as f:
            if f.read().strip() != boot_id:
                _clear_dir(index_path)
                lost = True
    try:
        ix = Index(index_path)
    except lmdb.Error as e:
        # Derived data that LMDB cannot read (a disk that lost its cache without a reboot,
        # or a file changed behind wormfs): the log has everything it held.
        log.warning("the index in %s cannot be read (%s); rebuilding it from the log",
                    path, e)
        _clear_dir(index_path)
        ix = Index(index_path)
        lost = True
    # Durable before the index is written: the crash rule above is only as good as this
    # marker. Unsynced, a power cut could lose its creation while index pages written after
    # it reached the disk (a disk writes back in any order), and the next open would trust
    # an index ahead of the log.
    older = _older_layout(ix)
    if older:
        # Made by an older wormfs: it lacks tables this one keeps. It is derived data, so
        # it is rebuilt from the log, once (the replay below, as after a power cut), and
        # the one definition of every table stays the replay's.
        log.warning("the index in %s was made by an older wormfs (layout %s, this one "
                    "keeps %s): rebuilding it from the log, once", path, older, LAYOUT)
        ix.close()
        _clear_dir(index_path)
        ix = Index(index_path)
    atomic_write(dirty, (boot_id + "\n").encode())
    return ix, lost


def _older_layout(ix):
    """The layout of an index an older wormfs made (None if it is this one's, or empty)."""
    with ix.read() as txn:
        if ix.meta(txn, "unit") is None:
            return None   # nothing applied yet: unit_init's replay sets the layout
        layout = ix.layout(txn)
    return layout if layout < LAYOUT else None


def close_index(path, ix):
    """Sync a writable index and mark it clean."""
    ix.sync()
    unlink_quiet(os.path.join(path, "index.dirty"))


def catch_up(log, ix, replayer, quarantine_dir=None, lost_cache=False, durable_seq=0):
    """Apply every frame the index has not seen yet (after a crash: the frames appended
    after the last index commit). With ``quarantine_dir``, a torn end of the open segment is
    cut and kept there; returns a TornTail then, else None.
    Damage anywhere else raises IntegrityError.

    What counts as a torn end: a damaged frame with no sound frame after it (a crash during
    an append). After ``lost_cache`` (open_index) also one with sound frames after it: a
    disk writes back unsynced pages in any order, so a later frame can be on disk while an
    earlier one is not. Both lie past the last fsync, so nobody was told they were written;
    but only if the damage comes after event ``durable_seq``, the newest head the unit's own
    chain recorded as durable on two units (heads.py): damage before that is damage to
    repair, never a write that was lost."""
    with ix.read() as txn:
        applied = ix.meta(txn, "applied")
    try:
        apply_frames(replayer, log.scan(tuple(applied) if applied else None))
    except F.FrameError as e:
        damage = IntegrityError(f"segment {e.segno} is damaged at offset {e.offset}: {e}; "
                                f"run 'wormfs verify' and 'wormfs scrub --repair'")
        if not (quarantine_dir and e.segno == log.cur_segno):
            raise damage from None
        sound_after = log.has_valid_frame_after(e.segno, e.offset)
        if sound_after:
            with ix.read() as txn:
                reached = ix.meta(txn, "last_seq", 0)
            if not lost_cache or reached < durable_seq:
                raise damage from None
        qpath, nbytes = log.cut_tail(e.segno, e.offset, quarantine_dir)
        return TornTail(e.segno, e.offset, qpath, nbytes, sound_after)
    return None


def torn_tail_text(t):
    """The daemon log's line for a cut tail (a TornTail)."""
    how = ("a power cut lost unsynced writes out of order (sound frames followed the gap)"
           if t.sound_after else "a crash interrupted the last append")
    return (f"segment {t.segno} was cut at offset {t.offset} after {how}: {t.nbytes} bytes "
            f"that no writer was told were stored are kept in {t.qpath}")


def index_error(e, path):
    """An LMDB failure as the errno a user expects: a full disk is ENOSPC, not EIO. LMDB
    reports a short write (the usual way a full disk shows) as EIO, so the free space of
    the store's file system decides too."""
    text = str(e)
    full = isinstance(e, lmdb.MapFullError) or "No space left" in text or "Disk quota" in text
    if not full:
        try:
            st = os.statvfs(path)
            full = st.f_bavail * st.f_frsize < LOW_SPACE
        except OSError:
            pass
    if full:
        return StoreFull(f"the disk holding the store is full ({text}); nothing was changed")
    return StoreError(f"the index could not be written ({text}); nothing was changed")


def _clear_dir(path):
    if os.path.isdir(path):
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))


def rebuild_index(path):
    """Recreate a unit's index from its segments alone, into an empty ``index/``. A pure
    replay: it reads no clock and appends nothing, so the result equals the live index.
    Returns (events, stats)."""
    unit = read_unit(path)
    uuid_bytes = log_uuid_bytes(unit)
    log = SegmentLog(os.path.join(path, "segments"), uuid_bytes, unit["segment_size"],
                     readonly=True)
    ix = Index(os.path.join(path, "index"))
    try:
        try:
            apply_frames(Replayer(ix, skip=skipped_seqs(path, unit)), log.scan())
        except F.FrameError as e:
            raise IntegrityError(
                f"segment {e.segno} is damaged at offset {e.offset}: {e}. If it is the end of "
                f"the last segment (a crash), opening the store cuts it; otherwise repair it "
                f"from the mirror ('wormfs scrub --repair')") from None
        with ix.read() as t:
            seq, stats = ix.meta(t, "last_seq", 0), ix.meta(t, "stats")
        close_index(path, ix)  # synced and whole: trust it
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
        if fr.ftype == F.T_DISPOSED:
            continue
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
