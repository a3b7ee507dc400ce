"""Reading records: a record's manifest from the index, its chunks from the log, a small
cache of chunks, and a hook for a chunk that fails its checks.

The reader never writes. A damaged chunk goes to ``repair(cid, loc, damage)``, which the
store supplies (it fetches the frame from the duplicate and audits the repair); that hook
returns the chunk's sound bytes or raises, so a read returns the record's bytes or fails
(EIO), never other bytes.

How a read moves bytes: the chunk frames a request needs lie back to back in a segment when
the record was written in order, so one ``preadv`` reads them all, each payload straight to
its place in the reply and each frame header aside; every frame is then checked as
``SegmentLog.read_chunk`` checks one. A chunk the request cuts is read whole (it must be, to
be checked) and cached, since the next request of a sequential read begins in it. After each
read the segment is read ahead in the background, so the next request finds its bytes in the
page cache: that is what lets the mount serve a request from its event loop (``nowait``),
without handing it to a worker thread (docs/OPERATIONS.md, "Mount at boot").
"""
import collections
import os
import queue
import threading

from ..errors import IntegrityError
from . import frames as F

CHUNK_CACHE_ENTRIES = 16  # a sequential read of a big record uses each chunk many times
PREFETCH = 8 << 20        # how far past a read the segment is read ahead


class RecordReader:
    def __init__(self, log, ix, repair):
        self.log, self.ix, self.repair = log, ix, repair
        self._cache = collections.OrderedDict()  # chunk id -> bytes, least recent first
        self._lock = threading.Lock()
        self._ahead = (None, 0)  # (segno, offset): how far the last read-ahead reaches

    def read(self, rec, offset, size, nowait=False):
        """Bytes [offset, offset + size) of sealed record ``rec`` (an Inode), cut at its end,
        as a bytearray. With ``nowait`` only what the page cache holds is read, and
        anything else (a byte not cached, a chunk failing its checks) returns None instead:
        the caller reads again without it, where waiting and repairing are allowed."""
        end = min(offset + size, rec.size)
        if offset >= end:
            return bytearray()
        with self.ix.read() as txn:
            pieces = []
            for start, length, cid in self.ix.manifest_from(txn, rec.serial, offset):
                if start >= end:
                    break
                loc = self.ix.chunk(txn, cid)
                if loc is None:
                    raise IntegrityError(f"record {rec.serial}: chunk {cid.hex()[:16]} is not "
                                         f"in the index")
                pieces.append(_Piece(start, length, cid, loc))
        out = bytearray(end - offset)
        view = memoryview(out)
        run = []  # pieces whose frames lie back to back in one segment
        for p in pieces:
            with self._lock:
                cached = self._cache.get(p.cid)
            if cached is not None:
                p.place(view, offset, end, cached)
                continue
            if run and not run[-1].followed_by(p):
                if not self._read_run(run, view, offset, end, nowait):
                    return None
                run = []
            run.append(p)
        if run and not self._read_run(run, view, offset, end, nowait):
            return None
        if end < rec.size and pieces:
            last = pieces[-1].loc
            # The frames after a record's last chunk read here are, for a record written
            # in order, its next ones (and a little more for their headers).
            self._read_ahead(last[0], last[1] + F.CHUNK_HEAD_LEN + last[2],
                             min(PREFETCH, (rec.size - end) * 2 + (64 << 10)))
        return out

    def _read_run(self, run, view, offset, end, nowait):
        """Read and check the chunk frames of ``run`` with one preadv: a payload the request
        holds whole goes straight into ``view`` (the reply, which begins at record offset
        ``offset``), one it cuts into a buffer of its own. False if ``nowait`` and the
        bytes were not all cached or a frame failed; without ``nowait`` such a frame is read
        again alone, through the repair path."""
        segno, first = run[0].loc[0], run[0].loc[1]
        iov = []
        for p in run:
            p.head = bytearray(F.CHUNK_HEAD_LEN)
            p.whole = p.start >= offset and p.start + p.length <= end
            p.buf = (view[p.start - offset:p.start - offset + p.length] if p.whole
                     else bytearray(p.length))
            iov += (p.head, p.buf)
        total = sum(F.CHUNK_HEAD_LEN + p.length for p in run)
        try:
            got = os.preadv(self.log.fd(segno), iov, first, os.RWF_NOWAIT if nowait else 0)
        except (OSError, IntegrityError):  # not cached (EAGAIN), unreadable, or missing
            got = -1
        for p in run:
            sound = got == total and p.sound()
            if not sound:
                if nowait:
                    return False
                data = self.chunk(p.cid, p.loc)  # short, damaged or unreadable: alone
                p.place(view, offset, end, data)
            elif not p.whole:
                p.place(view, offset, end, p.buf)
                self._remember(p.cid, bytes(p.buf))
        return True

    def _read_ahead(self, segno, pos, length):
        """Have ``length`` bytes of segment ``segno`` from ``pos`` read ahead in the
        background (the advice itself can wait for the disk's queue); what an earlier call
        asked for is not asked again."""
        seg, mark = self._ahead
        if seg == segno and pos + length // 2 <= mark <= pos + PREFETCH:
            return  # still well ahead
        start = mark if seg == segno and pos < mark <= pos + PREFETCH else pos
        self._ahead = (segno, pos + length)
        try:
            fd = self.log.fd(segno)
        except IntegrityError:
            return
        if pos + length > start:
            # The advice holds a descriptor of its own: the log's may be closed before the
            # advisor gets to it and its number reused for another file, whose pages (of
            # another store, even) would then be read back in.
            _advisor().put((os.dup(fd), start, pos + length - start))

    def chunk(self, cid, loc):
        """The payload of chunk ``cid`` at ``loc`` (segno, offset, length), checked."""
        with self._lock:
            data = self._cache.get(cid)
            if data is not None:
                self._cache.move_to_end(cid)
                return data
        segno, offset, length = loc
        try:
            data = self.log.read_chunk(segno, offset, cid, length)
        except IntegrityError as e:
            data = self.repair(cid, loc, e)
        self._remember(cid, data)
        return data

    def _remember(self, cid, data):
        with self._lock:
            self._cache[cid] = data
            self._cache.move_to_end(cid)
            if len(self._cache) > CHUNK_CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def forget(self):
        """Drop the cached chunks (a test that damages a chunk on disk reads it again)."""
        with self._lock:
            self._cache.clear()


class _Piece:
    """One chunk of a read: where it starts in the record, its length, id and frame."""
    __slots__ = ("start", "length", "cid", "loc", "head", "buf", "whole")

    def __init__(self, start, length, cid, loc):
        self.start, self.length, self.cid, self.loc = start, length, cid, loc

    def followed_by(self, other):
        """Whether ``other``'s frame begins where this one's ends, in the same segment."""
        return (other.loc[0] == self.loc[0]
                and other.loc[1] == self.loc[1] + F.CHUNK_HEAD_LEN + self.loc[2])

    def place(self, view, offset, end, data):
        """Copy the part of this chunk's ``data`` inside [offset, end) to ``view``."""
        lo, hi = max(offset, self.start), min(end, self.start + self.length)
        view[lo - offset:hi - offset] = memoryview(data)[lo - self.start:hi - self.start]

    def sound(self):
        """The checks of SegmentLog.read_chunk, on the header and payload read."""
        try:
            F.check_chunk(self.head, self.buf, self.cid, self.length)
        except F.FrameError:
            return False
        return True


_queue = None
_queue_lock = threading.Lock()


def _advisor():
    """The queue of the one thread (per process) that passes read-ahead advice to the
    kernel: (fd, offset, length), where fd is the advisor's to close."""
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = queue.SimpleQueue()
            threading.Thread(target=_advise, args=(_queue,), name="wormfs-readahead",
                             daemon=True).start()
        return _queue


def _forget_queue():
    global _queue
    _queue = None  # a forked child has no advisor thread: it starts its own


os.register_at_fork(after_in_child=_forget_queue)


def _advise(q):
    while True:
        fd, off, length = q.get()
        try:
            os.posix_fadvise(fd, off, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # it was only advice
        finally:
            os.close(fd)
