"""The mirror side of replication: a unit that receives its primary's log and keeps what its
own rules allow (SPEC "Duplicate (mirror)").

A mirror holds the primary's segments byte for byte: the same segment numbers, the same frame
offsets, the same log uuid in every segment header. So a chunk lives at the same place on both
units, a damaged frame on either side is repaired by copying the peer's bytes at that place,
and a promoted mirror simply continues the log.

Every batch is checked before a byte of it is kept:
- each frame's header and payload checksums (xxh3), and each chunk's BLAKE3 against its id;
- each event must continue the chain (seq and prev: ``Replayer.apply_event``);
- each event must be allowed by the mirror's own index and compliance clock (rules.py).
The accepted frames are appended and indexed in one LMDB transaction. An event the rules
refuse but that continues the chain (right seq and prev) is kept in the log, so the log stays
the primary's byte for byte and the events after it are still checked and applied, but it
changes nothing here: it is recorded first in the mirror's own chain (local/, a ``refused``
event with ``kept``), which every replay of this unit's log reads to skip it
(``Replayer(skip=...)``). The primary's status shows the store DEGRADED for it from then on.
A delete only a few seconds early by this clock is waited for (CLOCK_SKEW_WAIT_US); one
refused for good leaves the record whole here. An event that does not continue the chain
(not JSON, a wrong seq or prev) ends the batch: it is not stored, nothing after it can be
checked, and the primary is told (``MirrorRefused``) and tries again later.

This class is the "unit I replicate to" of the primary (see target.py for the interface);
it runs in the primary's process for a mirror on a local directory, and holds the mirror's
unit lock while it does.
"""
import logging
import os
import threading
import time

import blake3
import lmdb

from .. import retention
from ..clock import (CHECKPOINT_INTERVAL_US, CLOCK_SKEW_WAIT_US, ComplianceClock,
                     SystemTimeSource)
from ..errors import IntegrityError, StoreError, WormError
from ..store import events as E
from ..store import frames as F
from ..store.hostfs import tighten, try_lock
from ..store import disposal
from ..store.maintenance import (catch_up, close_index, event_at, index_error, open_index,
                                  torn_tail_text)
from ..store.replay import Replayer
from ..store.segments import SegmentLog
from ..store.unit import log_uuid_bytes, read_unit
from . import rules
from ..store.heads import HeadKeeper
from ..store.localchain import LocalChain

log = logging.getLogger("wormfs.mirror")


# How far behind the time it told a primary for a deletion this unit's persisted clock may be.
DELETION_PERSIST_US = 1_000_000


class MirrorRefused(WormError):
    """The mirror refused an event (and everything after it, which chains through it)."""

    def __init__(self, seq, etype, reason):
        super().__init__(f"the mirror refused event {seq} ({etype}): {reason}")
        self.seq, self.etype, self.reason = seq, etype, reason


class PositionMismatch(WormError):
    """The primary shipped from another place than where the mirror's log ends."""

    def __init__(self, end):
        super().__init__(f"the mirror's log ends at segment {end[0]} offset {end[1]}")
        self.end = end


def parse_frames(data, check_ids=True):
    """Split whole frames out of ``data``: yield (offset, type, key, payload, length), each
    checked (header and payload xxh3; chunk ids by BLAKE3 if ``check_ids``). Damage raises
    IntegrityError: the bytes are not what the sender wrote."""
    mv = memoryview(data)
    off, size = 0, len(mv)
    while off < size:
        try:
            ftype, key, payload, length = F.read_frame(mv, off, size)
        except F.FrameError as e:
            raise IntegrityError(f"frame at offset {off} of the batch: {e}") from None
        if ftype == F.T_CHUNK and check_ids and blake3.blake3(payload).digest() != key:
            raise IntegrityError(f"chunk at offset {off} of the batch does not match its id")
        yield off, ftype, key, payload, length
        off += length


class Replica:
    def __init__(self, path, *, serial, log_uuid, time_source=None, server=None):
        """Open the mirror unit at ``path`` for receiving; ``serial`` and ``log_uuid`` are
        what the primary expects to find there."""
        self.path = os.path.abspath(path)
        self.unit = unit = read_unit(self.path)
        if unit.get("role") != "mirror":
            raise StoreError(f"{self.path} is a {unit.get('role')} unit, not a mirror")
        if unit["serial"] != serial:
            raise StoreError(f"{self.path} holds unit {unit['serial']}, not the mirror "
                             f"{serial} of this store")
        if unit.get("log_uuid") != log_uuid:
            raise StoreError(f"{self.path} holds another store's log")
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        self._lockfd = try_lock(os.path.join(self.path, "lock"))
        if self._lockfd is None:
            raise StoreError(f"mirror unit {self.path} is in use by another process")
        tighten(self.path)
        self._lock = threading.Lock()
        self._noted = set()
        try:
            self._open_parts(time_source or SystemTimeSource(), server)
        except BaseException:
            os.close(self._lockfd)
            raise

    def _open_parts(self, src, server=None):
        self.log = SegmentLog(os.path.join(self.path, "segments"), log_uuid_bytes(self.unit),
                              self.unit["segment_size"])
        self.ix, lost_cache = open_index(self.path, src.boot_id())
        self.local = LocalChain(os.path.join(self.path, "local"),
                                bytes.fromhex(self.unit["uuid"].replace("-", "")))
        # Refused events kept in the log: every replay skips them (the replayer holds this
        # very set, so one refused now is skipped at once).
        self.skip = self.local.skipped_seqs()
        self._skip_reason = {ev["event_seq"]: ev.get("reason") for ev in self.local.kept}
        self.replay = Replayer(self.ix, skip=self.skip)
        self.heads = HeadKeeper(self.local, "head")
        torn = catch_up(self.log, self.ix, self.replay, os.path.join(self.path, "quarantine"),
                        lost_cache=lost_cache, durable_seq=self.heads.seq)
        disposal.finish_last(self.log, self.ix, lambda seq: event_at(self.log, self.ix, seq))
        # The mirror's own clock: never the times in the events it receives, which is what
        # lets it refuse a delete a primary with a wrong clock asks for. Its state is in
        # its own chain (checkpoints in local/); clock.json is a cache, as on a primary.
        self.clock = ComplianceClock(os.path.join(self.path, "clock.json"), src,
                                     checkpoint=self.local.last_checkpoint, server=server)
        self._note_clock()
        if torn:
            log.warning("%s", torn_tail_text(torn))
            self.local.append(self.clock.now(), "torn_tail", segment=torn.segno,
                              offset=torn.offset, bytes=torn.nbytes,
                              quarantine=os.path.relpath(torn.qpath, self.path),
                              sound_after=torn.sound_after)

    # -- the interface the primary ships through (target.py) -------------------------------

    @property
    def serial(self):
        return self.unit["serial"]

    def end(self):
        """(segno, offset) just past the last frame this unit holds."""
        return (self.log.cur_segno, self.log.cur_end)

    def head(self):
        """(last_seq, last_hash): the end of the chain this unit holds."""
        return self.ix.committed_meta(("last_seq", 0), ("last_hash", E.GENESIS))

    def alive(self):
        """Whether the unit is still where it was opened (not removed or replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ident and os.path.exists(
            os.path.join(self.path, "unit.json"))

    def finish(self, segno, size):
        """The primary finished segment ``segno`` at ``size`` bytes: finish ours and start
        the next, provided we hold exactly as much."""
        with self._lock:
            if (self.log.cur_segno, self.log.cur_end) != (segno, size):
                raise PositionMismatch(self.end())
            self.log.roll()

    def receive(self, segno, offset, data):
        """Check and keep whole frames of segment ``segno`` starting at ``offset`` (which must
        be where this unit's log ends). Returns the new end; MirrorRefused after keeping the
        frames before a refused event."""
        with self._lock:
            if (segno, offset) != self.end():
                raise PositionMismatch(self.end())
            frames = list(parse_frames(data))
            self._note_clock()
            refused, accepted, disposals = None, 0, []
            before = self.log.cur_end
            txn = self.ix.write()
            try:
                for off, ftype, key, payload, length in frames:
                    if ftype == F.T_CHUNK:
                        self.replay.apply_chunk(txn, key, segno, offset + off, len(payload))
                    elif ftype == F.T_EVENT:
                        payload = bytes(payload)
                        try:
                            ev = E.decode(payload)
                        except ValueError:
                            ev = {}
                            reason = "the event is not JSON"
                        else:
                            reason = self._judge(txn, ev)
                        if reason is not None and not self._continues(txn, ev):
                            refused = (ev if isinstance(ev, dict) else {}, reason)
                            break
                        if reason is not None:
                            # Kept and skipped: said durably before the frame is kept, so
                            # a replay of the log after a crash skips it too.
                            self._keep_refused(ev, reason)
                        self.replay.apply_event(txn, ev, E.event_hash(payload), segno,
                                                offset + off)
                        if reason is None and ev["type"] == "dispose":
                            disposals.append(ev)
                    accepted = off + length
                if accepted:
                    self.log.append([memoryview(data)[:accepted]], may_roll=False)
                    self.ix.put_meta(txn, "applied", [segno, offset + accepted])
                txn.commit()
            except BaseException as e:
                txn.abort()
                if self.log.cur_end != before:
                    self.log.undo(before)
                if isinstance(e, lmdb.Error):
                    raise index_error(e, self.path) from None
                raise
            for ev in disposals:
                # Destroyed before this batch is acknowledged: once the primary hears back,
                # the chunks are gone from both units.
                self.log.sync()
                try:
                    disposal.destroy(self.log, ev)
                except (IntegrityError, OSError) as e:
                    self.local.append(self.clock.now(), "dispose_failed", event_seq=ev["seq"],
                                      reason=str(e))
            self._note_head()
            if refused is not None:
                self._refuse(*refused)
            return self.end()

    def _note_head(self, force=False):
        """Record the head this unit holds (heads.py), after it is durable: the frames are
        fsynced first, so the record never claims more than the log holds."""
        seq, h, next_serial = self.ix.committed_meta(("last_seq", 0), ("last_hash", E.GENESIS),
                                                     ("next_serial", 1))
        if seq and (force or self.heads.due(self.clock.now())):
            self.log.sync()
            self.heads.note(self.clock.now(), seq, h, next_serial, force=True)

    def sync(self):
        self.log.sync()

    def kept_refusals(self):
        """The refused events this unit keeps in its log unapplied, oldest first."""
        return list(self.local.kept)

    def deletion_clock(self):
        """(now_us, why_unsettled) of the compliance clock by which this unit judges every
        delete and dispose it receives (rules.py). The primary judges its own deletions by
        the earlier of its clock and this one, so that this unit never refuses a deletion
        the primary made while it was connected. The clock is persisted first (clock.json,
        fsynced), at most a second behind: after a crash it never resumes more than that
        behind the time it told the primary, which the wait for a delete a few seconds
        early (CLOCK_SKEW_WAIT_US) covers; so a run of deletions costs one fsync a second,
        not one each."""
        with self._lock:
            why = self.clock.why_unsettled()
            now = self.clock.now()
            self.clock.persist(unless_within_us=DELETION_PERSIST_US)
            self._note_clock()
            return now, why

    def read(self, segno, offset, length):
        """Raw bytes of this unit's log (for repairing the peer)."""
        return self.log.read(segno, offset, length)

    def note(self, etype, **fields):
        """An event of this unit's own chain (a repair of its segments, say)."""
        with self._lock:
            return self.local.append(self.clock.now(), etype, **fields)

    def close(self):
        if self.log is None:
            return
        try:
            with self._lock:
                self.log.sync()
                self._note_head(force=True)
                self.clock.persist()
                close_index(self.path, self.ix)
        except OSError:
            pass  # a vanished or read-only device: the next open recovers from the log
        finally:
            self.ix.close()
            self.log.close()
            self.local.close()
            self.log = None
            os.close(self._lockfd)

    # -- the mirror's own judgement ---------------------------------------------------------

    def _continues(self, txn, ev):
        """Whether ``ev`` takes the next place in the chain (seq and prev): then it can be
        kept unapplied and the events after it still checked; otherwise nothing after it
        can be, since the chain runs through it."""
        return (isinstance(ev, dict) and type(ev.get("seq")) is int
                and ev["seq"] == self.ix.meta(txn, "last_seq", 0) + 1
                and ev.get("prev") == self.ix.meta(txn, "last_hash", E.GENESIS))

    def _judge(self, txn, ev):
        if not isinstance(ev, dict):
            return "the event is not a JSON object"
        if not self._continues(txn, ev):
            return f"it does not continue the chain (seq {ev.get('seq')})"
        if ev["seq"] in self.skip:
            # Refused once, on a batch that was not kept in the end (a crash, a full disk):
            # refused again whatever the clock says now, so every replay agrees.
            return self._skip_reason.get(ev["seq"], "refused before")
        if ev.get("type") in ("delete", "dispose"):
            why = self.clock.why_unsettled()
            if why is not None:
                self._note_clock()
                return f"this unit's compliance clock is not trusted now ({why})"
        reason = rules.check(self.ix, txn, ev, self.clock.now())
        if reason is not None and ev.get("type") == "delete" and rules.shape(ev) is None:
            # Only a few seconds short of expiry by this clock: wait for it once.
            rec = self.ix.inode(txn, ev["ino"])
            if rec is not None and rec.sealed and not rec.holds:
                kind, until = retention.effective(rec.retention)
                wait = (until or 0) - self.clock.now()
                if kind == "until" and 0 < wait <= CLOCK_SKEW_WAIT_US:
                    time.sleep(wait / 1e6 + 0.001)
                    reason = rules.check(self.ix, txn, ev, self.clock.now())
        return reason

    def _keep_refused(self, ev, reason):
        """Record in the local chain that ``ev`` is kept in the log and not applied (the
        primary learns of it from the mirror's status: DEGRADED with the reason)."""
        if ev["seq"] not in self.skip:
            fields = {k: ev[k] for k in ("ino", "serial", "path") if k in ev}
            self.local.append(self.clock.now(), "refused", event_seq=ev["seq"],
                              event_type=ev.get("type"), event_time=ev.get("time"),
                              reason=reason, kept=True, primary=self.unit.get("peer_serial"),
                              **fields)
            self.local.last_refused = (ev["seq"], reason)
            self.skip.add(ev["seq"])
            self._skip_reason[ev["seq"]] = reason

    def _refuse(self, ev, reason):
        key = (ev.get("seq"), reason)
        if key not in self._noted and key != self.local.last_refused:
            self._noted.add(key)
            fields = {k: ev[k] for k in ("ino", "serial", "path") if k in ev}
            self.local.append(self.clock.now(), "refused", event_seq=ev.get("seq"),
                              event_type=ev.get("type"), event_time=ev.get("time"),
                              reason=reason, primary=self.unit.get("peer_serial"), **fields)
            self.local.last_refused = key
        raise MirrorRefused(ev.get("seq"), ev.get("type"), reason)

    def _note_clock(self):
        now = self.clock.now()
        for a in self.clock.pop_anomalies():
            self.local.append(a.compliance_us, "clock", kind=a.kind, detail=a.detail)
        cp = self.local.last_checkpoint
        if cp is None or now - cp[0] >= CHECKPOINT_INTERVAL_US:
            self.local.append(now, "clock", kind="checkpoint",
                              readings=self.clock.readings().as_fields())
