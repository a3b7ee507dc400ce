"""The record store of one unit: the Python API the FUSE layer and the commands call.

``Store`` keeps the namespace and the WORM policy: it decides what may change and says so in
events. The parts it is made of own their state: the journal (journal.py) appends every
event and applies it to the index, under its lock, with the chain head; the reader
(reader.py) serves records; an open file's staged bytes and chunk stream are openfiles.py's
(sealstream.py chunks); spares.py keeps staging files ready; duplicate.py is the primary's
side of its mirror, which it reaches through replication.py's hooks.

Concurrency (the FUSE layer calls from worker threads):
- the journal's lock (``_wlock`` here) serializes appends, index writes and the table of open
  files. Held briefly: chunking and hashing happen outside it; a seal takes it once per batch
  of new chunks and once for its seal event.
- Durability is by group commit (commit.py): callers that need it wait for one shared
  fdatasync after releasing the lock.
- Reads take LMDB read transactions and pread; they never take ``_wlock``.

Refusals: every operation WORM forbids appends a ``refused`` event and raises ``Refused``.
"""
import functools
import fnmatch
import logging
import os
import re
import threading
import time

from .. import _chunker, retention
from ..clock import (CHECKPOINT_INTERVAL_US, CLOCK_SKEW_WAIT_US, ComplianceClock,
                     SystemTimeSource)
from ..errors import (Exists, InvalidValue, IsADirectory, NameTooLong,
                      NoSuchAttribute, NotADirectory, NotEmpty, NotFound, Refused, StoreError,
                      WormError, FileTooBig)
from ..timeutil import format_us, parse_date
from . import events as E
from . import frames as F
from .combiner import Combiner
from .commit import GroupCommit
from .hostfs import tighten, try_lock, unlink_quiet
from .inode import State
from .duplicate import Duplicate
from .journal import Change, Journal
from .openfiles import OpenFile, stream_staged
from . import disposal
from .maintenance import (catch_up, close_index, event_at, event_hash_at, open_index,
                          torn_tail_text)
from . import heads
from .heads import HeadKeeper
from .localchain import LocalChain, skipped_seqs
from . import reserve as space_reserve
from . import replication
from .reader import RecordReader
from .replay import ROOT_INO, Replayer
from .sealstream import SealStream
from .spares import Spares
from .segments import SegmentLog
from .unit import log_uuid_bytes, read_unit

log = logging.getLogger("wormfs.store")

DEFAULT_SCRATCH_PATTERNS = [".*.??????", "*.tmp", "~$*", ".~lock.*#", ".*.sw?"]
DEFAULT_SCRATCH_TTL = "24h"
MAX_STREAMS = 64  # open files chunked as they are written; more wait for the seal
HOLD_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_NAME = 255
MAX_FILE_SIZE = 1 << 44  # 16 TiB: beyond it ext4 (the usual staging file system) cannot go
MAX_REASON = 1024
RESERVED_NAME = b".wormfs"  # at the root: wormfs's own directory (recovered/ in it)


def check_name(name):
    if not isinstance(name, bytes):
        name = os.fsencode(name)
    if len(name) > MAX_NAME:
        raise NameTooLong(f"name longer than {MAX_NAME} bytes")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise InvalidValue(f"bad file name {name!r}")
    return name


class Store:
    def __init__(self, path, *, time_source=None, readonly=False, mirror_time_source=None):
        """Open a unit. A writable primary with a mirror connects to it and catches it up
        (mirror/shipper.py); ``mirror_time_source`` is the mirror's clock, for tests."""
        self.path = os.path.abspath(path)
        self.unit = read_unit(self.path)
        self.readonly = readonly
        self._open = {}
        self._sealing = set()
        # Its own lock, not the journal's: a seal's start and end wait behind no other
        # seal's commit (readers test membership without it).
        self._sealing_lock = threading.Lock()
        self._sealer = Combiner(self._seal_batch)
        self._lockfd = None
        self.recovered_tail = None
        self.mirror = None     # the replicator (mirror/shipper.py), for who asks it directly
        self.duplicate = None  # what the store does around it (duplicate.py)
        self.disposals = 0  # dispose runs in this process (disposal.py): seals re-check
        self.disposing = threading.RLock()  # one dispose run (or finish) at a time
        self.dispose_pending = None  # a dispose event the primary has not destroyed yet
        self.params = _chunker.Params(**self.unit["chunking"]) if self.unit.get("chunking") \
            else _chunker.Params()
        self.staging = os.path.join(self.path, "staging")
        self.spares = Spares(self.staging)
        # Set by the mount: whether a file still has open handles. Such a file keeps its
        # staged bytes when its name goes away, until ``discard``.
        self.keep_open = lambda ino: False
        if not readonly:
            self._take_lock()
            tighten(self.path)  # a unit an older wormfs made world-readable
            space_reserve.ensure(self.path)
        try:
            self._open_parts(time_source)
            if not readonly and self.unit.get("role") == "primary" and \
                    replication.has_duplicate(self.unit):
                self._attach_mirror(mirror_time_source)
            if not readonly:
                self.spares.adopt({str(ino) for ino, _ in self.unsealed()})
            if not readonly and self.journal.last_seq:
                self.tick()
        except BaseException:
            self.spares.close()
            self._release_lock()
            raise

    # -- opening and closing --------------------------------------------------------------

    def _take_lock(self):
        self._lockfd = try_lock(os.path.join(self.path, "lock"))
        if self._lockfd is None:
            raise StoreError(f"{self.path} is in use by another wormfs process (mounted?)")

    def _release_lock(self):
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None

    def _open_parts(self, time_source):
        uuid_bytes = log_uuid_bytes(self.unit)
        restored = []
        if not self.readonly and replication.has_duplicate(self.unit):
            restored = replication.hooks().restore_missing_tail(self.path, self.unit)
        self.log = SegmentLog(os.path.join(self.path, "segments"), uuid_bytes,
                              self.unit["segment_size"], readonly=self.readonly)
        boot_id = (time_source or SystemTimeSource()).boot_id()
        self.ix, lost_cache = open_index(self.path, boot_id, readonly=self.readonly)
        self.reader = RecordReader(self.log, self.ix, self._repair_chunk)
        # A promoted mirror's log may hold events it refused: its replays skip them too.
        self.replay = Replayer(self.ix, skip=skipped_seqs(self.path, self.unit))
        self.group = GroupCommit(self.log.sync) if not self.readonly else None
        self._open_local()
        if not self.readonly:
            self.recovered_tail = catch_up(
                self.log, self.ix, self.replay, os.path.join(self.path, "quarantine"),
                lost_cache=lost_cache, durable_seq=self.heads.seq if self.heads else 0)
            self.log.sync()  # what a dead process left in the page cache counts from now
            self.group.durable_pos = self.log.end_position()
            if not (self.unit.get("role") == "primary"
                    and replication.has_duplicate(self.unit)):
                # A primary with a duplicate finishes once the duplicate is attached and
                # holds the dispose event (disposal.finish_pending).
                disposal.finish_last(self.log, self.ix,
                                     lambda seq: event_at(self.log, self.ix, seq))
        with self.ix.read() as txn:
            floor = self.ix.meta(txn, "last_time", 0)
            checkpoint = self.ix.meta(txn, "clock_checkpoint")
        # The log's checkpoint is the clock's truth; clock.json only a cache (clock.py).
        self.server_clock = (replication.hooks().server_clock(self.unit)
                             if not self.readonly and replication.has_duplicate(self.unit)
                             else None)
        self.clock = ComplianceClock(os.path.join(self.path, "clock.json"), time_source,
                                     floor_us=floor, persist=not self.readonly,
                                     checkpoint=checkpoint, server=self.server_clock)
        self._checkpointed = checkpoint[0] if checkpoint else None
        self.journal = Journal(self.path, self.log, self.ix, self.replay, self.group,
                               self.clock, readonly=self.readonly)
        self._wlock = self.journal.lock  # the store's open files change under it too
        self._opened_at = self.clock.now()
        if not self.readonly and self.journal.last_seq and self.recovered_tail:
            t = self.recovered_tail
            log.warning("%s", torn_tail_text(t))
            self.journal.event_now("torn_tail", segment=t.segno, offset=t.offset,
                                   bytes=t.nbytes,
                                   quarantine=os.path.relpath(t.qpath, self.path),
                                   sound_after=t.sound_after)
        self.reserved_ino = None
        for segno, length in restored:
            log.warning("segment %s was missing; copied back from the mirror %s (%s bytes)",
                        segno, self.unit.get("peer_serial"), length)
            self.journal.event_now("repair", durable=True, unit=self.unit["serial"],
                                   segment=segno, offset=0, length=length,
                                   source=self.unit.get("peer_serial"), cause="open",
                                   detail=f"segment {segno} was missing; copied from the mirror")
        if not self.readonly and self.journal.last_seq:
            # A restart or a clock jump noticed at open goes on record now; the checkpoint
            # waits until the mirror is attached (it then ships with the next seal).
            self.tick(allow_checkpoint=False)
            if self.unit.get("role") == "primary":
                self._ensure_reserved()

    def _open_local(self):
        """The unit's own chain (local/): on a primary, the heads its mirror acknowledged
        (heads.py); a promoted mirror's keeps what it held as a mirror too."""
        path = os.path.join(self.path, "local")
        self.local = self.heads = None
        self._serial_floor = 1
        uuid = bytes.fromhex(self.unit["uuid"].replace("-", ""))
        if self.readonly:
            if os.path.isdir(path):
                self.local = LocalChain(path, uuid, readonly=True)
        elif self.unit.get("role") == "primary":
            self.local = LocalChain(path, uuid)
            self.heads = HeadKeeper(self.local, "peer_head")
        if self.local is not None and self.local.last_head:
            self._serial_floor = int(self.local.last_head.get("next_serial") or 1)

    def tamper_problems(self):
        """One line each for status and verify: unit files that disagree with the log."""
        out = []
        info = self.unit_info() or {}
        if info.get("mode") and self.unit.get("mode") != info["mode"]:
            out.append(f"unit.json says mode {self.unit.get('mode')!r} but the log (unit_init) "
                       f"says {info['mode']!r}: unit.json was edited outside wormfs; wormfs "
                       f"acts on the log's mode (see OPERATIONS.md 'Tampering')")
        out += heads.problems(self.local, self.log, self.ix)
        return out

    def _attach_mirror(self, time_source):
        self.mirror = replication.hooks().replicator(
            self.log, self.group, self.unit, self.path, time_source, self.server_clock,
            self.clock.now, lambda seq: event_hash_at(self.log, self.ix, seq))
        self.duplicate = Duplicate(self.mirror, journal=self.journal, unit=self.unit,
                                   heads=self.heads, serial_floor=self._serial_floor,
                                   settings=self.settings)
        self.journal.after_durable = self.duplicate.after_durable
        self.duplicate.connect()
        disposal.finish_pending(self)

    def mirror_poll(self):
        """Keep the mirror up (duplicate.py): the mount calls this every few seconds."""
        if self.duplicate is not None and not self.failed:
            self.duplicate.poll()
            if self.dispose_pending is not None:
                disposal.finish_pending(self)

    def mirror_state(self):
        """(state, reason, behind_since_us) of the mirror as this process sees it."""
        if self.duplicate is None:
            return ("none", "no mirror", None)
        return self.duplicate.state()

    def record_mirror_status(self, rec):
        """user.worm.mirror of a record: 'synced' once the mirror holds its seal."""
        if self.unit.get("role") == "mirror":
            return "synced"
        if self.mirror is not None:
            return "synced" if self.mirror.is_synced(rec.seal_seq) else "pending"
        if not replication.has_duplicate(self.unit):
            return "pending"
        saved = replication.hooks().saved_state(self.path)
        seq = rec.seal_seq
        return "synced" if seq is not None and seq <= saved.get("acked_seq", 0) else "pending"

    def close(self):
        if getattr(self, "log", None) is None:
            return
        if self.duplicate is not None:
            self.duplicate.close()
        if not self.readonly:
            with self._wlock:
                for of in list(self._open.values()):
                    os.close(of.fd)
                self._open.clear()
                self.spares.close()
                try:
                    self.log.sync()
                    self.clock.persist()
                    close_index(self.path, self.ix)
                except OSError:
                    pass
        self.ix.close()
        self.log.close()
        if self.local is not None:
            self.local.close()
        self.log = None
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- appending events -----------------------------------------------------------------

    def _check_writable(self):
        self.journal.check_writable()  # read-only, or stopped after an error

    @property
    def failed(self):
        """Why this store stopped taking changes (None while it takes them)."""
        return self.journal.failed

    def transact(self, fn, durable=False, essential=False):
        """Run ``fn(change)`` (a journal.Change) in one index transaction under the write lock and
        return what it returns. Its events are durable on both units on return if
        ``durable``; ``essential`` changes (deletions, holds, disposal) may use the space
        reserve. If ``fn`` raises, nothing it appended stays in the log."""
        return self.journal.mutate(lambda txn: fn(Change(self.journal, self.path_of, txn)),
                                   durable=durable, reserve=essential)

    def streamed_chunk_ids(self):
        """Chunk ids held by files still being written in this process (disposal keeps
        them: a seal will refer to them)."""
        keep = set()
        for of in list(self._open.values()):
            st = of.stream
            if st is not None:
                keep.update(cid for _, cid in list(st.chunks))
        return keep

    def refuse(self, op, reason, actor=None, ino=None, path=None, errno_name="EPERM",
               exc=Refused):
        """Audit a refused operation, then raise ``exc(reason)`` (Refused: EPERM)."""
        fields = {"op": op, "reason": reason, "errno": errno_name}
        if ino is not None:
            fields["ino"] = ino
            rec = self._inode(ino)
            if rec is not None:
                if rec.serial is not None:
                    fields["serial"] = rec.serial
                fields["path"] = path or self.path_of(ino)
        elif path is not None:
            fields["path"] = path
        if not self.readonly and not self.failed:
            self.journal.event_now("refused", actor, **fields)
        raise exc(reason)

    def note(self, etype, actor=None, **fields):
        """Record an event that changes nothing in the index (mount, unmount), durably."""
        return self.journal.event_now(etype, actor, durable=True, **fields)

    # -- reading the index ----------------------------------------------------------------

    def _inode(self, ino, txn=None):
        if txn is not None:
            return self.ix.inode(txn, ino)
        with self.ix.read() as t:
            return self.ix.inode(t, ino)

    def inode(self, ino, txn=None, listing=False):
        """The Inode (inode.py), with the live size and times of an open file: the caller's
        own copy. ``listing`` (with ``txn``): only its stat fields (Index.listing_inode)."""
        rec = self.ix.listing_inode(txn, ino) if listing else self._inode(ino, txn)
        of = self._open.get(ino)
        if rec is None and of is not None and of.orphan is not None:
            rec = of.orphan.copy(orphan=True)
        if rec is None or rec.state is State.DELETED:
            raise NotFound(f"no inode {ino}")
        if of is not None:
            rec.size = of.size
            if of.mtime is not None:
                rec.mtime = of.mtime
            if of.atime is not None:
                rec.atime = of.atime
            if of.ctime is not None:
                rec.ctime = of.ctime
        return rec

    def lookup(self, parent, name):
        name = check_name(name)
        with self.ix.read() as txn:
            prec = self.ix.inode(txn, parent)
            if prec is None:
                raise NotFound(f"no directory inode {parent}")
            if not prec.is_dir:
                raise NotADirectory(f"inode {parent} is not a directory")
            hit = self.ix.lookup(txn, parent, name)
        if hit is None:
            raise NotFound(f"{os.fsdecode(name)} not found")
        return self.inode(hit[0])

    def readdir(self, ino, after_cookie=0, limit=None):
        """List (cookie, name, inode) after ``after_cookie``, at most ``limit`` of them;
        cookies only grow, so a listing resumes exactly where it stopped. Each inode is a
        listing's view (its stat fields only: Inode.from_bytes ``listing``)."""
        with self.ix.read() as txn:
            rec = self.ix.inode(txn, ino)
            if rec is None:
                raise NotFound(f"no inode {ino}")
            if not rec.is_dir:
                raise NotADirectory(f"inode {ino} is not a directory")
            entries = []
            for c, n, i in self.ix.list_dir(txn, ino, after_cookie):
                entries.append((c, n, self.inode(i, txn, listing=True)))
                if limit is not None and len(entries) >= limit:
                    break
        return entries

    def unsealed(self):
        """(ino, state) of every file that is not a record yet."""
        with self.ix.read() as txn:
            return list(self.ix.unsealed(txn))

    def path_of(self, ino, txn=None):
        """The path of an inode from the root, as str ('/' for the root)."""
        parts = []
        own = txn is None
        txn = txn or self.ix.read()
        try:
            while ino != ROOT_INO:
                rec = self.ix.inode(txn, ino)
                if rec is None:
                    return None
                parts.append(rec.name)
                ino = rec.parent
        finally:
            if own:
                txn.abort()
        return "/" + "/".join(reversed(parts))

    def resolve(self, path):
        """The inode dict at a path inside the store ('/a/b')."""
        rec = self.inode(ROOT_INO)
        for part in [p for p in path.split("/") if p]:
            rec = self.lookup(rec.ino, os.fsencode(part))
        return rec

    def settings(self):
        with self.ix.read() as txn:
            return self.ix.meta(txn, "settings")

    def last_verification(self):
        with self.ix.read() as txn:
            return self.ix.meta(txn, "last_verify")

    def scrub_resume(self):
        """The cursor of a scrub pass in pieces not finished yet (mirror/scrubcursor.py), or
        None. It is read from the log, from the event of the pass's last piece: the index
        keeps only that event's seq, so an index edited behind the daemon's back cannot hand
        the scrub a cursor the chain does not hold, and one that points at a piece of a pass
        that has ended (before ``scrub_ended``, or older than the last whole verification)
        is not taken: it could only make the walk skip what it has not read."""
        with self.ix.read() as txn:
            seq = self.ix.meta(txn, "scrub_resume")
            last = self.ix.meta(txn, "last_verify")
            ended = self.ix.meta(txn, "scrub_ended")
        if type(seq) is not int or (type(ended) is int and seq < ended):
            return None
        try:
            ev = event_at(self.log, self.ix, seq)
            before = parse_date(last["time"]) if last else None
        except (WormError, KeyError, TypeError):
            return None
        if not isinstance(ev, dict) or ev.get("seq") != seq or \
                ev.get("type") not in ("scrub", "verify") or \
                not isinstance(ev.get("resume"), dict) or type(ev.get("time_us")) is not int:
            return None
        if before is not None and ev["time_us"] < before:
            return None
        return ev["resume"]

    def unit_info(self):
        with self.ix.read() as txn:
            return self.ix.meta(txn, "unit")

    def stats(self):
        with self.ix.read() as txn:
            return self.ix.meta(txn, "stats") or {"records": 0, "logical_bytes": 0,
                                                  "chunks": 0, "stored_bytes": 0}

    def now(self):
        return self.clock.now()

    def tick(self, allow_checkpoint=True):
        """Read the clock and write any anomaly it noticed into the audit trail, and a clock
        checkpoint when one is due (every CHECKPOINT_INTERVAL_US). The
        mount calls this periodically, so an idle store still records a clock jump
        promptly and its clock state stays in the log."""
        if self.readonly or self.failed:
            return
        if space_reserve.in_use(self.path):
            space_reserve.ensure(self.path)  # back as soon as there is room
        now = self.clock.now(strict=True)
        due = allow_checkpoint and (
            self._checkpointed is None or now - self._checkpointed >= CHECKPOINT_INTERVAL_US)
        if self.clock.anomalies or due:
            self.journal.mutate(self._append_checkpoint, durable=True, reserve=True)

    def _append_checkpoint(self, txn):
        now = self.clock.now()
        self.journal.append_anomalies(txn, now)
        self.journal.append_at(txn, now, "clock", None, dict(
            kind="checkpoint", readings=self.clock.readings().as_fields()))
        self._checkpointed = now

    def clock_problems(self):
        """One line each for status and verify: what is wrong with the compliance clock."""
        out = []
        with self.ix.read() as txn:
            trouble = self.ix.meta(txn, "clock_trouble")
            edited = self.ix.meta(txn, "clock_file")
        if self.clock.file_problem or edited:
            what = self.clock.file_problem or f"{edited[1]} (event {edited[0]})"
            out.append(f"{what}; the log's clock checkpoint is used (see OPERATIONS.md "
                       f"'The clock')")
        why = self.clock.unsettled or (trouble[1] if trouble else None)
        if why:
            out.append(f"the compliance clock is not trusted: {why}; deletions and disposal "
                       f"are refused until its sources agree (see OPERATIONS.md 'The clock')")
        return out

    def clock_refusal(self, op, actor, **where):
        """Refuse (EPERM, audited) a deletion while the compliance clock's sources disagree
        (SPEC "Compliance clock"): the time it would be judged by is in doubt."""
        why = self.clock.why_unsettled()
        if why is not None:
            # The refusal's event carries the clock's anomalies before it (Journal.append).
            self.refuse(op, f"deletions wait until the compliance clock's sources agree "
                        f"again: {why}", actor, **where)

    def peer_deletion_time(self, op, actor, **where):
        """The compliance time by which the connected duplicate judges a deletion, or None
        (no duplicate, or none connected: it judges again when it catches up). The mirror
        checks every delete and dispose against its own clock (mirror/rules.py); after a
        power cut the two clocks can differ by seconds (each resumes from what it had made
        durable), and a deletion made by the later one would be refused there and leave
        the units disagreeing about the record for good. So deletions go by the earlier of
        the two. Refused (EPERM, audited) while the duplicate's clock sources disagree."""
        if self.mirror is None:
            return None
        peer = self.mirror.peer_clock()
        if peer is None:
            return None
        now, why = peer
        if why is not None:
            self.refuse(op, f"deletions wait until the mirror's compliance clock's sources "
                        f"agree again: {why}", actor, **where)
        return now

    def _expired_on_peer(self, op, rec, now, actor):
        """The time to judge the deletion of ``rec`` by (``now``, this unit's, or the
        duplicate's if earlier); refused if the duplicate's clock has not reached the
        retain-until. A few seconds short is waited for, as the mirror itself would."""
        peer = self.peer_deletion_time(op, actor, ino=rec.ino)
        if peer is not None and not retention.expired(rec.retention, peer):
            kind, until = retention.effective(rec.retention)
            wait = (until or 0) - peer
            if kind == "until" and 0 < wait <= CLOCK_SKEW_WAIT_US:
                time.sleep(wait / 1e6 + 0.001)
                peer = self.peer_deletion_time(op, actor, ino=rec.ino)
            if peer is not None and not retention.expired(rec.retention, peer):
                self.refuse(op, f"the record is retained until "
                            f"{retention.display(rec.retention)} by the mirror's compliance "
                            f"clock ({format_us(peer)}; this unit's reads {format_us(now)})",
                            actor, ino=rec.ino)
        return now if peer is None else min(now, peer)

    # -- permissions ----------------------------------------------------------------------

    def is_admin(self, actor):
        if actor is None or actor.uid == 0:
            return True
        gid = (self.unit_info() or {}).get("admin_gid")
        return gid is not None and (actor.gid == gid or gid in actor.groups)

    def is_scratch(self, name):
        patterns = (self.settings() or {}).get("scratch_patterns", DEFAULT_SCRATCH_PATTERNS)
        return _scratch_matcher(tuple(patterns))(os.fsdecode(name)) is not None

    # -- the reserved /.wormfs ---------------------------------------------------------------

    def _ours(self, rec):
        """A directory wormfs made itself (no process asked for it), owned by root."""
        return rec is not None and rec.is_dir and rec.uid == 0 and \
            rec.creator is None

    def _ensure_reserved(self):
        """Find or make the root-owned /.wormfs (with recovered/ in it). A store whose
        /.wormfs was taken by a user before the name was reserved keeps that entry and uses
        the first free /.wormfs.N instead (``reserved_problem`` says so in status)."""
        for n in range(0, 100):
            name = RESERVED_NAME if n == 0 else RESERVED_NAME + b".%d" % n
            try:
                rec = self.lookup(ROOT_INO, name)
            except NotFound:
                rec = self.mkdir(ROOT_INO, name, 0o755, None, _reserved_ok=True)
            if self._ours(rec):
                break
        else:
            raise StoreError("no name for the reserved directory: /.wormfs to /.wormfs.99 "
                             "are all taken")
        self.reserved_ino = rec.ino
        try:
            self.lookup(rec.ino, b"recovered")
        except NotFound:
            self.mkdir(rec.ino, b"recovered", 0o755, None, _reserved_ok=True)

    def reserved_problem(self):
        """What status says when /.wormfs is not wormfs's own directory, else None."""
        try:
            rec = self.lookup(ROOT_INO, RESERVED_NAME)
        except NotFound:
            return None
        if self._ours(rec):
            return None
        if rec.serial:
            what = f"record {rec.serial}"
        else:
            what = "a directory" if rec.is_dir else "a file"
        return (f"/.wormfs is {what} a user made before the name was reserved; files "
                f"recovered after a crash go to /.wormfs.N/recovered/ instead")

    def _is_reserved(self, ino):
        """The reserved directory or its recovered/."""
        if self.reserved_ino is None:
            return False
        if ino == self.reserved_ino:
            return True
        rec = self._inode(ino)
        return rec is not None and rec.parent == self.reserved_ino and \
            rec.name == "recovered" and self._ours(rec)

    def _check_reserved_name(self, parent, name, op, actor):
        """Nobody creates, or renames onto, the name /.wormfs (SPEC)."""
        if parent == ROOT_INO and name == RESERVED_NAME:
            self.refuse(op, "/.wormfs is reserved for wormfs", actor,
                        path="/" + os.fsdecode(name))

    def _check_not_reserved(self, ino, op, actor):
        if self._is_reserved(ino):
            self.refuse(op, f"{self.path_of(ino)} is reserved for wormfs", actor, ino=ino)

    # -- directories ----------------------------------------------------------------------

    def _dir(self, txn, ino):
        rec = self.ix.inode(txn, ino)
        if rec is None:
            raise NotFound(f"no inode {ino}")
        if not rec.is_dir:
            raise NotADirectory(f"inode {ino} is not a directory")
        return rec

    def _new_ino(self, txn):
        return self.ix.meta(txn, "next_ino")

    def mkdir(self, parent, name, mode, actor, _reserved_ok=False):
        name = check_name(name)
        if not _reserved_ok:
            self._check_reserved_name(parent, name, "mkdir", actor)

        def fn(txn):
            self._dir(txn, parent)
            if self.ix.lookup(txn, parent, name) is not None:
                raise Exists(f"{os.fsdecode(name)} exists")
            ino = self._new_ino(txn)
            self.journal.append(txn, "mkdir", actor, ino=ino, parent=parent,
                                name=E.name_str(name), mode=mode & 0o7777,
                                uid=actor.uid if actor else 0, gid=actor.gid if actor else 0)
            return ino
        return self.inode(self.journal.mutate(fn))

    def rmdir(self, parent, name, actor):
        name = check_name(name)
        with self.ix.read() as txn:
            hit = self.ix.lookup(txn, parent, name)
            if hit is None:
                raise NotFound(f"{os.fsdecode(name)} not found")
            rec = self.ix.inode(txn, hit[0])
            if not rec.is_dir:
                raise NotADirectory(f"{os.fsdecode(name)} is not a directory")
            empty = self.ix.dir_is_empty(txn, rec.ino)
        self._check_not_reserved(rec.ino, "rmdir", actor)
        if not empty:
            if self._holds_records(rec.ino):
                self.refuse("rmdir", "the directory holds records", actor, ino=rec.ino)
            raise NotEmpty(f"{os.fsdecode(name)} is not empty")

        def fn(txn):
            h = self.ix.lookup(txn, parent, name)
            if h is None or h[0] != rec.ino or not self.ix.dir_is_empty(txn, rec.ino):
                raise NotEmpty(f"{os.fsdecode(name)} changed; try again")
            self.journal.append(txn, "rmdir", actor, ino=rec.ino, parent=parent,
                                name=E.name_str(name))
        self.journal.mutate(fn)

    def _holds_records(self, dir_ino):
        with self.ix.read() as txn:
            return self.ix.holds_records(txn, dir_ino)

    def set_dir_retention(self, ino, value, actor):
        text = retention.parse_default(value)
        rec = self.inode(ino)
        if not rec.is_dir:
            raise InvalidValue("user.worm.retention is set on directories; use "
                               "user.worm.retain_until on files")
        if not self.is_admin(actor):
            self.refuse("set_dir_retention", "only a records admin may set a directory's "
                        "default retention", actor, ino=ino)
        self.journal.mutate(lambda txn: self.journal.append(
            txn, "dir_retention", actor, ino=ino, path=self.path_of(ino, txn), value=text,
            before=rec.retention), durable=True, reserve=True)

    # -- files before they are records ----------------------------------------------------

    def create(self, parent, name, mode, actor):
        """Create an open file (or a scratch file, by name). Re-creating the name of a
        record is refused (R4)."""
        name = check_name(name)
        self._check_reserved_name(parent, name, "create", actor)
        with self.ix.read() as txn:
            self._dir(txn, parent)
            hit = self.ix.lookup(txn, parent, name)
            existing = self.ix.inode(txn, hit[0]) if hit else None
        if existing is not None:
            if existing.sealed:
                self.refuse("create", "a record with this name exists", actor,
                            ino=existing.ino)
            raise Exists(f"{os.fsdecode(name)} exists")
        state = State.SCRATCH if self.is_scratch(name) else State.OPEN
        if self.duplicate is not None:
            self.duplicate.check_lag()

        made = []  # (ino, fd) once the staging file exists, to undo if the commit fails

        def fn(txn):
            if self.ix.lookup(txn, parent, name) is not None:
                raise Exists(f"{os.fsdecode(name)} exists")
            ino = self._new_ino(txn)
            path = os.path.join(self.staging, str(ino))
            fd = self.spares.take(path)
            if fd is None:
                unlink_quiet(path)  # whatever is there (a link, say) is not followed
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            made.append((ino, fd))
            self.journal.append(txn, "create", actor, ino=ino, parent=parent,
                                name=E.name_str(name), mode=mode & 0o7777, state=state.value,
                                uid=actor.uid if actor else 0, gid=actor.gid if actor else 0)
            # Registered under the write lock, like a reopen in _open_file.
            of = self._open[ino] = OpenFile(ino, made[0][1], 0, self._new_stream())
            of.touched = self.clock.src.boot_us()
            return ino
        try:
            ino = self.journal.mutate(fn)
        except BaseException:
            for ino, fd in made:
                with self._wlock:
                    if self._open.get(ino) is not None and self._open[ino].fd == fd:
                        del self._open[ino]
                os.close(fd)
                unlink_quiet(os.path.join(self.staging, str(ino)))
            raise
        return self.inode(ino)

    def _open_file(self, ino, op, actor):
        of = self._open.get(ino)
        if of is not None:
            if ino in self._sealing and op != "seal":
                self.refuse(op, "the file is being sealed", actor, ino=ino)
        else:
            rec = self._inode(ino)
            if rec is None:
                raise NotFound(f"no inode {ino}")
            if rec.is_dir:
                raise IsADirectory("is a directory")
            if not rec.unsealed:
                self.refuse(op, "the file is a sealed record", actor, ino=ino)
            # Reopened after a restart: its staged bytes are still there.
            with self._wlock:
                of = self._open.get(ino)
                if of is None:
                    fd = os.open(os.path.join(self.staging, str(ino)),
                                 os.O_RDWR | os.O_CREAT, 0o600)
                    size = os.fstat(fd).st_size
                    of = self._open[ino] = OpenFile(ino, fd, size,
                                                    self._new_stream() if size == 0 else None)
        if op != "read":
            of.touched = self.clock.src.boot_us()
        return of

    def open_for_write(self, ino, actor=None):
        """Make sure an unsealed file's staged bytes are open for writing (after a remount
        they are reopened); a record refuses, audited."""
        self._check_writable()
        self._open_file(ino, "open", actor)

    def _new_stream(self):
        """(under the lock, like every change to the table of open files)"""
        if sum(1 for of in self._open.values() if of.stream is not None) >= MAX_STREAMS:
            return None
        st = SealStream(self.params)
        st.disposals = self.disposals
        return st

    def write(self, ino, offset, data, actor=None):
        self._check_writable()
        if offset < 0 or offset + len(data) > MAX_FILE_SIZE:
            raise FileTooBig(f"a file cannot grow beyond {MAX_FILE_SIZE} bytes")
        of = self._open_file(ino, "write", actor)
        with of.lock:
            if of.sealing:
                sealed = True
            else:
                sealed = False
                n = os.pwrite(of.fd, data, offset)
                of.changed(self.clock.src.wall_us())
                of.grow(offset, data, n, self._store_stream_chunks)
        if sealed:
            self.refuse("write", "the file was sealed; the write came after its last close",
                        actor, ino=ino)
        return n

    def write_at_once(self, ino, offset, data):
        """``write`` for the caller that must not wait (the mount's event loop): done now
        and the count returned, or None (nothing done) unless the write is cheap and sure
        to stay so: a file already open here, not being sealed, nobody else holding it,
        and bytes that continue its stream below the chunker's minimum size, so that no
        chunk can be cut and nothing reaches the log or the index. That is a small file's
        every write; the rest go to ``write`` in a worker."""
        of = self._open.get(ino)
        if of is None or self.readonly or self.failed or ino in self._sealing or \
                offset + len(data) >= self.params.min_size:
            return None
        if not of.lock.acquire(blocking=False):
            return None
        try:
            st = of.stream
            if of.sealing or st is None or st.broken or st.pos != offset or \
                    of.size != offset:
                return None
            n = os.pwrite(of.fd, data, offset)
            of.changed(self.clock.src.wall_us())
            of.grow(offset, data, n, self._store_stream_chunks)
        finally:
            of.lock.release()
        of.touched = self.clock.src.boot_us()
        return n

    def at_once(self, fn, *args, **kwargs):
        """``(True, fn(...))`` if the store's write lock is free now, else ``(False, None)``
        and nothing done: for a change the mount's event loop makes itself rather than
        wait behind a long one (a disposal, a big seal's commit). ``fn`` must not wait for
        another thread (no durable change: no group commit, no mirror)."""
        if not self._wlock.acquire(blocking=False):
            return False, None
        try:
            return True, fn(*args, **kwargs)
        finally:
            self._wlock.release()

    def truncate(self, ino, size, actor=None):
        self._check_writable()
        if size < 0:
            raise InvalidValue("negative size")
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"a file cannot grow beyond {MAX_FILE_SIZE} bytes")
        of = self._open_file(ino, "truncate", actor)
        with of.lock:
            sealed = of.sealing
            if not sealed:
                os.ftruncate(of.fd, size)
                if size != of.size:
                    of.end_stream()
                of.size = size
                of.changed(self.clock.src.wall_us())
        if sealed:
            self.refuse("truncate", "the file was sealed", actor, ino=ino)

    def setattr(self, ino, actor, mode=None, uid=None, gid=None, mtime=None, atime=None):
        """chmod/chown/utimens on a directory or an open file. Records refuse (except the
        atime convention, handled by ``touch_atime``)."""
        rec = self.inode(ino)
        if rec.is_file and rec.sealed:
            self.refuse("setattr", "the file is a sealed record", actor, ino=ino)
        self._check_not_reserved(ino, "setattr", actor)
        fields = {k: v for k, v in (("mode", mode), ("uid", uid), ("gid", gid),
                                    ("mtime", mtime), ("atime", atime)) if v is not None}
        if "mode" in fields:
            fields["mode"] &= 0o7777
        if rec.is_file and fields and not fields.keys() - {"mtime", "atime"}:
            self._open_file(ino, "setattr", actor).set_times(mtime, atime,
                                                             self.clock.src.wall_us())
            return self.inode(ino)
        if fields:
            self.journal.mutate(lambda txn: self.journal.append(txn, "setattr", actor, ino=ino,
                                                                **fields))
        return self.inode(ino)

    def set_open_times(self, ino, mtime=None, atime=None):
        """utimens on a file open in this process, kept in memory until the seal (no I/O).
        False if it is not open here or is being sealed: then ``setattr`` decides."""
        of = self._open.get(ino)
        if of is None or ino in self._sealing or of.orphan is not None:
            return False
        of.set_times(mtime, atime, self.clock.src.wall_us())
        of.touched = self.clock.src.boot_us()
        return True

    def rename(self, parent, name, new_parent, new_name, actor):
        name, new_name = check_name(name), check_name(new_name)
        with self.ix.read() as txn:
            hit = self.ix.lookup(txn, parent, name)
            if hit is None:
                raise NotFound(f"{os.fsdecode(name)} not found")
            src = self.ix.inode(txn, hit[0])
            self._dir(txn, new_parent)
            thit = self.ix.lookup(txn, new_parent, new_name)
            dst = self.ix.inode(txn, thit[0]) if thit else None
        self._check_not_reserved(src.ino, "rename", actor)
        if dst is not None:
            self._check_not_reserved(dst.ino, "rename", actor)
        self._check_reserved_name(new_parent, new_name, "rename", actor)
        if src.sealed:
            self.refuse("rename", "the file is a sealed record", actor, ino=src.ino)
        if dst is not None and dst.sealed:
            self.refuse("rename", "the target name is a sealed record", actor, ino=dst.ino)
        if dst is not None and dst.ino == src.ino:
            return self.inode(src.ino)
        if src.is_dir:
            if self._holds_records(src.ino):
                self.refuse("rename", "the directory holds records", actor, ino=src.ino)
            p = new_parent
            with self.ix.read() as txn:
                while True:
                    if p == src.ino:
                        raise InvalidValue("cannot move a directory into itself")
                    if p == ROOT_INO:
                        break
                    p = self.ix.inode(txn, p).parent
        if dst is not None:
            if dst.is_dir:
                if not src.is_dir:
                    raise IsADirectory(f"{os.fsdecode(new_name)} is a directory")
                if self._holds_records(dst.ino):
                    self.refuse("rename", "the target directory holds records", actor,
                                ino=dst.ino)
                with self.ix.read() as txn:
                    if not self.ix.dir_is_empty(txn, dst.ino):
                        raise NotEmpty(f"{os.fsdecode(new_name)} is not empty")
            elif src.is_dir:
                raise NotADirectory(f"{os.fsdecode(new_name)} is not a directory")
        state = None
        if src.is_file and src.unsealed:
            state = State.SCRATCH if self.is_scratch(new_name) else State.OPEN

        def fn(txn):
            fields = dict(ino=src.ino, parent=parent, name=E.name_str(name),
                          new_parent=new_parent, new_name=E.name_str(new_name))
            if dst is not None:
                fields["replaced"] = dst.ino
            self.journal.append(txn, "rename", actor, **fields)
            if state is not None and state is not src.state:
                self.journal.append(txn, "state", actor, ino=src.ino, state=state.value)
        self.journal.mutate(fn)
        if dst is not None and dst.is_file:
            self._drop_staging(dst.ino, dst)
        return self.inode(src.ino)

    def _drop_staging(self, ino, rec=None):
        """Forget a file that is no longer to become a record. If the mount still has it
        open, its bytes stay readable (and writable) through the open descriptor until
        ``discard``, as on any POSIX file system."""
        if rec is not None and self.keep_open(ino):
            of = self._open.get(ino)
            if of is not None:
                of.orphan = rec
                unlink_quiet(os.path.join(self.staging, str(ino)))
                return
        with self._wlock:  # the table of open files changes under the lock only
            of = self._open.pop(ino, None)
        if of is not None:
            of.end_stream()
            self.spares.give(of.fd, os.path.join(self.staging, str(ino)))
        else:
            unlink_quiet(os.path.join(self.staging, str(ino)))

    def discard(self, ino):
        """The mount closed the last handle of a file that lost its name while open."""
        with self._wlock:
            of = self._open.get(ino)
            if of is not None and of.orphan is not None:
                del self._open[ino]
                of.end_stream()
                os.close(of.fd)

    def fsync_open(self, ino):
        """fsync(2) on an open file: its staged bytes reach the disk."""
        of = self._open.get(ino)
        if of is not None:
            os.fsync(of.fd)

    def unlink(self, parent, name, actor):
        """Remove a name: an open or scratch file is discarded; a record is deleted only once
        it has expired and holds no hold (audited)."""
        name = check_name(name)
        with self.ix.read() as txn:
            self._dir(txn, parent)
            hit = self.ix.lookup(txn, parent, name)
            if hit is None:
                raise NotFound(f"{os.fsdecode(name)} not found")
            rec = self.ix.inode(txn, hit[0])
        if rec.is_dir:
            raise IsADirectory(f"{os.fsdecode(name)} is a directory")
        if rec.sealed:
            return self._delete_record(rec, actor)
        self.journal.mutate(lambda txn: self.journal.append(
            txn, "unlink", actor, ino=rec.ino, parent=parent, name=E.name_str(name)),
            reserve=True)
        self._drop_staging(rec.ino, rec)

    def _delete_record(self, rec, actor):
        ino = rec.ino
        now = self.clock.now(strict=True)
        if rec.holds:
            self.refuse("unlink", f"the record is under legal hold "
                        f"({', '.join(sorted(rec.holds))})", actor, ino=ino)
        if not retention.expired(rec.retention, now):
            self.refuse("unlink", f"the record is retained until "
                        f"{retention.display(rec.retention)}", actor, ino=ino)

        self.clock_refusal("unlink", actor, ino=ino)
        now = self._expired_on_peer("unlink", rec, now, actor)
        self._append_delete(ino, actor, lambda cur: not cur.holds and retention.expired(
            cur.retention, now))

    def _append_delete(self, ino, actor, still_allowed, **extra):
        """The delete event of a record, in one transaction with a last look at it: the
        rule that allowed the delete is checked again (``still_allowed(inode)``), since a
        hold or an extension may have come in meanwhile."""
        def fn(txn):
            cur = self.ix.inode(txn, ino)
            if cur is None or not cur.sealed or not still_allowed(cur):
                raise Refused("the record changed meanwhile; try again")
            self.journal.append(txn, "delete", actor, ino=ino, serial=cur.serial,
                                path=self.path_of(ino, txn), blake3=cur.blake3,
                                size=cur.size, **extra)
        self.journal.mutate(fn, durable=True, reserve=True)

    def privileged_delete(self, ino, reason, actor):
        """Enterprise mode's audited early delete (SPEC): a records admin removes an
        unexpired record that holds no legal hold, giving a reason. Compliance mode has no
        such thing. The mode is the one in the chain (unit_init), not unit.json's."""
        if not isinstance(reason, str) or not reason.strip() or \
                len(reason.encode("utf-8", "surrogateescape")) > MAX_REASON:
            raise InvalidValue(f"a privileged delete needs --reason TEXT (1 to {MAX_REASON} "
                               f"bytes)")
        rec = self.inode(ino)
        if not rec.is_file or not rec.sealed:
            raise InvalidValue("a privileged delete is for records; a file that is not "
                               "sealed yet is removed with rm")
        mode = (self.unit_info() or {}).get("mode")
        if mode != "enterprise":
            self.refuse("privileged_delete", f"the store is in {mode} mode: nothing deletes a "
                        f"record before it expires", actor, ino=ino)
        if not self.is_admin(actor):
            self.refuse("privileged_delete", "only a records admin may delete a record early",
                        actor, ino=ino)
        if rec.holds:
            self.refuse("privileged_delete", f"the record is under legal hold "
                        f"({', '.join(sorted(rec.holds))})", actor, ino=ino)

        self._append_delete(ino, actor, lambda cur: not cur.holds, privileged=True,
                            reason=reason, retain_until=retention.display(rec.retention))
        return rec

    def read(self, ino, offset, size):
        if offset < 0 or size < 0:
            raise InvalidValue("negative offset or size")
        of = self._open.get(ino)
        if of is not None:
            return os.pread(of.fd, size, offset)
        rec = self.inode(ino)
        if rec.is_dir:
            raise IsADirectory("is a directory")
        if rec.unsealed:
            return os.pread(self._open_file(ino, "read", None).fd, size, offset)
        return self.reader.read(rec, offset, size)

    def read_at_once(self, ino, offset, size):
        """``read`` for the caller that must not wait (the mount's event loop): a record's
        bytes if the page cache holds every one of them and every chunk passes its checks,
        else None and the caller goes to ``read`` in a worker (which waits for the disk,
        and repairs). Files not sealed yet always go there."""
        if offset < 0 or size < 0 or ino in self._open:
            return None
        rec = self.inode(ino)
        if not rec.sealed:
            return None
        return self.reader.read(rec, offset, size, nowait=True)

    def _repair_chunk(self, cid, loc, damage):
        """The reader's repair hook: the duplicate's copy of a damaged chunk, or the damage."""
        if self.duplicate is None:
            raise damage
        return self.duplicate.repair_chunk(cid, loc, damage)

    # -- sealing --------------------------------------------------------------------------

    def seal(self, ino, actor=None, cause="close", recovered_from=None):
        """Make an open file a record: chunk, dedup, append, verify by reading back, index,
        serial and retain-until; durable when this returns. ``cause`` says why now (close,
        rename, scratch_ttl, recovery), for the audit trail. The file's bytes are chunked
        to the end here; seals that reach the index together are committed one after
        another by one of their threads and made durable together (combiner.py)."""
        self._check_writable()
        with self._sealing_lock:
            if ino in self._sealing:
                raise Refused("the file is already being sealed")
            self._sealing.add(ino)
        try:
            of = self._open_file(ino, "seal", actor)
            if of.orphan is not None:
                raise NotFound("the file was removed before it was sealed")
            fin = self._finish_stream(of)
            return self._sealer.submit(of, fin, actor, cause, recovered_from)
        finally:
            with self._sealing_lock:
                self._sealing.discard(ino)

    def _seal_batch(self, batch):
        """(the combiner's thread) Commit each request's seal to the index, then make them
        all durable with one sync here and one shipment to the duplicate; each request gets
        its record or its error. A failure of that sync fails every seal of the batch, as
        it failed the seal whose sync it was."""
        made = []
        for req in batch:
            of, fin, actor, cause, recovered_from = req.args
            try:
                self._seal(of, fin, actor, cause, recovered_from)
            except Exception as e:
                req.finish(error=e)
            else:
                made.append((req, of))
        if not made:
            return
        try:
            self.journal.settle()
        except BaseException as e:
            for req, of in made:
                self._unseal(of)
                req.finish(error=e)
            if not isinstance(e, Exception):
                raise
            return
        for req, of in made:
            try:
                self._drop_staging(of.ino)
                req.finish(self.inode(of.ino))
            except Exception as e:
                req.finish(error=e)

    def _store_stream_chunks(self, got):
        self.journal.mutate(lambda txn: self.journal.append_chunks(txn, got))

    def _floor_text(self, txn, parent):
        """The default period that sets a file's retention floor: the nearest ancestor
        directory's user.worm.retention, else the store's default (from the chain)."""
        p = parent
        while True:
            d = self.ix.inode(txn, p)
            if d is not None and d.retention:
                return d.retention
            if p == ROOT_INO or d is None:
                break
            p = d.parent
        return self.ix.meta(txn, "unit")["default_retention"]

    def _seal_retention(self, txn, rec, committed):
        """The floor at the commit time, lengthened by what the file's owner asked for."""
        floor = retention.from_default(self._floor_text(txn, rec.parent), committed)
        wish = rec.retention
        return retention.combine(floor, wish, committed) if wish else floor

    def _seal(self, of, fin, actor, cause, recovered_from):
        try:
            self._seal_index(of, fin, actor, cause, recovered_from)
        except _ChunksDisposed:
            # A disposal took chunks this file had matched while it was written: chunk the
            # staged file again, now that the index no longer offers them.
            self._seal_index(of, self._finish_stream(of), actor, cause, recovered_from)

    def _finish_stream(self, of):
        """Chunk the file to its end (the staged file whole if its stream cannot finish
        it); from here on, writes to it are refused (see OpenFile)."""
        with of.lock:
            of.sealing = True
            st = of.stream
            if st is None or not st.usable(of.size):
                of.end_stream()
                st = of.stream = stream_staged(of, self.params, self.disposals,
                                                 self._store_stream_chunks)
            tail = []
            digest = st.finish(tail.extend)
            return _Finished(st, digest, st.chunks, of.size, tail)

    def _seal_index(self, of, fin, actor, cause, recovered_from):
        """The seal event and its chunks' frames, in the index (not durable yet)."""
        ino, st, digest, chunks, size, tail = (of.ino, fin.stream, fin.digest, fin.chunks,
                                               fin.size, fin.tail)

        def fn(txn):
            self.journal.append_chunks(txn, tail)
            if st.disposals != self.disposals and any(
                    self.ix.chunk(txn, cid) is None for _, cid in chunks):
                raise _ChunksDisposed()
            rec = self.ix.inode(txn, ino)
            if rec is None or not rec.unsealed:
                raise Refused("the file is not open")
            # Never a serial handed out before, even one whose events were cut from the log
            # (heads.py keeps the high-water mark outside it).
            serial = max(self.ix.meta(txn, "next_serial"), self._serial_floor)
            now = self.clock.now()
            ret = self._seal_retention(txn, rec, now)
            extra = {"recovered_from": recovered_from} if recovered_from else {}
            self.journal.append(
                txn, "seal", actor, ino=ino, serial=serial, path=self.path_of(ino, txn),
                size=size, blake3=digest, retention=ret, mode=rec.mode & 0o7555,
                uid=rec.uid, gid=rec.gid,
                mtime=of.mtime if of.mtime is not None else rec.mtime,
                writer=rec.creator, cause=cause, **extra,
                chunks=[[cid.hex(), length] for length, cid in chunks])
        try:
            self.journal.mutate(fn)  # durable with the rest of its batch (_seal_batch)
        except BaseException:
            self._unseal(of)
            raise

    @staticmethod
    def _unseal(of):
        """A seal of ``of`` failed: it is an open file again, writable."""
        with of.lock:
            of.end_stream()  # its tail is spent; a retry chunks the staged file
            of.sealing = False

    # -- retention and holds (records admin where SPEC says so) ---------------------------

    def _record_event(self, etype, actor, rec, **fields):
        """One durable change of record ``rec`` (its retention, event date or holds), with
        its serial and its path at the time. Essential: it may use the space reserve."""
        ino = rec.ino
        self.journal.mutate(lambda txn: self.journal.append(
            txn, etype, actor, ino=ino, serial=rec.serial, path=self.path_of(ino, txn),
            **fields), durable=True, reserve=True)

    def may_change_retention(self, actor, rec):
        """The file's owner or a records admin (SPEC): anyone else is refused."""
        return actor is None or actor.uid == rec.uid or self.is_admin(actor)

    def set_retain_until(self, ino, value, actor, op="set_retain_until"):
        """Write user.worm.retain_until: on an open file it lengthens what the record will
        get (never below its retention floor); on a record it may only extend (R7)."""
        new = retention.parse_value(value)
        rec = self.inode(ino)
        if not rec.is_file:
            raise InvalidValue("user.worm.retain_until is set on files; directories take "
                               "user.worm.retention")
        if not self.may_change_retention(actor, rec):
            self.refuse(op, "only the file's owner or a records admin may change its "
                        "retention", actor, ino=ino)
        now = self.clock.now()
        if rec.sealed:
            # Earlier than what the record has is a WORM refusal (EPERM), checked first; a
            # later date that has passed anyway (an expired record) is a bad value.
            try:
                after = retention.extend(rec.retention, new, rec.committed)
            except Refused as e:
                self.refuse(op, str(e), actor, ino=ino)
        else:
            # Against what the record would get if sealed now: its floor and any earlier
            # wish. The seal takes the floor again at its own time (never less).
            cur = self.prospective_retention(ino)
            why = retention.below(cur, new, now)
            if why is not None:
                self.refuse(op, f"{why} (the retention floor of this directory or the "
                            f"store, or what was set before, cannot be lowered)", actor, ino=ino)
            after = retention.combine(rec.retention or retention.empty(), new, now)
        if new["until"] is not None and new["until"] <= now:
            raise InvalidValue(f"retain-until {value!r} is not in the future (compliance "
                               f"clock {format_us(now)})")
        if after == rec.retention:
            return
        self._record_event("retention", actor, rec, before=rec.retention, after=after)

    def touch_atime(self, ino, atime_us, actor):
        """The atime convention: a future atime extends retain-until; an earlier one changes
        nothing and is refused."""
        rec = self.inode(ino)
        if not rec.sealed:
            return self.setattr(ino, actor, atime=atime_us)
        # set_retain_until checks this too; here it comes first so that the no-op below is
        # the owner's or an admin's alone.
        if not self.may_change_retention(actor, rec):
            self.refuse("set_atime", "only the file's owner or a records admin may extend its "
                        "retention", actor, ino=ino)
        if retention.effective(rec.retention) == ("until", atime_us):
            return self.inode(ino)  # the atime shown already: a copy tool putting it back
        # An earlier atime, or a date on an indefinite or pending record: extend() refuses
        # it inside set_retain_until (EPERM, audited as set_atime).
        return self.set_retain_until(ino, format_us(atime_us), actor, op="set_atime")

    def set_event_date(self, ino, value, actor):
        date = parse_date(value)
        rec = self.inode(ino)
        if not rec.sealed:
            raise InvalidValue("the event date is set on records")
        if not self.is_admin(actor):
            self.refuse("set_event_date", "only a records admin may set an event date", actor,
                        ino=ino)
        try:
            after = retention.set_event(rec.retention, date)
        except Refused as e:
            self.refuse("set_event_date", str(e), actor, ino=ino)
        self._record_event("event_date", actor, rec, date=format_us(date),
                           before=rec.retention, after=after)

    def place_hold(self, ino, name, reason, actor):
        if not name or len(name) > 64 or not set(name) <= HOLD_NAME_CHARS:
            raise InvalidValue(f"bad hold name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -")
        if len(reason.encode("utf-8", "surrogateescape")) > MAX_REASON:
            raise InvalidValue(f"hold reason longer than {MAX_REASON} bytes")
        rec = self.inode(ino)
        if not rec.sealed:
            raise InvalidValue("legal holds are placed on records")
        if not self.is_admin(actor):
            self.refuse("hold", "only a records admin may place a legal hold", actor, ino=ino)
        self._record_event("hold", actor, rec, name=name, reason=reason)

    def release_hold(self, ino, name, actor):
        rec = self.inode(ino)
        if name not in rec.holds:
            raise NoSuchAttribute(f"no hold named {name!r}")
        if not self.is_admin(actor):
            self.refuse("release", "only a records admin may release a legal hold", actor,
                        ino=ino)
        self._record_event("release", actor, rec, name=name)

    def prospective_retention(self, ino):
        """The retention an open file would get if it were sealed now."""
        with self.ix.read() as txn:
            rec = self.ix.inode(txn, ino)
            return self._seal_retention(txn, rec, self.clock.now())

    # -- files that never finished ---------------------------------------------------------

    def recover(self, ino, reason, actor=None):
        """Seal a file whose writer never finished (killed writer or daemon, failed writes,
        unmount while open) as a record under /.wormfs/recovered/, so nothing is lost and
        nothing passes for complete. Its original name becomes free."""
        rec = self.inode(ino)
        original = self.path_of(ino)
        rdir = self._recovered_dir()
        name = f"{ino}-{rec.name}".encode("utf-8", "surrogateescape")[:MAX_NAME]
        self.journal.event_now("recovery", actor, ino=ino, path=original, size=rec.size,
                               reason=reason, to=f"{self.path_of(rdir)}/{E.name_str(name)}")
        self.rename(rec.parent, E.name_bytes(rec.name), rdir, name, actor)
        return self.seal(ino, actor, cause="recovery", recovered_from=original)

    def _recovered_dir(self):
        if self.reserved_ino is None:
            self._ensure_reserved()
        return self.lookup(self.reserved_ino, b"recovered").ino

    def recover_interrupted(self, reason):
        """Recover every file left open (not scratch) by a writer that is gone. Returns the
        records made. Called at mount, before anything else can open them."""
        return [self.recover(ino, reason) for ino, state in self.unsealed()
                if state is State.OPEN]

    def stale_scratch(self, ttl_us):
        """Scratch files untouched for ``ttl_us``: real time since their last change in this
        process, or since their last event (and at least since this process opened the
        unit) for files not touched since. Not the mtime: rsync and cp -p set it to the
        source's, which may be years old; nor the host clock of the staged file."""
        now, boot_now = self.clock.now(), self.clock.src.boot_us()
        out = []
        for ino, state in self.unsealed():
            if state is not State.SCRATCH:
                continue
            of = self._open.get(ino)
            if of is not None and of.touched is not None:
                idle = boot_now - of.touched
            else:
                idle = now - max(self.inode(ino).ctime, self._opened_at)
            if idle >= ttl_us:
                out.append(ino)
        return out

    def sync(self):
        """Make everything appended so far durable."""
        if not self.readonly:
            self.journal.sync()

    # -- the event log --------------------------------------------------------------------

    def events(self, start_seq=1):
        """Yield decoded events in order from ``start_seq``."""
        with self.ix.read() as txn:
            pos = self.ix.event_pos(txn, start_seq)
        if pos is None:
            return
        for fr in self.log.scan(pos):
            if fr.ftype == F.T_EVENT:
                yield E.decode(fr.payload)


class _Finished:
    """A file chunked to its end, ready for its seal event."""
    __slots__ = ("stream", "digest", "chunks", "size", "tail")

    def __init__(self, stream, digest, chunks, size, tail):
        self.stream, self.digest, self.chunks, self.size, self.tail = (stream, digest, chunks,
                                                                       size, tail)


class _ChunksDisposed(Exception):
    """A seal found chunks it matched earlier reclaimed by a disposal since."""


def create_store(path, **unit_fields):
    """Create a unit and write its first event (unit_init). Returns the unit dict."""
    from .unit import write_unit
    settings = unit_fields.pop("settings")
    init = unit_fields.pop("init")
    unit = write_unit(path, **unit_fields)
    with Store(path, time_source=init.pop("time_source", None),
               mirror_time_source=init.pop("mirror_time_source", None)) as st:
        st.journal.event_now("unit_init", None, durable=True, serial=unit["serial"],
                             role=unit["role"], mode=unit["mode"], label=unit["label"],
                             peer_serial=unit["peer_serial"], settings=settings, **init)
        if unit["role"] == "primary":
            st._ensure_reserved()
    return unit


@functools.lru_cache(maxsize=8)
def _scratch_matcher(patterns):
    """One compiled regex for a list of scratch patterns: what fnmatchcase does pattern by
    pattern (it caches each translation, but still runs them one after another)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)",
                      re.DOTALL).match


__all__ = ["Store", "create_store", "WormError", "DEFAULT_SCRATCH_PATTERNS"]
