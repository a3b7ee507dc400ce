"""A mirror unit kept in an S3 Object Lock bucket: the "unit I replicate to" of target.py,
for a duplicate on AWS S3, Ceph RGW or MinIO (docs/FORMAT.md §11, docs/OPERATIONS.md).

What the bucket holds, under the unit's prefix:
    unit.json        the unit's description (as a local unit's unit.json)
    tail/S/O         the frames the primary shipped in one batch: segment S from offset O
    seg/S            segment S as a whole, once the primary finished it (the same bytes as
                     the segment file, header included)
    dseg/S/Q         segment S from its start without the chunks dispose event Q destroyed
                     (a redacted copy: see ``_redact``)
    head/Q           the chain head the bucket held (event Q), written at most every
                     HEAD_OBJECT_INTERVAL_US, when a segment is finished and at close: a
                     log read back shorter than the newest one lost events (s3copy.py)
Every object is one PUT, locked in COMPLIANCE mode and read back (s3bucket.py) before the
primary hears that it is stored, so a record counts as duplicated only once its frames are
locked objects. The tail objects make that happen before close() returns; the segment object
then holds the same frames compacted, and the tails of a finished segment are no longer
needed: superseded, they are no longer lengthened, and ``expire`` (run by each dispose)
deletes them once their locks end.

How long each object is locked. The event chain runs through every object (each event names
the hash of the one before), so verifying any record's history needs every object before it.
So every live object is locked at least until the unit's horizon: the latest retain-until of
any record it holds, and never less than a year ahead (``MIN_LOCK``). Locks move in steps of
``LOCK_STEP`` so that the horizon's daily growth does not mean a request per object per day:
when it passes the floor, the floor moves one step beyond it and the live objects are
lengthened a few per batch (``SWEEP_PER_BATCH``). A record whose retention is longer than the
floor (a retain-until set far ahead, an extension) lengthens the objects holding its chunks
and its seal at once, before its batch counts as stored; a record that is held, retained
indefinitely or waiting for its event date puts a legal hold on those objects, released when
no such record needs them any more.

The judgement a local mirror makes (rules.py) is made here too: the frames first go into a
local mirror unit beside the primary (the shipping cache, replica.py), which checks every
frame, continues the chain and refuses what its own index and clock forbid. The cache also
keeps the state of the bucket's objects (s3state.py) and is the source of the segment
objects. It is a cache: ``s3copy.fetch`` rebuilds one from the bucket.
"""
import json
import logging
import os
import time

import blake3

from ..errors import IntegrityError, StoreError
from ..store import events as E
from ..store import frames as F
from ..store.maintenance import event_at
from ..store.unit import new_unit
from ..timeutil import US, format_us, parse_duration
from . import s3bucket
from .replica import MirrorRefused, PositionMismatch, Replica, parse_frames
from .s3clock import BucketClock
from .s3copy import check_bucket, fetch, frames_disagree, record_needs
from .s3state import STATE_FILE, S3State, dseg_rel, seg_rel, tail_rel
from .s3survey import head_rel

log = logging.getLogger("wormfs.mirror.s3")

DAY_US = 86400 * US
MIN_LOCK = "1y"
LOCK_STEP_US = 30 * DAY_US
SWEEP_PER_BATCH = 32
HEAD_OBJECT_INTERVAL_US = 600 * US
RECORD_EVENTS = ("seal", "retention", "event_date", "hold", "release")


def cache_path(primary_path):
    """Where a primary keeps the shipping cache of its S3 unit."""
    return os.path.join(primary_path, "s3-mirror-cache")


def step_up(us):
    """The next lock step at or after ``us``."""
    return -(-us // LOCK_STEP_US) * LOCK_STEP_US


class S3Target:
    def __init__(self, url, endpoint, cache, *, serial, log_uuid, time_source=None,
                 server=None):
        self.url = url
        self._hold_redaction = False   # a dispose run of many batches is under way
        # The bucket's clock bounds the cache's clock (which judges deletions for the
        # bucket) and, shared with it, the primary's.
        server = server or BucketClock(url, endpoint)
        self.bucket = s3bucket.Bucket(url, endpoint, clock=server)
        self._check_unit()   # first: an unreachable bucket costs one request per retry
        if not os.path.exists(os.path.join(cache, "unit.json")):
            state, findings = fetch(self.bucket, cache)   # first use, or the cache was lost
            state.close()
            for text in findings:
                log.warning("the shipping cache was rebuilt from %s, which also holds: %s",
                            url, text)
        self.replica = Replica(cache, serial=serial, log_uuid=log_uuid,
                               time_source=time_source, server=server)
        try:
            self.state = S3State(os.path.join(cache, STATE_FILE))
        except BaseException:
            self.replica.close()
            raise
        try:
            # A crash between a dispose and its copies, or a cache rebuilt meanwhile (the
            # list of pending copies went with it): the last dispose is checked again.
            with self.replica.ix.read() as txn:
                last = self.replica.ix.meta(txn, "last_dispose")
            if last and last not in self.state.get("redact", []):
                with self.state.transaction():
                    self.state.put("redact", self.state.get("redact", []) + [last])
            self._redact_pending()
        except (StoreError, OSError) as e:
            log.warning("redacted copies on %s wait for the next batch: %s", url, e)

    def _check_unit(self):
        """The bucket must hold this unit, locked: its first version (a delete marker or a
        newer version over it is verify's finding, not a reason to stop)."""
        first = self.bucket.first_version("unit.json")
        if first is None:
            raise StoreError(f"{self.url} holds no unit.json")
        h = self.bucket.head("unit.json", first)
        if h["mode"] != "COMPLIANCE":
            raise StoreError(f"{self.url}/unit.json is not locked in COMPLIANCE mode")

    # -- what verification and repair use, as for a local mirror ---------------------------

    @property
    def serial(self):
        return self.replica.serial

    @property
    def path(self):
        return self.replica.path

    @property
    def log(self):
        return self.replica.log

    @property
    def ix(self):
        return self.replica.ix

    @property
    def local(self):
        return self.replica.local

    def note(self, etype, **fields):
        return self.replica.note(etype, **fields)

    # -- the interface (target.py) ---------------------------------------------------------

    def end(self):
        return tuple(self.state.get("end", [1, F.SEG_HEADER_LEN]))

    def head(self):
        seq, h = self.state.get("head", [0, None])
        return seq, h if seq else E.GENESIS

    def alive(self):
        return True  # an S3 store that went away shows on the next request

    def receive(self, segno, offset, data):
        if (segno, offset) != self.end():
            raise PositionMismatch(self.end())
        data = memoryview(data)
        refused = None
        cend = self.replica.end()
        if cend > (segno, offset):
            # The cache took these frames before the bucket did (an upload failed): they were
            # checked then; they must be the same bytes now.
            have = (cend[1] if cend[0] == segno else self.replica.log.size(segno)) - offset
            n = min(have, len(data))
            if bytes(self.replica.read(segno, offset, n)) != bytes(data[:n]):
                raise IntegrityError(f"the shipping cache of {self.url} holds other bytes "
                                     f"at segment {segno} offset {offset}")
            if n < len(data):
                refused = self._into_cache(segno, offset + n, data[n:])
        else:
            refused = self._into_cache(segno, offset, data)
        cend = self.replica.end()
        kept = len(data) if cend[0] > segno else min(len(data), cend[1] - offset)
        if kept:
            self._store_tail(segno, offset, data[:kept])
        if refused is not None:
            raise refused
        return self.end()

    def _into_cache(self, segno, offset, data):
        try:
            self.replica.receive(segno, offset, data)
        except MirrorRefused as e:
            return e
        return None

    def finish(self, segno, size):
        if self.end() != (segno, size):
            raise PositionMismatch(self.end())
        if self.replica.end() == (segno, size):
            self.replica.finish(segno, size)
        seg_path = self.replica.log.path(segno)
        if os.path.getsize(seg_path) != size:
            raise IntegrityError(f"the shipping cache holds {os.path.getsize(seg_path)} bytes "
                                 f"of segment {segno}, not {size}")
        self._replace(segno, size, seg_rel(segno), seg_path)
        self._store_head(force=True)

    def _replace(self, segno, size, rel, path):
        """Store the first ``size`` bytes of segment ``segno`` (the shipping cache's file at
        ``path``) as one object ``rel`` that carries what the live objects of the segment
        before ``size`` did: their locks and their legal holds pass to it, and they are
        superseded (no longer lengthened; deleted by a dispose once their locks end)."""
        old = self.state.live_in(segno, size)
        until = max([self._floor()] + [o.retain_until for o in old])
        holders = set()
        for o in old:
            holders |= self.state.holders(o.rel)
        version, stored_until, b3 = self.bucket.put_file(rel, path, size, until,
                                                         legal_hold=bool(holders))
        with self.state.transaction():
            self.state.add(rel, segno, 0, size, version, b3, stored_until, bool(holders))
            self.state.move_holders([o.rel for o in old], rel)
            self.state.supersede(segno, size, keep=rel)
            if rel == seg_rel(segno):
                self.state.put("end", [segno + 1, F.SEG_HEADER_LEN])
        # Their legal holds passed to the new object: theirs can go.
        for o in old:
            if o.legal_hold:
                self.bucket.legal_hold(o.rel, o.version, False)
                self.state.set_lock(o.rel, legal_hold=False)

    def objects_holding(self, places, dispose_seq):
        """The bucket's objects that still hold log positions ``places`` [(segno, offset)],
        the chunks of dispose event ``dispose_seq``: they stay until the objects' locks end.
        Once the event reached the bucket, the redacted copies made for it carry the
        segments without them, and the objects they replaced are no longer lengthened.
        [{rel, version, retain_until}] by key."""
        out = {}
        for segno, off in places:
            for o in self.state.holding(segno, off):
                if o.rel.startswith("dseg/") and int(o.rel.rsplit("/", 1)[1]) >= dispose_seq:
                    continue   # made for this disposal: the chunk is destroyed there
                out[o.rel] = {"rel": o.rel, "version": o.version,
                              "retain_until": format_us(o.retain_until)}
        return [out[k] for k in sorted(out)]

    def locks_now(self, objects):
        """``objects`` [{rel, version, retain_until}] with each one's retain-until as it is
        now (a lock lengthened since it was listed ends later); ones gone are left out."""
        out = []
        for o in objects:
            cur = self.state.obj(o["rel"])
            if cur is not None:
                out.append(dict(o, retain_until=format_us(cur.retain_until)))
        return out

    def kept_refusals(self):
        return self.replica.kept_refusals()  # the shipping cache judged for the bucket

    def deletion_clock(self):
        return self.replica.deletion_clock()  # the cache judges deletions for the bucket

    def sync(self):
        self.replica.sync()  # every object was read back before receive returned

    def read(self, segno, offset, length):
        """Log bytes from the bucket (to repair the primary): from the live objects of the
        segment (its segment object or newest redacted copy, and the tails past it)."""
        out, pos, end = bytearray(), offset, offset + length
        while pos < end:
            t = self.state.carrier(segno, pos)
            if t is None:
                raise IntegrityError(f"{self.url} holds no object with segment {segno} "
                                     f"offset {pos}")
            n = min(end, t.end) - pos
            out += self.bucket.get(t.rel, t.version, pos - t.offset, n)
            pos += n
        return bytes(out)

    def repair_frames(self, places, logs):
        """Put the bucket's frame at each (segno, offset) over the same place of ``logs``,
        once it checks (header, payload, chunk id). Returns [(segno, offset, length)]."""
        fixed = []
        for segno, off in places:
            try:
                head = self.read(segno, off, F.HEADER_PEEK)
                _, _, plen, _, hl = F.parse_header(head)
                raw = self.read(segno, off, hl + plen)
                ftype, key, payload, length = F.read_frame(memoryview(raw), 0, len(raw))
                if ftype == F.T_CHUNK and blake3.blake3(payload).digest() != key:
                    raise IntegrityError("the bucket's chunk does not match its id")
            except (F.FrameError, IntegrityError, OSError, StoreError) as e:
                log.warning("no sound copy of segment %s offset %s on %s: %s", segno, off,
                            self.url, e)
                continue
            for lg in logs:
                lg.patch(segno, off, raw)
            fixed.append((segno, off, length))
        return fixed

    def check_bucket(self, rep, unit, *, deep=False, repair=False, on_repair=None):
        """The bucket's part of verify and scrub (s3copy.check_bucket)."""
        check_bucket(self.bucket, self.state, self.ix, rep, unit, deep=deep,
                     log=self.log, repair=repair, on_repair=on_repair)

    def close(self):
        try:
            try:
                self._store_head(force=True)
            except (StoreError, OSError) as e:
                log.warning("could not store the head object on %s: %s", self.url, e)
            self.state.close()
        finally:
            self.replica.close()

    # -- storing and locking ---------------------------------------------------------------

    def _store_tail(self, segno, offset, data):
        rel = tail_rel(segno, offset)
        floor = self._floor()
        version, until, b3 = self.bucket.put(rel, data, floor)
        records, head, disposals = set(), None, []
        for _, ftype, _, payload, _ in parse_frames(data, check_ids=False):
            if ftype == F.T_EVENT:
                payload = bytes(payload)
                ev = E.decode(payload)
                head = [ev["seq"], E.event_hash(payload)]
                if ev.get("type") in RECORD_EVENTS and "ino" in ev:
                    records.add(ev["ino"])
                elif ev.get("type") == "dispose" and ev.get("chunks"):
                    disposals.append(ev["seq"])
        with self.state.transaction():
            self.state.add(rel, segno, offset, len(data), version, b3, until, False)
        for ino in sorted(records):
            self._lock_record(ino)
        with self.state.transaction():
            self.state.put("end", [segno, offset + len(data)])
            if head is not None:
                self.state.put("head", head)
            if disposals:   # with the end: a crash before the copies are made redoes them
                self.state.put("redact", self.state.get("redact", []) + disposals)
        if not self._hold_redaction:
            self._redact_pending()
        self._store_head()
        self._sweep()

    # -- disposal in the bucket ------------------------------------------------------------

    def hold_redaction(self):
        """A dispose run of many batches begins (disposal.py): each batch's dispose event
        would have every segment it touched stored again, and a run's batches touch the
        same segments one after another. Until ``release_redaction``, the copies wait in
        ``redact`` (kept in the state, so a crash or a lost connection makes them at the
        next open or batch), and are then made once per segment."""
        self._hold_redaction = True

    def release_redaction(self):
        self._hold_redaction = False
        self._redact_pending()

    def _redact_pending(self):
        """Redacted copies for the dispose events the bucket now holds (``redact`` in the
        state: kept until done, so a crash redoes them at the next batch or open). A
        segment that several of them destroyed frames in is copied once, for the last: the
        cache's segment holds every one's destruction by then."""
        pending = list(self.state.get("redact", []))
        readable, last_of = set(), {}
        for seq in pending:
            try:
                ev = event_at(self.replica.log, self.replica.ix, seq)
            except (IntegrityError, StopIteration, KeyError) as e:
                log.warning("no redacted copy for dispose event %s on %s: %s", seq,
                            self.url, e)
                continue
            readable.add(seq)   # read again below: a run's events can be many and large
            for _, segno, _, _ in ev["chunks"]:
                last_of[segno] = max(seq, last_of.get(segno, 0))
        for seq in pending:
            if seq in readable:
                ev = event_at(self.replica.log, self.replica.ix, seq)
                self._redact(ev, {n for n, q in last_of.items() if q > seq})
            with self.state.transaction():
                self.state.put("redact", [s for s in self.state.get("redact", []) if s != seq])

    def _redact(self, ev, later=frozenset()):
        """A bucket cannot destroy a frame in place: an object is written once and kept
        until its lock ends. So for each segment holding chunks that dispose event ``ev``
        destroyed in the shipping cache, the cache's copy of the segment from its start
        (whole once finished) is stored as ``dseg/S/Q``: the same bytes but those frames.
        It carries the segment from then on; the objects it replaces are superseded, so
        their locks are no longer lengthened, and a dispose after their locks end deletes
        them (``expire``). Readers take the redacted copy (s3copy.py), so a unit read back
        from the bucket never holds the disposed chunks in plaintext. ``later``: segments
        that a later pending dispose event copies (with this one's frames destroyed too)."""
        end_seg, end_off = self.end()
        done, made = set(later), []
        for _, segno, off, _ in ev["chunks"]:
            if segno in done or segno > end_seg:
                continue
            try:
                head = self.replica.log.read(segno, off, F.HEADER_PEEK)
                destroyed = F.parse_header(head)[0] == F.T_DISPOSED
            except (F.FrameError, IntegrityError, OSError):
                destroyed = False
            if not destroyed:
                continue   # the cache refused or could not destroy it: nothing to redact
            done.add(segno)
            rel = dseg_rel(segno, ev["seq"])
            if self.state.obj(rel) is not None:
                continue   # made before a crash
            size = end_off if segno == end_seg else self.replica.log.size(segno)
            path = self.replica.log.path(segno)
            problem = self._differs_from_bucket(segno, size, path)
            if problem is not None:
                # The shipping cache's file is the copy's source: one changed behind wormfs's
                # back (root with the unit files) must not replace what the bucket holds.
                log.error("no redacted copy of segment %s on %s: %s", segno, self.url, problem)
                self.replica.note("redact_refused", dispose_seq=ev["seq"], segment=segno,
                                  reason=problem)
                continue
            self._replace(segno, size, rel, path)
            made.append(rel)
        if made:
            self.replica.note("redacted", dispose_seq=ev["seq"], objects=made)

    def _differs_from_bucket(self, segno, size, path):
        """Why the cache's first ``size`` bytes of segment ``segno`` may not replace the
        bucket's live objects of it (None if they agree with them but for disposed frames)."""
        with open(path, "rb") as f:
            mine = f.read(size)
        if len(mine) != size:
            return f"the shipping cache holds {len(mine)} bytes of it, not {size}"
        try:
            theirs = self.read(segno, F.SEG_HEADER_LEN, size - F.SEG_HEADER_LEN)
        except (IntegrityError, StoreError, OSError) as e:
            return f"the bucket's objects of it cannot be read: {e}"
        at = frames_disagree(theirs, mine[F.SEG_HEADER_LEN:], 0, len(theirs))
        if at is not None:
            return (f"the shipping cache differs from the bucket at offset "
                    f"{F.SEG_HEADER_LEN + at} other than by a disposal")
        return None

    def expire(self, limit=1000):
        """Delete the superseded objects whose locks have ended and that no legal hold
        keeps (tails a segment object replaced, copies a redacted copy replaced): the last
        bytes of disposed records in the bucket go with them. Judged by the cache's
        compliance clock, which the bucket's own clock bounds; the bucket refuses a delete
        before the lock ends all the same. Returns [{rel, version, retain_until}] deleted."""
        now = self.replica.clock.now()
        gone, checked = [], {}
        for o in self.state.expirable(now, limit):
            if not self._replaced(o, now, checked):
                continue
            try:
                self.bucket.delete_version(o.rel, o.version)
            except FileNotFoundError:
                pass   # deleted before a crash, not yet forgotten
            except (StoreError, OSError) as e:
                log.warning("could not delete %s/%s (version %s) once its lock ended: %s",
                            self.url, o.rel, o.version, e)
                continue
            gone.append({"rel": o.rel, "version": o.version,
                         "retain_until": format_us(o.retain_until)})
        return gone

    def _replaced(self, o, now, checked):
        """Whether what carries ``o``'s bytes now (the live objects at its first and last
        byte) is in the bucket, in COMPLIANCE mode and still locked: nothing the log needs
        may go with ``o``. ``checked`` remembers the answer per object."""
        first = o.offset or F.SEG_HEADER_LEN
        for pos in {first, o.end - 1}:
            c = self.state.carrier(o.segno, pos)
            if c is None:
                log.warning("%s/%s is not deleted: no live object carries segment %s offset "
                            "%s", self.url, o.rel, o.segno, pos)
                return False
            if c.rel not in checked:
                try:
                    h = self.bucket.head(c.rel, c.version)
                    checked[c.rel] = h["mode"] == "COMPLIANCE" and \
                        (h["retain_until"] or 0) > now
                except (FileNotFoundError, StoreError, OSError):
                    checked[c.rel] = False
            if not checked[c.rel]:
                log.warning("%s/%s is not deleted: %s, which carries its bytes now, is not "
                            "in the bucket locked", self.url, o.rel, c.rel)
                return False
        return True

    def forget(self, objects):
        """Drop deleted objects from the state, once their deletion is recorded."""
        with self.state.transaction():
            for o in objects:
                self.state.drop(o["rel"])

    def _store_head(self, force=False):
        """A head object (head/Q): the newest event the bucket holds, locked as the log is,
        so that a log read back from the bucket that ends before it is known to have lost
        events. At most every HEAD_OBJECT_INTERVAL_US unless ``force``."""
        seq, h = self.state.get("head", [0, None])
        last_seq, last_at = self.state.get("head_object", [0, None])
        now = self.replica.clock.now()
        if not seq or seq <= last_seq or \
                (not force and last_at is not None and now - last_at < HEAD_OBJECT_INTERVAL_US):
            return
        with self.ix.read() as txn:
            next_serial = self.ix.meta(txn, "next_serial", 1)
        body = json.dumps({"kind": "wormfs-head", "event_seq": seq, "event_hash": h,
                           "next_serial": next_serial, "end": list(self.end()),
                           "time": format_us(now)}).encode() + b"\n"
        rel = head_rel(seq)
        version, until, b3 = self.bucket.put(rel, body, self._floor())
        with self.state.transaction():
            self.state.add(rel, 0, 0, len(body), version, b3, until, False)
            self.state.put("head_object", [seq, now])

    def _floor(self):
        """The retain-until every live object must have now (see the module's doc)."""
        floor = self.state.get("floor_us", 0)
        need = max(self._horizon(), parse_duration(MIN_LOCK).after(self.replica.clock.now()))
        if need > floor:
            floor = step_up(need + LOCK_STEP_US)
            self.state.put("floor_us", floor)
        return floor

    def _horizon(self):
        """The latest finite retain-until of the records this unit holds (the expiry table's
        last key)."""
        with self.ix.read() as txn:
            return self.ix.latest_expiry(txn)

    def _sweep(self):
        """Lengthen a few live objects that are locked short of the floor."""
        floor = self.state.get("floor_us", 0)
        for o in self.state.locked_short(floor, SWEEP_PER_BATCH):
            self._extend(o, floor)

    def _extend(self, o, until):
        stored = self.bucket.extend(o.rel, o.version, until)
        self.state.set_lock(o.rel, retain_until=stored)

    def _lock_record(self, ino):
        """Make the objects holding a record's chunks and its seal keep them as long as the
        record must be kept."""
        with self.ix.read() as txn:
            rec = self.ix.inode(txn, ino)
            if rec is None or not rec.sealed or rec.serial is None:
                return
            places, until, hold = record_needs(self.ix, txn, rec)
        carriers = {}
        for segno, off in places:
            o = self.state.carrier(segno, off)
            if o is None:
                raise IntegrityError(f"{self.url}: no object holds segment {segno} offset "
                                     f"{off} of record {rec.serial}")
            carriers[o.rel] = o
        for o in carriers.values():
            if until and o.retain_until < until:
                self._extend(o, step_up(until))
            holders = self.state.holders(o.rel)
            if hold != (ino in holders):
                self.state.set_holder(o.rel, ino, hold)
                want = bool(self.state.holders(o.rel))
                if want != bool(o.legal_hold):
                    self.bucket.legal_hold(o.rel, o.version, want)
                    self.state.set_lock(o.rel, legal_hold=want)


def open_s3_target(unit, primary_path, time_source=None, server=None):
    return S3Target(unit["peer_path"], unit.get("peer_endpoint"), cache_path(primary_path),
                    serial=unit["peer_serial"], log_uuid=unit.get("log_uuid", unit["uuid"]),
                    time_source=time_source, server=server)


def create_unit(url, endpoint, unit_fields):
    """mkfs: a new S3 unit. The bucket must have Object Lock (it is created with it if it
    does not exist) and nothing under the prefix; the unit's unit.json is stored locked. The
    primary builds its shipping cache from the bucket when it first opens. Returns notes for
    the operator."""
    bucket = s3bucket.Bucket(url, endpoint)
    notes = bucket.check_lockable(create=True)
    if not bucket.is_empty():
        raise StoreError(f"{url} already holds objects: a new unit needs an empty prefix "
                         f"(what is there may be evidence; use another prefix)")
    unit = new_unit(**unit_fields)
    unit.update(s3=url, s3_endpoint=endpoint)
    body = json.dumps(unit, indent=2).encode() + b"\n"
    bucket.put("unit.json", body, parse_duration(MIN_LOCK).after(_now_us()))
    return notes


def _now_us():
    return int(time.time() * US)


__all__ = ["S3Target", "open_s3_target", "create_unit", "cache_path"]
