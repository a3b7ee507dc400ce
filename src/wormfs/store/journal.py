"""The journal of one unit: the one writer of its log's events and of its index.

Every change is frames (events, and the chunks a seal needs) appended to the segment log
and applied to the index by ``replay.Replayer`` in the same LMDB transaction, under
``lock``; the chain head (``last_seq``, ``last_hash``) and ``applied`` move only here (and
in maintenance.py's catch-up and rebuild, before a journal exists). Durability is a group commit
(commit.py): a durable change waits, after releasing the lock, for one shared fdatasync
and then for ``after_durable(pos)`` (the store's duplicate, which this module knows
nothing of).

A change is in the log only if its index transaction commits: if anything fails after the
function appended frames (a full disk refusing the LMDB commit, say), those frames are cut
off again, so the failed request leaves no trace and the next one finds log and index in
step. Only if that is impossible (a segment rolled meanwhile) is the index brought up to
the log instead, which is the log-is-truth rule; if even that fails the journal stops
taking changes (``failed``).
"""
import logging
import threading

import lmdb

from ..errors import InvalidValue, Refused, StoreError, StoreFull, WormError
from ..timeutil import format_us
from . import events as E
from . import frames as F
from . import reserve as space_reserve
from .maintenance import catch_up, index_error

log = logging.getLogger("wormfs.store")

# Set by the journal alone: a caller's field never replaces them (a forged type, seq, time
# or actor would rewrite the audit trail).
RESERVED_FIELDS = frozenset(("seq", "prev", "time", "time_us", "type", "actor"))


class Journal:
    def __init__(self, path, log, ix, replay, group, clock, readonly=False):
        self.path, self.log, self.ix, self.replay = path, log, ix, replay
        self.group, self.clock, self.readonly = group, clock, readonly
        self.lock = threading.RLock()  # appends, index writes, and the store's open files
        self.failed = None             # why changes stopped (the index lost the log)
        self.after_durable = None      # fn(pos) after a durable change, unless ship=False
        self._reload_head()

    def _reload_head(self):
        with self.ix.read() as txn:
            self.last_seq = self.ix.meta(txn, "last_seq", 0)
            self.last_hash = self.ix.meta(txn, "last_hash", E.GENESIS)

    def check_writable(self):
        if self.readonly:
            raise Refused(f"{self.path} is open read-only")
        if self.failed:
            raise StoreError(f"store stopped accepting changes after an error: {self.failed}")

    # -- appending, inside a change -------------------------------------------------------

    def append(self, txn, etype, actor=None, **fields):
        """Append one event (after any clock anomaly noticed since the last one) and apply
        it in ``txn``; returns the event. Caller holds ``lock`` (inside ``mutate``)."""
        now = self.clock.now()
        self.append_anomalies(txn, now)
        return self.append_at(txn, now, etype, actor, fields)

    def append_anomalies(self, txn, now):
        for a in self.clock.pop_anomalies():
            self.append_at(txn, now, "clock", None, dict(
                kind=a.kind, wall=format_us(a.wall_us), compliance=format_us(a.compliance_us),
                detail=a.detail))

    def append_at(self, txn, now, etype, actor, fields):
        """Append event ``etype`` with ``fields`` stamped ``now`` and apply it in ``txn``."""
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise InvalidValue(f"event fields {', '.join(sorted(clash))} are set by the store")
        # Event times never go back, whatever the clock does: held at an S3 bucket's time,
        # the compliance clock can read less than it showed a moment ago (clock.py), and
        # the trail's order is its time order (first_seq_at, a seal's commit time by
        # serial). The clock still judges deletions by its own reading.
        last = self.ix.meta(txn, "last_time", 0)
        if now < last:
            now = last
        ev = dict(fields)
        ev.update(seq=self.last_seq + 1, prev=self.last_hash, time=format_us(now),
                  time_us=now, type=etype)
        if actor is not None:
            ev["actor"] = actor.as_dict()
        payload = E.encode(ev)
        segno, offset = self.log.append([F.encode_event(payload)])
        h = E.event_hash(payload)
        self.replay.apply_event(txn, ev, h, segno, offset)
        self.ix.put_meta(txn, "applied", list(self.log.end_position()))
        self.last_seq, self.last_hash = ev["seq"], h
        return ev

    def append_chunks(self, txn, got):
        """Append the chunks the unit lacks, given as (offset, length, id, xxh3, bytes), index
        them in ``txn``, and read each back to check it against the checksum computed with
        its id before anything may refer to it (R14). Caller holds ``lock``."""
        written, seen = [], set()  # seen: ids appended in this batch, not indexed yet
        for _, length, cid, x, data in got:
            if cid in seen or self.ix.chunk(txn, cid) is not None:
                continue
            seen.add(cid)
            segno, foff = self.log.append([F.frame_header(F.T_CHUNK, cid, length, x), data])
            written.append((cid, segno, foff, length))
        if not written:
            return
        self.replay.apply_chunks(txn, written)
        self.ix.put_meta(txn, "applied", list(self.log.end_position()))
        for cid, segno, foff, length in written:
            self.log.read_chunk(segno, foff, cid, length)  # header and xxh3 checked

    # -- changes --------------------------------------------------------------------------

    def mutate(self, fn, durable=False, ship=True, reserve=False):
        """Run ``fn(txn)`` under ``lock`` in one index transaction and return what it
        returns. Its events are durable on return if ``durable``: on this unit and, unless
        ``ship`` is False, through ``after_durable``. ``reserve``: an essential change (a
        hold, an extension, a deletion, an audit event) that may use the unit's space
        reserve when the disk is full (reserve.py)."""
        try:
            return self._mutate_once(fn, durable, ship)
        except StoreFull:
            if not reserve or not space_reserve.release(self.path):
                raise
            return self._mutate_once(fn, durable, ship)

    def _mutate_once(self, fn, durable, ship):
        self.check_writable()
        with self.lock:
            before = self.log.end_position()
            txn = self.ix.write()
            try:
                result = fn(txn)
                txn.commit()
            except BaseException as e:
                txn.abort()
                if self.log.end_position() != before:
                    self._undo_appends(before)
                if isinstance(e, lmdb.Error):
                    raise index_error(e, self.path) from None
                raise
            if durable:
                pos = self.log.end_position()
                ticket = self.group.note_append(pos)
        if durable:
            self.group.wait(ticket)
            if ship and self.after_durable is not None:
                self.after_durable(pos)
        return result

    def event_now(self, etype, actor=None, durable=False, **fields):
        """One event as a change of its own. Every single event (a refusal's audit, a note,
        a recovery) may use the reserve."""
        return self.mutate(lambda txn: self.append(txn, etype, actor, **fields),
                           durable=durable, reserve=True)

    def settle(self):
        """Make everything appended so far durable on this unit and then on the duplicate:
        what ``mutate(durable=True)`` does after its change, for a batch of changes made
        without it."""
        pos = self.sync()
        if self.after_durable is not None:
            self.after_durable(pos)

    def sync(self):
        """Make everything appended so far durable on this unit; returns the log position
        that is durable now."""
        with self.lock:
            pos = self.log.end_position()
            ticket = self.group.note_append(pos)
        self.group.wait(ticket)
        return pos

    def _undo_appends(self, before):
        try:
            if before[0] != self.log.cur_segno:
                raise StoreError("a segment was finished in the meantime")
            self.log.undo(before[1])
            self._reload_head()
        except (WormError, OSError) as e:
            log.warning("could not drop unindexed frames (%s); indexing them instead", e)
            self._resync_after_error()

    def _resync_after_error(self):
        try:
            catch_up(self.log, self.ix, self.replay)
            self._reload_head()
        except Exception as e:  # the index cannot follow the log: stop changing anything
            self.failed = f"index out of step with the log: {e}"


class Change:
    """What ``Store.transact`` hands its function: the one index transaction and the way to
    append events in it. Code outside the store (disposal, scrub) changes a unit only
    through this, so the journal's lock, the undo of a failed commit and the durable wait
    stay in one place."""
    __slots__ = ("_journal", "_path_of", "txn")

    def __init__(self, journal, path_of, txn):
        self._journal, self._path_of, self.txn = journal, path_of, txn

    def event(self, etype, actor=None, **fields):
        """Append event ``etype`` and apply it to the index; returns the event."""
        return self._journal.append(self.txn, etype, actor, **fields)

    def path_of(self, ino):
        return self._path_of(ino, self.txn)
