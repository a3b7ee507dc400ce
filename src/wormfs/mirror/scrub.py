"""Verify and scrub: one walk over both units' logs, side by side (SPEC ``wormfs verify``,
``wormfs scrub``).

Both units hold the same segments byte for byte, so the walk reads segment N of each unit at
the same offsets, frame by frame, and checks on each side:
- the segment header, every frame's header and payload checksums (xxh3);
- every chunk's BLAKE3 against its id;
- that both sides hold the same bytes (a difference between two valid frames is divergence,
  which no repair can settle);
- each event continues its unit's chain, and the unit's index places it where it is;
- each chunk frame is where the unit's index says (or is a later duplicate, dead weight).
A frame that is bad on one side and good on the other is repaired (``repair=True``) by
copying the peer's bytes at that place; a segment file missing or cut short on one side is put
back from the peer's copy (the damaged file is kept in quarantine/). Frames bad on both sides
are reported as unrepairable.

Then, per unit, every record's manifest against the index and its whole-content BLAKE3
digest, re-read through the log; the own chain of a mirror (local/); with ``deep``, a replay of
the whole log into a scratch index compared entry by entry with the unit's index; and across
the units: the mirror's chain is a prefix of the primary's and both hold the same records with
the same digests. Records the mirror does not hold yet are findings too ("pending").

Only the log up to each index's ``applied`` position (read at the start) is walked, so a
mounted store can be checked while it takes new writes.

A walk can stop between two segments or two windows of serials and go on later from a
cursor (scrubcursor.py): the background scrub's pieces. It holds no read transaction across
a window, so a pass that takes days does not keep LMDB from reusing the pages the writers
free meanwhile.
"""
import itertools
import os
import shutil
import struct
import tempfile

import blake3

from ..errors import IntegrityError, WormError
from ..store import events as E
from ..store import frames as F
from ..store.index import DBS, LAYOUT, Index
from ..store.inode import Inode
from ..store.hostfs import fsync_dir, set_immutable
from ..store.maintenance import apply_frames, event_hash_at
from ..store.localchain import skipped_seqs
from ..store.replay import Replayer
from ..store.segments import seg_name, segment_files
from ..store.unit import read_unit
from .s3bucket import is_s3
from .scrubcursor import Cursor, UnitPlace


class Finding(dict):
    """One problem: unit (serial), kind, detail, and where (segment, offset) if it is in a
    log; ``repaired`` once fixed from the peer."""


# Kinds a walk can find once per record or per frame and never repairs afterwards: past
# LISTED_PER_KIND of one kind the rest are counted, not kept (a mirror restored from an old
# copy would otherwise list every record, inside the daemon for its background scrub).
COUNTED_KINDS = frozenset(("index", "parity", "record", "chain"))
LISTED_PER_KIND = 1000
WINDOW = 1000   # serials of the record walk per read transaction (and between pauses)


class Unit:
    """What the walk needs of one unit: its log, its index, its serial and role, whether it
    may be written (repairs), and how to record an event in its own chain, if any."""

    def __init__(self, serial, role, path, log, ix, writable=False, local=None):
        self.serial, self.role, self.path = serial, role, path
        self.log, self.ix, self.writable, self.local = log, ix, writable, local
        with ix.read() as txn:
            applied = ix.meta(txn, "applied")
            self.last_seq = ix.meta(txn, "last_seq", 0)
            self.stats = ix.meta(txn, "stats") or {}
            self.last_serial = ix.meta(txn, "next_serial", 1) - 1
            self.last_dispose = ix.meta(txn, "last_dispose", 0) or 0
        self.applied = tuple(applied) if applied else (1, F.SEG_HEADER_LEN)
        self.chain_seq, self.chain_hash = 0, E.GENESIS
        self.chain_broken = False
        self.damaged = False   # unrepaired damage: totals cannot be compared
        self.chunks_placed = 0

    def start_place(self):
        """This unit as a pass that begins now sees it."""
        return UnitPlace(self.serial, self.applied, self.last_seq,
                         self.stats.get("chunks", 0), self.stats.get("logical_bytes", 0),
                         self.last_dispose)

    def resume(self, p):
        """Continue a pass from ``p`` (a UnitPlace of this unit): walk what it walked."""
        self.applied, self.last_seq, self.last_dispose = p.applied, p.last_seq, p.last_dispose
        self.stats = {"chunks": p.chunks, "logical_bytes": p.logical}
        self.chain_seq, self.chain_hash = p.chain_seq, p.chain_hash
        self.chain_broken, self.damaged, self.chunks_placed = p.chain_broken, p.damaged, \
            p.placed

    def keep(self, p, rep):
        """Note the walk's state on this unit in ``p``, for the next piece."""
        p.chain_seq, p.chain_hash = self.chain_seq, self.chain_hash
        p.chain_broken, p.damaged, p.placed = self.chain_broken, self.damaged, \
            self.chunks_placed
        p.frames, p.records = rep.frames[self.serial], rep.records[self.serial]

    def segment_numbers(self):
        nums, _ = self.log.segment_numbers()
        return [n for n in nums if n <= self.applied[0]]

    def end_of(self, segno, mapped):
        """How far to walk a segment: to the index's applied position in the last one."""
        return None if mapped is None else self.walk_length(segno, len(mapped))

    def walk_length(self, segno, size):
        """The bytes of a segment of ``size`` bytes the walk reads (end_of)."""
        return min(size, self.applied[1]) if segno == self.applied[0] else size


class Report:
    """What a walk found. Of a piece of a pass (a cursor given): the findings of this piece
    are listed, the counts (``count``, ``repaired``, frames, records, bytes) are the whole
    pass's so far, and ``resume`` is the cursor to go on from (None once the pass is done)."""

    def __init__(self, units, deep, repair, cursor=None):
        self.units, self.deep, self.repair = units, deep, repair
        self.findings = []
        self.unlisted = {}   # kind -> findings past LISTED_PER_KIND, counted only
        self._listed = {}    # kind -> findings of COUNTED_KINDS kept
        self.notes = []      # what the check left out: said, but not a finding
        self.frames = {u.serial: 0 for u in units}
        self.bytes = 0
        self.records = {u.serial: 0 for u in units}
        self.pending = 0
        self.earlier_findings = self.earlier_repaired = self.pieces = 0
        self.resume = None
        if cursor is not None:
            for p in cursor.units:
                self.frames[p.serial], self.records[p.serial] = p.frames, p.records
            self.bytes, self.pending, self.pieces = cursor.bytes, cursor.pending, cursor.pieces
            self.earlier_findings, self.earlier_repaired = cursor.findings, cursor.repaired

    def add(self, unit, kind, detail, segment=None, offset=None, repaired=False):
        f = Finding(unit=unit.serial if unit else None, kind=kind, detail=detail,
                    repaired=repaired)
        if segment is not None:
            f["segment"], f["offset"] = segment, offset
        if kind in COUNTED_KINDS and not repaired:
            n = self._listed.get(kind, 0)
            if n >= LISTED_PER_KIND:
                self.unlisted[kind] = self.unlisted.get(kind, 0) + 1
                return f
            self._listed[kind] = n + 1
        self.findings.append(f)
        return f

    @property
    def unrepaired(self):
        """The unrepaired findings listed (see ``unlisted`` for those only counted)."""
        return [f for f in self.findings if not f["repaired"]]

    @property
    def count(self):
        """Every finding, listed or counted (of the earlier pieces of the pass too)."""
        return len(self.findings) + sum(self.unlisted.values()) + self.earlier_findings

    @property
    def repaired(self):
        return sum(1 for f in self.findings if f["repaired"]) + self.earlier_repaired

    @property
    def ok(self):
        return not self.unrepaired and not self.unlisted and \
            self.earlier_findings == self.earlier_repaired

    def as_dict(self):
        return {"ok": self.ok, "deep": self.deep, "repair": self.repair,
                "units": [{"serial": u.serial, "role": u.role, "path": u.path,
                           "frames": self.frames[u.serial], "records": self.records[u.serial],
                           "events": u.chain_seq} for u in self.units],
                "bytes": self.bytes, "pending_records": self.pending,
                "findings": list(self.findings), "unlisted": dict(self.unlisted),
                "notes": list(self.notes), "repaired": self.repaired}

    def _pause(self, units, cur):
        """Stop here: the cursor the next piece goes on from."""
        for u in units:
            u.keep(cur.place(u.serial), self)
        cur.bytes, cur.pending = self.bytes, self.pending
        cur.findings, cur.repaired = self.count, self.repaired
        cur.pieces += 1
        self.resume = cur
        return self


def new_cursor(units, started=0):
    """A pass over ``units`` that begins now (``started``: the store's clock, for pacing)."""
    last = max(u.applied[0] for u in units)
    total = sum(u.stats.get("logical_bytes", 0) for u in units)
    for n in range(1, last + 1):
        sizes = [(u, u.log.file_size(n)) for u in units if n <= u.applied[0]]
        total += max((u.walk_length(n, s) for u, s in sizes if s is not None), default=0)
    return Cursor(started, [u.start_place() for u in units],
                  max(u.last_serial for u in units), total)


def check_units(units, *, deep=False, repair=False, progress=None, on_repair=None,
                cursor=None, pause=None):
    """Walk the units (a primary and/or its mirror, primary first) and return a Report.
    ``progress(done_bytes, total_bytes)`` is called as the walk goes; ``on_repair(finding)``
    after each repair (to audit it). With ``cursor`` (new_cursor, or one a paused walk
    returned) the walk goes on from where it stands, and when ``pause()`` says so between
    two segments or two windows of records it stops: the Report's ``resume`` is then the
    cursor to go on from. The cursor is changed as the walk goes."""
    cur = cursor if cursor is not None else new_cursor(units)
    for u in units:
        u.resume(cur.place(u.serial))
    rep = Report(units, deep, repair, cur)
    progress = progress or (lambda d, t: None)
    pause = pause or (lambda: False)
    if cur.phase == "log":
        if not _walk_logs(units, rep, progress, on_repair or (lambda f: None), cur, pause):
            return rep._pause(units, cur)
        for u in units:
            _check_index_totals(u, rep)
        cur.phase, cur.next = "records", 1
    # One walk of both units' records in step: each record's content on each unit and the
    # two units against each other, every inode decoded once per unit.
    if not _walk_records(units, rep, progress, cur, pause):
        return rep._pause(units, cur)
    for u in units:
        if deep and not u.damaged:
            _replay_compare(u, rep)
        if u.local is not None:
            _check_local_chain(u, rep)
    return rep


# -- the log walk ---------------------------------------------------------------------------

def _walk_logs(units, rep, progress, on_repair, cur, pause):
    """Segment by segment from ``cur.next``, each mapped only while it is walked (a store
    has thousands). False if it paused before the end."""
    numbers = set().union(*(u.segment_numbers() for u in units))
    last = max((u.applied[0] for u in units), default=0)
    maps = {}
    for n in range(cur.next, last + 1):
        here = [u for u in units if n <= u.applied[0]]
        for u in here:
            maps[(u.serial, n)] = u.log.map_file(n)
        present = [u for u in here if maps[(u.serial, n)] is not None]
        for u in here:
            if maps[(u.serial, n)] is None:
                f = rep.add(u, "missing segment", f"segment {n} is missing", n, 0)
                peer = _other(present, u)
                if peer is not None and rep.repair and u.writable and n < u.log.cur_segno:
                    maps[(u.serial, n)] = _reinstall(u, peer, n, maps[(peer.serial, n)], f,
                                                     on_repair)
                elif peer is not None:
                    f["detail"] += (f" (a copy is on {peer.serial}: run 'wormfs scrub "
                                    f"--repair')")
                if maps[(u.serial, n)] is None:
                    u.damaged = u.chain_broken = True
        if n not in numbers and not present:
            rep.add(None, "missing segment", f"segment {n} is missing on every unit", n, 0)
        _walk_segment(n, here, maps, rep, on_repair)
        walked = max((u.end_of(n, maps[(u.serial, n)]) for u in here
                      if maps[(u.serial, n)] is not None), default=0)
        rep.bytes += walked
        cur.done += walked
        cur.next = n + 1
        for u in here:
            m = maps.pop((u.serial, n), None)
            if m is not None and hasattr(m, "close"):
                m.close()
        progress(cur.done, cur.total)
        if n < last and pause():
            return False
    return True


def _other(units, u):
    for x in units:
        if x is not u:
            return x
    return None


def _reinstall(u, peer, n, peer_map, finding, on_repair):
    """Put back a missing finished segment from the peer's copy, once that copy checks."""
    if peer_map is None or not _segment_is_sound(peer_map):
        finding["detail"] += "; the peer's copy is damaged too"
        return None
    u.log.install(n, [peer_map[i:i + (8 << 20)] for i in range(0, len(peer_map), 8 << 20)])
    finding.update(repaired=True, detail=f"segment {n} was missing; copied from "
                   f"{peer.serial}", length=len(peer_map), source=peer.serial)
    on_repair(finding)
    return u.log.map_file(n)


class _Checked:
    """The frame at one place of one unit: ``ok``, its type and length when its header was
    sound (even if its payload is not), its key and payload, or the error."""
    __slots__ = ("ok", "ftype", "length", "key", "payload", "error")

    def __init__(self, ok, ftype=None, length=None, key=None, payload=None, error=None):
        self.ok, self.ftype, self.length = ok, ftype, length
        self.key, self.payload, self.error = key, payload, error


def _frame_at(m, off, end):
    try:
        ftype, key, payload, length = F.read_frame(m, off, end)
    except F.FrameError as e:
        try:  # a sound header still says how long the frame is
            ftype, key, plen, _, hl = F.parse_header(m[off:off + F.HEADER_PEEK], end - off)
        except F.FrameError:
            return _Checked(False, error=str(e))
        return _Checked(False, ftype, hl + plen, key, error=str(e))
    if ftype == F.T_CHUNK and blake3.blake3(payload).digest() != key:
        return _Checked(False, ftype, length, key, error="chunk does not match its id "
                        "(BLAKE3)")
    return _Checked(True, ftype, length, key, payload)


def _segment_is_sound(m):
    try:
        F.decode_segment_header(m[:F.SEG_HEADER_LEN])
    except IntegrityError:
        return False
    off = F.SEG_HEADER_LEN
    while off < len(m):
        fr = _frame_at(m, off, len(m))
        if not fr.ok:
            return False
        off += fr.length
    return True


def _walk_segment(n, units, maps, rep, on_repair):
    live = [u for u in units if maps[(u.serial, n)] is not None]
    if not live:
        return
    ends = {u.serial: u.end_of(n, maps[(u.serial, n)]) for u in live}
    # Finished segments are the same size on both units; a shorter one lost its end.
    if len(live) == 2 and all(n < u.applied[0] for u in live):
        a, b = live
        if ends[a.serial] != ends[b.serial]:
            short, long_ = (a, b) if ends[a.serial] < ends[b.serial] else (b, a)
            rep.add(short, "short segment", f"segment {n} is {ends[short.serial]} bytes on "
                    f"{short.serial} and {ends[long_.serial]} on {long_.serial}", n,
                    ends[short.serial])
            short.damaged = True
    for u in live:
        m = maps[(u.serial, n)]
        try:
            segno, _ = F.decode_segment_header(m[:F.SEG_HEADER_LEN])
            if segno != n:
                raise IntegrityError("wrong segment number")
        except IntegrityError as e:
            _damaged(u, _other(live, u), n, 0, F.SEG_HEADER_LEN, f"segment header: {e}", maps,
                     rep, on_repair)
    common_end = min(ends[u.serial] for u in live)
    walking = {u.serial for u in live}
    off = F.SEG_HEADER_LEN
    while True:
        here = [u for u in live if u.serial in walking and off < ends[u.serial]]
        if not here:
            break
        checked = {u.serial: _frame_at(maps[(u.serial, n)], off, ends[u.serial]) for u in here}
        for u in here:
            c = checked[u.serial]
            if c.ok:
                continue
            sound = [x for x in here if x is not u and checked[x.serial].ok]
            peer = sound[0] if sound and off < common_end else None
            length = checked[peer.serial].length if peer else c.length
            if _damaged(u, peer, n, off, length, c.error, maps, rep, on_repair):
                checked[u.serial] = _frame_at(maps[(u.serial, n)], off, ends[u.serial])
            else:
                u.damaged = True
                if c.ftype != F.T_CHUNK:
                    u.chain_broken = True   # an event may be lost: later seqs cannot chain
                if length is None:
                    walking.discard(u.serial)   # no way to find the next frame on this side
        sound = [u for u in here if checked[u.serial].ok]
        if len(sound) == 2:
            a, b = sound
            la = checked[a.serial].length
            if la != checked[b.serial].length or \
                    maps[(a.serial, n)][off:off + la] != maps[(b.serial, n)][off:off + la]:
                rep.add(b, "diverged", f"segment {n} offset {off} holds another valid frame "
                        f"than on {a.serial}", n, off)
                b.damaged = True
                return
        for u in sound:
            c = checked[u.serial]
            rep.frames[u.serial] += 1
            _note_frame(u, n, off, c.ftype, c.key, c.payload, c.length, rep)
        lengths = [checked[u.serial].length for u in here
                   if checked[u.serial].length is not None]
        if not lengths:
            break
        off += lengths[0]


def _damaged(u, peer, n, off, length, why, maps, rep, on_repair):
    """Report damage at (n, off) on ``u``; repair it from ``peer`` if asked and possible.
    Returns whether it was repaired."""
    f = rep.add(u, "damaged", f"segment {n} offset {off}: {why}", n, off)
    if peer is None or length is None:
        f["detail"] += "; no sound copy on the other unit"
        return False
    if not (rep.repair and u.writable):
        f["detail"] += f" (a sound copy is on {peer.serial}: run 'wormfs scrub --repair')"
        return False
    good = bytes(maps[(peer.serial, n)][off:off + length])
    u.log.patch(n, off, good)
    m = u.log.map_file(n)
    old, maps[(u.serial, n)] = maps[(u.serial, n)], m
    if hasattr(old, "close"):
        old.close()
    if bytes(m[off:off + length]) != good:
        f["detail"] += "; the repair did not read back"
        return False
    f.update(repaired=True, length=length, source=peer.serial)
    on_repair(f)
    return True


def _note_frame(u, n, off, ftype, key, payload, length, rep):
    """Chain and index checks of one sound frame."""
    if ftype == F.T_DISPOSED:
        return  # what dispose left of a chunk: the index no longer knows it
    with u.ix.read() as txn:
        if ftype == F.T_CHUNK:
            loc = u.ix.chunk(txn, key)
            if loc is None:
                rep.add(u, "index", f"chunk {key.hex()[:16]} at segment {n} offset {off} is "
                        f"not in the index", n, off)
            elif (loc[0], loc[1]) == (n, off):
                u.chunks_placed += 1
                if loc[2] != length - F.FIXED_LEN - 32:
                    rep.add(u, "index", f"chunk {key.hex()[:16]}: the index has another "
                            f"length", n, off)
            elif (loc[0], loc[1]) > (n, off):
                rep.add(u, "index", f"chunk {key.hex()[:16]}: the index points past its "
                        f"first copy", n, off)
            return
        payload = bytes(payload)
        ev = E.decode(payload)
        if not u.chain_broken and (ev.get("seq") != u.chain_seq + 1
                                   or ev.get("prev") != u.chain_hash):
            rep.add(u, "chain", f"event chain broken at seq {ev.get('seq')} (expected "
                    f"{u.chain_seq + 1})", n, off)
            u.chain_broken = True
        u.chain_seq, u.chain_hash = ev.get("seq", 0), E.event_hash(payload)
        pos = u.ix.event_pos(txn, ev.get("seq", 0))
        if pos != (n, off):
            rep.add(u, "index", f"event {ev.get('seq')} is at segment {n} offset {off}, the "
                    f"index says {pos}", n, off)


def _check_index_totals(u, rep):
    if u.damaged:
        return  # the walk could not see everything: the damage is the finding
    if u.chain_seq != u.last_seq:
        rep.add(u, "index", f"the index has {u.last_seq} events, the log {u.chain_seq}")
    with u.ix.read() as txn:
        disposed_since = (u.ix.meta(txn, "last_dispose", 0) or 0) != u.last_dispose
    if disposed_since:
        # Chunks the walk counted may be gone from the index since, and chunks it has still
        # to reach gone from the log (redacted): the totals of two moments do not compare.
        rep.notes.append(f"{u.serial}: a disposal ran while the walk went on; the index's "
                         f"chunk count was not compared")
    elif u.stats and u.chunks_placed != u.stats.get("chunks"):
        rep.add(u, "index", f"the index lists {u.stats.get('chunks')} chunks, "
                f"{u.chunks_placed} were found where it says")


# -- records --------------------------------------------------------------------------------

def _records(u, first, last):
    """[(serial, inode)] of the records the unit's index holds with serials in [first, last]
    (deleted ones too, until disposal: their data is still there), from one read
    transaction that ends before their content is read."""
    with u.ix.read() as txn:
        return [(serial, u.ix.inode(txn, ino)) for serial, ino in u.ix.serials(txn, first, last)]


def _walk_records(units, rep, progress, cur, pause):
    """Every record from serial ``cur.next`` to ``cur.last_serial``, a window of serials at a
    time: on one unit, its records' content; on two, both units' in step and the mirror's
    against the primary's (parity). False if it paused before the end."""
    p, m = units[0], (units[1] if len(units) == 2 else None)
    if m is not None and cur.chains_agree is None:
        cur.chains_agree = _chains_agree(p, m, rep)
    while cur.next <= cur.last_serial:
        first, last = cur.next, min(cur.next + WINDOW - 1, cur.last_serial)
        if m is None:
            for serial, rec in _records(p, first, last):
                cur.done += _check_record(p, serial, rec, rep)
        else:
            _check_window(p, m, first, last, rep, cur)
        cur.next = last + 1
        progress(cur.done, cur.total)
        if cur.next <= cur.last_serial and pause():
            return False
    if m is not None and cur.chains_agree:
        _report_pending(p, m, rep)
    return True


def _check_window(p, m, first, last, rep, cur):
    mine, theirs = _Seen(_records(p, first, last)), _Seen(_records(m, first, last))
    for serial, rec, other in _in_step(mine, theirs):
        if rec is not None:
            cur.done += _check_record(p, serial, rec, rep)
        if other is not None:
            cur.done += _check_record(m, serial, other, rep)
        if cur.chains_agree:
            _compare_record(m, serial, rec, other, rep)
    # A serial whose inode is missing is left out of the walk in step; the record check
    # reports it.
    for u, seen in ((p, mine), (m, theirs)):
        for serial in seen.missing:
            _check_record(u, serial, None, rep)


def _check_record(u, serial, rec, rep):
    """A record's content, read from the unit's log, against its size and digest; returns
    the bytes it read."""
    if rec is None:
        rep.add(u, "record", f"record {serial} has no inode in the index")
        return 0
    if not rec.ever_sealed or rec.disposed:
        return 0  # a disposed record's data is gone on purpose (its dispose event says)
    rep.records[u.serial] += 1
    total, h = 0, blake3.blake3()
    try:
        with u.ix.read() as txn:
            pieces = [(length, cid, u.ix.chunk(txn, cid))
                      for _, length, cid in u.ix.manifest_from(txn, serial, 0)]
        for length, cid, loc in pieces:
            total += length
            if loc is None:
                raise IntegrityError(f"chunk {cid.hex()[:16]} is not in the index")
            h.update(u.log.read_chunk(loc[0], loc[1], cid, loc[2]))
    except IntegrityError as e:
        rep.add(u, "record", f"record {serial} ({rec.path}): {e}")
        return total
    if total != rec.size:
        rep.add(u, "record", f"record {serial} ({rec.path}): chunks add up to "
                f"{total} bytes, not {rec.size}")
    elif h.hexdigest() != rec.blake3:
        rep.add(u, "record", f"record {serial} ({rec.path}): content does not "
                f"match its digest")
    return total


def _skipped(u):
    """The refused events the unit keeps unapplied (a mirror, or a promoted one)."""
    if u.local is not None:
        return u.local.skipped_seqs()
    try:
        return skipped_seqs(u.path, read_unit(u.path))
    except (OSError, WormError):
        return frozenset()


def _replay_compare(u, rep):
    """Replay the unit's log into a scratch index, up to where the unit's index was at one
    moment (a read snapshot), and compare the two database by database: the index must be
    exactly what the log says (rebuild-index's promise, checked on the live unit)."""
    tmp = tempfile.mkdtemp(prefix="wormfs-verify-")
    scratch = Index(tmp)
    try:
        with u.ix.read() as snap:
            applied = tuple(u.ix.meta(snap, "applied") or (0, 0))
            try:
                apply_frames(Replayer(scratch, skip=_skipped(u)), itertools.takewhile(
                    lambda fr: (fr.segno, fr.offset) < applied, u.log.scan()))
            except F.FrameError as e:
                if (e.segno, e.offset) < applied:
                    return  # damage: the walk reported it
            # An index an older wormfs made (read-only here, so not upgraded yet) lacks
            # what a replay now adds: those tables, and meta's "layout".
            old = u.ix.layout(snap) < LAYOUT
            with scratch.read() as mine:
                for name in DBS:
                    if not u.ix.has_table(name):
                        continue
                    theirs = scratch.items(mine, name)
                    if old and name == "meta":
                        theirs = (kv for kv in theirs if kv[0] != b"layout")
                    for a, b in itertools.zip_longest(u.ix.items(snap, name), theirs):
                        if a != b and not (name == "inodes" and _same_inode(a, b)):
                            key = (a or b)[0]
                            rep.add(u, "index", f"the index differs from a replay of the log in "
                                    f"'{name}' at key {bytes(key).hex()[:40]}")
                            break
    finally:
        scratch.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _same_inode(a, b):
    """Whether two (key, stored inode) entries say the same: an inode written before the
    binary record is JSON, and the replay writes the binary record (inode.py); both forms
    of one record are equal once read."""
    if a is None or b is None or a[0] != b[0]:
        return False
    try:
        return Inode.from_bytes(bytes(a[1])) == Inode.from_bytes(bytes(b[1]))
    except (ValueError, KeyError, TypeError, struct.error):
        return False


def _check_local_chain(u, rep):
    seq, prev = 0, E.GENESIS
    try:
        for ev, h in u.local.events_with_hashes():
            if ev.get("seq") != seq + 1 or ev.get("prev") != prev:
                rep.add(u, "chain", f"the unit's own chain (local/) is broken at seq "
                        f"{ev.get('seq')}")
                return
            seq, prev = ev["seq"], h
    except IntegrityError as e:
        rep.add(u, "chain", f"the unit's own chain (local/) is damaged: {e}")


# -- across the units -----------------------------------------------------------------------

def _in_step(mine, theirs):
    """(serial, primary's inode or None, mirror's inode or None) for every serial either
    side lists, in serial order, from two (serial, inode) streams in that order. A serial
    whose inode is missing on a side counts as not listed there (_check_window reports
    it)."""
    mine = ((s, r) for s, r in mine if r is not None)
    theirs = ((s, r) for s, r in theirs if r is not None)
    a, b = next(mine, None), next(theirs, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[0], a[1], None
            a = next(mine, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(theirs, None)
        else:
            yield a[0], a[1], b[1]
            a, b = next(mine, None), next(theirs, None)


def _chains_agree(p, m, rep):
    """Whether the mirror's chain is a prefix of the primary's (else a parity finding, and
    its records are not compared: they cannot be expected to match)."""
    if m.chain_seq > p.chain_seq:
        rep.add(m, "parity", f"the mirror holds {m.chain_seq} events, the primary "
                f"{p.chain_seq}")
        return False
    if m.chain_seq:
        try:
            mine = event_hash_at(p.log, p.ix, m.chain_seq)
        except (IntegrityError, StopIteration):
            mine = None  # the damage is reported by the walk
        if mine is not None and mine != m.chain_hash:
            rep.add(m, "parity", f"the mirror's chain differs from the primary's at "
                    f"event {m.chain_seq}")
            return False
    return True


class _Seen:
    """A (serial, inode) stream that notes the serials whose inode is missing."""

    def __init__(self, pairs):
        self.pairs, self.missing = pairs, []

    def __iter__(self):
        for serial, rec in self.pairs:
            if rec is None:
                self.missing.append(serial)
            yield serial, rec


def _compare_record(m, serial, rec, other, rep):
    """One serial's record on the primary (``rec``) against the mirror's (``other``)."""
    if rec is not None and not rec.ever_sealed:
        rec = None  # not a record on the primary: only records are compared
    if rec is None:
        if other is not None:
            rep.add(m, "parity", f"record {serial} is on the mirror but not on the primary")
    elif other is None:
        if (rec.seal_seq or 0) > m.chain_seq:
            rep.pending += 1
        else:
            rep.add(m, "parity", f"record {serial} ({rec.path}) is not on the mirror")
    else:
        for field in ("blake3", "size", "state"):
            if getattr(rec, field) != getattr(other, field):
                rep.add(m, "parity", f"record {serial}: {field} differs between the units")
                break


def _report_pending(p, m, rep):
    if rep.pending:
        rep.add(m, "pending", f"{rep.pending} records are not on the mirror yet (it is "
                f"{p.chain_seq - m.chain_seq} events behind)")


def restore_missing_tail(unit_path, unit):
    """A primary whose open segment (and any segment after its last finished one) is gone,
    while its mirror on this host holds them: copy them back, each checked frame by frame,
    before the log is opened (the log would otherwise start an empty segment there and the
    index would point past its end). Returns [(segno, length)] restored; IntegrityError if
    the mirror's copy is damaged (nothing is restored then)."""
    peer = unit.get("peer_path")
    if unit.get("role") != "primary" or not peer or is_s3(peer):
        return []
    mine_dir, theirs_dir = os.path.join(unit_path, "segments"), os.path.join(peer, "segments")
    try:
        mine, theirs = dict(segment_files(mine_dir)), dict(segment_files(theirs_dir))
    except OSError:
        return []
    if any(name.endswith(".open") for name in mine.values()):
        return []
    top = max(mine, default=0)
    extra = sorted(n for n in theirs if n > top)
    copies = []
    for n in extra:
        with open(os.path.join(theirs_dir, theirs[n]), "rb") as f:
            data = f.read()
        if not _segment_is_sound(memoryview(data)):
            raise IntegrityError(f"segment {n} is missing here and the mirror's copy at "
                                 f"{theirs_dir} is damaged; nothing was restored")
        copies.append((n, theirs[n].endswith(".open") and n == extra[-1], data))
    restored = []
    for n, still_open, data in copies:
        final = os.path.join(mine_dir, seg_name(n, open_=still_open))
        tmp = os.path.join(mine_dir, f"{n:010d}.repair")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600 if still_open else 0o400)
        os.rename(tmp, final)
        fsync_dir(mine_dir)
        if not still_open:
            set_immutable(final, True)
        restored.append((n, len(data)))
    return restored
