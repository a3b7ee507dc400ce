"""The append-only segment log of one unit: the only source of truth.

Concurrency: ``append`` and ``roll`` are called with the store's write lock held; ``sync`` may
run concurrently with appends from the group-commit thread (fdatasync and pwrite on one fd are
safe together); ``read`` is safe from any thread (pread on cached, never-closed-while-open fds).

Crash safety: frames are written with pwrite at the known end and only count once fdatasync
returned. A crash can leave a torn frame at the end of the open segment; ``recover_tail`` finds
it, moves the bytes to ``quarantine/`` and cuts the segment there. Damage anywhere else is never
cut: it is an integrity error for verify/scrub to repair from the mirror.
"""
import contextlib
import json
import mmap
import os
import threading

from ..errors import IntegrityError, StoreError, StoreFull
from . import frames as F
from .hostfs import atomic_write, fsync_dir, punch_hole, set_immutable

# In the unit directory, beside segments/: the frames a destroy is changing, while it does.
DESTROY_JOURNAL = "destroying.json"


def seg_name(segno, open_=False):
    return f"{segno:010d}.{'open' if open_ else 'seg'}"


def segment_files(dirpath):
    """(segno, file name) of every segment file in ``dirpath`` (NNNNNNNNNN.seg or .open)."""
    for name in os.listdir(dirpath):
        stem, _, ext = name.partition(".")
        if ext in ("seg", "open") and stem.isdigit():
            yield int(stem), name


class Frame:
    """One scanned frame. ``payload`` is the event's bytes, or the chunk's bytes when the scan
    was asked for them (None otherwise); ``payload_len`` is always set."""

    __slots__ = ("segno", "offset", "ftype", "key", "payload", "payload_len", "length")

    def __init__(self, segno, offset, ftype, key, payload, payload_len, length):
        self.segno, self.offset, self.ftype = segno, offset, ftype
        self.key, self.payload, self.payload_len, self.length = key, payload, payload_len, length

    @property
    def end(self):
        return self.offset + self.length


class SegmentLog:
    def __init__(self, dirpath, unit_uuid, max_size, readonly=False, disposable=True):
        """``disposable``: the unit's log, whose chunk frames a disposal destroys (with its
        journal, DESTROY_JOURNAL, in the unit directory). A unit's own chain (local/) is a
        log too, in the same unit directory: it holds no chunks and must never take the
        main log's journal for its own."""
        self.dir = dirpath
        self.disposable = disposable
        self.unit_uuid = unit_uuid
        self.max_size = max_size
        self.readonly = readonly
        self._fds = {}
        self._fd_lock = threading.Lock()
        self.cur_segno = None
        self.cur_fd = None
        self.cur_end = None
        self.immutable_supported = None
        self._open()
        if not readonly and disposable:
            self.finish_destroy()   # before anything reads a frame a crash left half-done

    # -- opening --------------------------------------------------------------------------

    def segment_numbers(self):
        """All segment numbers on disk, ascending, and the number of the open one (or None)."""
        nums, open_no = [], None
        for segno, name in segment_files(self.dir):
            nums.append(segno)
            if name.endswith(".open"):
                if open_no is not None:
                    raise StoreError(f"two open segments in {self.dir}")
                open_no = segno
        nums.sort()
        if open_no is not None and open_no != nums[-1]:
            raise StoreError(f"open segment {open_no} is not the last one in {self.dir}")
        return nums, open_no

    def path(self, segno):
        p = os.path.join(self.dir, seg_name(segno))
        if os.path.exists(p):
            return p
        return os.path.join(self.dir, seg_name(segno, open_=True))

    def _open(self):
        nums, open_no = self.segment_numbers()
        if self.readonly:
            self.cur_segno = nums[-1] if nums else None
            return
        if open_no is None:
            self._create_segment(nums[-1] + 1 if nums else 1)
        else:
            self.cur_segno = open_no
            self.cur_fd = os.open(self.path(open_no), os.O_RDWR)
            self.cur_end = os.fstat(self.cur_fd).st_size
            self._fds[open_no] = self.cur_fd
            if self.cur_end < F.SEG_HEADER_LEN:
                # A crash right after the segment was created: it holds no frame yet.
                os.ftruncate(self.cur_fd, 0)
                os.pwrite(self.cur_fd, F.encode_segment_header(open_no, self.unit_uuid), 0)
                os.fsync(self.cur_fd)
                self.cur_end = F.SEG_HEADER_LEN
            self._check_header(open_no)

    def _check_header(self, segno):
        segno_read, unit = F.decode_segment_header(os.pread(self._fd(segno), F.SEG_HEADER_LEN, 0))
        if segno_read != segno or unit != self.unit_uuid:
            raise IntegrityError(f"segment {segno} belongs to another unit or number")

    def _create_segment(self, segno):
        p = os.path.join(self.dir, seg_name(segno, open_=True))
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, F.encode_segment_header(segno, self.unit_uuid))
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            os.unlink(p)
            raise StoreFull(f"cannot create segment {p}: {e.strerror}") from e
        fsync_dir(self.dir)
        self.cur_segno, self.cur_fd, self.cur_end = segno, fd, F.SEG_HEADER_LEN
        self._fds[segno] = fd

    # -- writing --------------------------------------------------------------------------

    def end_position(self):
        return (self.cur_segno, self.cur_end)

    def append(self, parts, may_roll=True):
        """Write one frame given as a list of buffers; return (segno, offset). Not durable
        until ``sync``. On failure the segment is cut back, so no partial frame remains.
        A mirror appends with ``may_roll=False``: only its primary decides where a segment
        ends, so that both hold the same segments."""
        total = sum(len(p) for p in parts)
        if may_roll and self.cur_end > F.SEG_HEADER_LEN and self.cur_end + total > self.max_size:
            self.roll()
        start = self.cur_end
        pos = start
        try:
            bufs = [memoryview(p).cast("B") for p in parts]
            while bufs:
                n = os.pwritev(self.cur_fd, bufs, pos)
                pos += n
                while bufs and n >= len(bufs[0]):
                    n -= len(bufs[0])
                    bufs.pop(0)
                if bufs and n:
                    bufs[0] = bufs[0][n:]
        except OSError as e:
            try:
                self._cut_back(start)
            except OSError:
                pass
            raise StoreFull(f"cannot append to segment {self.cur_segno}: {e.strerror}") from e
        self.cur_end = pos
        return (self.cur_segno, start)

    def undo(self, offset):
        """Drop frames appended at or after ``offset`` of the open segment that nothing
        refers to yet (their index transaction failed). Never crosses a segment boundary."""
        if offset > self.cur_end:
            raise IntegrityError(f"cannot undo to {offset}: the segment ends at {self.cur_end}")
        self._cut_back(offset)
        self.cur_end = offset

    def _cut_back(self, offset):
        """Truncate the open segment and make that durable at once: the group commit's
        fdatasync runs outside the write lock and may already have flushed the frames cut
        here, and an unsynced truncate lost in a power cut would bring them back."""
        os.ftruncate(self.cur_fd, offset)
        os.fsync(self.cur_fd)

    def sync(self):
        os.fdatasync(self.cur_fd)

    def roll(self):
        """Finish the open segment (fsync, rename, read-only, immutable) and start the next."""
        segno, fd = self.cur_segno, self.cur_fd
        os.fsync(fd)
        open_path = os.path.join(self.dir, seg_name(segno, open_=True))
        final = os.path.join(self.dir, seg_name(segno))
        os.chmod(open_path, 0o400)
        os.rename(open_path, final)
        fsync_dir(self.dir)
        self.immutable_supported = set_immutable(final, True)
        self._create_segment(segno + 1)

    def close(self):
        with self._fd_lock:
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()
        self.cur_fd = None

    # -- repair (bytes copied from the peer unit, which holds the same segments) -----------

    def patch(self, segno, offset, data):
        """Overwrite ``data`` at ``offset`` of a segment with the bytes the peer unit holds
        there (fsynced before this returns)."""
        with self._writing(segno, offset + len(data)) as fd:
            _pwrite_all(fd, data, offset)

    def destroy(self, segno, frames):
        """Replace chunk frames of one segment, given as [(offset, chunk_id, length)], by
        disposed-chunk frames of the same length (frames.py): the chunks' bytes become zeros,
        punched out of the file where the host can. Only disposal calls this, for chunks a
        dispose event in the log names. Idempotent: all payloads are zeroed and made durable
        before any header is rewritten, so a frame whose header says "disposed" holds zeros,
        and a crash in between leaves frames a second call finishes. Returns how many frames
        it changed."""
        if not self.disposable:
            raise IntegrityError(f"{self.dir} holds no chunks to destroy")
        hl = F.FIXED_LEN + 32
        todo = []
        journal = self._destroy_journal()
        for offset, chunk_id, length in frames:
            try:
                ftype, key, plen, _, _ = F.parse_header(self.read(segno, offset, hl))
            except F.FrameError as e:
                raise IntegrityError(f"segment {segno} offset {offset}: {e}") from None
            if key != chunk_id or plen != length or ftype not in (F.T_CHUNK, F.T_DISPOSED):
                raise IntegrityError(f"segment {segno} offset {offset} does not hold chunk "
                                     f"{chunk_id.hex()[:16]}")
            if ftype == F.T_CHUNK:
                todo.append((offset, chunk_id, length))
        if not todo:
            return 0
        # Between the zeroed payloads and the new headers a frame is neither a chunk nor a
        # disposed chunk: its checksum fails. The journal says which frames those are, so
        # that an open after a crash finishes them before anything reads the segment (the
        # index may be older than the frames and would otherwise replay them as damage).
        atomic_write(journal, json.dumps(
            {"segno": segno, "frames": [[o, c.hex(), n] for o, c, n in todo]}).encode())
        end = max(off + hl + length for off, _, length in todo)
        with self._writing(segno, end) as fd:
            for offset, _, length in todo:
                if not punch_hole(fd, offset + hl, length):
                    _pwrite_all(fd, bytes(length), offset + hl)
            os.fdatasync(fd)
            for offset, chunk_id, length in todo:
                _pwrite_all(fd, F.disposed_header(chunk_id, length), offset)
        os.unlink(journal)
        return len(todo)

    def _destroy_journal(self):
        return os.path.join(os.path.dirname(os.path.abspath(self.dir)), DESTROY_JOURNAL)

    def finish_destroy(self):
        """At open: finish the destroy a crash interrupted (its journal is there). Returns
        how many frames it changed."""
        try:
            with open(self._destroy_journal()) as f:
                j = json.load(f)
        except FileNotFoundError:
            return 0
        except ValueError:
            os.unlink(self._destroy_journal())   # torn before its payloads were touched
            return 0
        n = self.destroy(int(j["segno"]),
                         [(int(o), bytes.fromhex(c), int(n)) for o, c, n in j["frames"]])
        # A crash after the headers were rewritten and before the journal went leaves
        # nothing to do (0 frames) and the journal still there.
        try:
            os.unlink(self._destroy_journal())
        except FileNotFoundError:
            pass
        return n

    @contextlib.contextmanager
    def _writing(self, segno, end):
        """A descriptor to overwrite bytes before ``end`` of a segment, fsynced at the end.
        Finished segments are read-only and immutable: both are lifted for the write and
        set again (the flag where the host supports it)."""
        if not self.readonly and segno == self.cur_segno:
            if end > self.cur_end:
                raise IntegrityError(f"write past the end of open segment {segno}")
            yield self.cur_fd
            os.fdatasync(self.cur_fd)
            return
        path = os.path.join(self.dir, seg_name(segno))
        set_immutable(path, False)
        os.chmod(path, 0o600)
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                yield fd
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            os.chmod(path, 0o400)
            set_immutable(path, True)

    def install(self, segno, pieces):
        """Put back a finished segment that is missing, from an iterable of its bytes in
        order (the peer's copy, checked by the caller before and after)."""
        final = os.path.join(self.dir, seg_name(segno))
        if os.path.exists(final) or (segno == self.cur_segno and not self.readonly):
            raise IntegrityError(f"segment {segno} exists; repair it in place")
        tmp = os.path.join(self.dir, f"{segno:010d}.repair")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pos = 0
            for piece in pieces:
                _pwrite_all(fd, piece, pos)
                pos += len(piece)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.chmod(tmp, 0o400)
        os.rename(tmp, final)
        fsync_dir(self.dir)
        set_immutable(final, True)
        self.forget_fd(segno)

    def forget_fd(self, segno):
        """Drop a cached descriptor (its file was replaced or found missing)."""
        with self._fd_lock:
            fd = self._fds.pop(segno, None)
        if fd is not None and fd != self.cur_fd:
            os.close(fd)

    def map_file(self, segno):
        """A read-only map of a segment file as it is on disk now (a fresh open, not the
        cached descriptor, which would still see a file that was removed), or None if the
        file is missing. The open segment is mapped up to its current end."""
        try:
            fd = os.open(self.path(segno), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = self._visible(segno, os.fstat(fd).st_size)
            return mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
        finally:
            os.close(fd)

    def file_size(self, segno):
        """Bytes a map of segment ``segno`` would hold now (map_file), or None if the file
        is missing: a stat, no descriptor kept (a walk over thousands of segments)."""
        try:
            return self._visible(segno, os.stat(self.path(segno)).st_size)
        except FileNotFoundError:
            return None

    def _visible(self, segno, size):
        """Of a segment file's ``size``, what the log holds: the open segment ends at
        cur_end (beyond it: a frame being written, or preallocation)."""
        if not self.readonly and segno == self.cur_segno:
            return min(size, self.cur_end)
        return size

    def size(self, segno):
        """Bytes in a segment (the open one: up to its current end)."""
        if not self.readonly and segno == self.cur_segno:
            return self.cur_end
        return os.fstat(self._fd(segno)).st_size

    # -- reading --------------------------------------------------------------------------

    def fd(self, segno):
        """A read-only descriptor of segment ``segno``, kept open by the log (do not close
        it); IntegrityError if the segment is missing."""
        return self._fd(segno)

    def _fd(self, segno):
        fd = self._fds.get(segno)
        if fd is None:
            with self._fd_lock:
                fd = self._fds.get(segno)
                if fd is None:
                    try:
                        fd = os.open(self.path(segno), os.O_RDONLY)
                    except FileNotFoundError:
                        raise IntegrityError(f"segment {segno} is missing") from None
                    self._fds[segno] = fd
        return fd

    def read(self, segno, offset, length):
        data = os.pread(self._fd(segno), length, offset)
        if len(data) != length:
            raise IntegrityError(f"segment {segno} is shorter than the index says")
        return data

    def read_chunk(self, segno, offset, chunk_id, length):
        """The bytes of the chunk frame at (segno, offset), checked against its id and
        checksum; IntegrityError rather than wrong bytes."""
        buf = self.read(segno, offset, F.CHUNK_HEAD_LEN + length)
        payload = memoryview(buf)[F.CHUNK_HEAD_LEN:]
        try:
            F.check_chunk(buf, payload, chunk_id, length)
        except F.FrameError as e:
            raise IntegrityError(
                f"chunk {chunk_id.hex()[:16]} at segment {segno} offset {offset}: {e}") from None
        return payload

    def scan(self, start=None, chunk_payloads=False):
        """Yield every frame from ``start`` (segno, offset) to the end of the log, checked.
        Chunk bytes are only kept in the frames if ``chunk_payloads`` (they are read to check
        them anyway). A damaged or torn frame raises FrameError carrying ``.segno`` and
        ``.offset``."""
        nums, _ = self.segment_numbers()
        first_seg, first_off = start if start else (nums[0] if nums else 0, F.SEG_HEADER_LEN)
        for segno in nums:
            if segno < first_seg:
                continue
            off = first_off if segno == first_seg else F.SEG_HEADER_LEN
            yield from self._scan_segment(segno, off, chunk_payloads)

    def _scan_segment(self, segno, off, chunk_payloads):
        fd = self._fd(segno)
        size = os.fstat(fd).st_size
        if size <= F.SEG_HEADER_LEN:
            if off > F.SEG_HEADER_LEN:
                raise IntegrityError(f"segment {segno} is shorter than the index says")
            if size < F.SEG_HEADER_LEN:
                err = F.FrameError("segment header truncated", torn=True)
                err.segno, err.offset = segno, 0
                raise err
            return
        self._check_header(segno)
        # Slicing the map copies; holding memoryviews into it would pin it open.
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
            while off < size:
                try:
                    ftype, key, payload, length = F.read_frame(mm, off, size)
                except F.FrameError as e:
                    e.segno, e.offset = segno, off
                    raise
                keep = ftype == F.T_EVENT or chunk_payloads
                yield Frame(segno, off, ftype, key, payload if keep else None,
                            len(payload), length)
                off += length

    def has_valid_frame_after(self, segno, offset):
        """Whether a complete, checksummed frame starts anywhere after ``offset`` in the
        segment: then the damage at ``offset`` is not a torn tail and must not be cut."""
        fd = self._fd(segno)
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
            pos = offset + 1
            while True:
                pos = mm.find(F.FRAME_MAGIC, pos)
                if pos < 0:
                    return False
                try:
                    F.read_frame(mm, pos, size)
                    return True
                except F.FrameError:
                    pos += 1

    def cut_tail(self, segno, offset, quarantine_dir):
        """Move bytes [offset, end) of the open segment to quarantine and truncate there."""
        if segno != self.cur_segno:
            raise IntegrityError(f"refusing to cut finished segment {segno}")
        fd = self.cur_fd
        size = os.fstat(fd).st_size
        tail = os.pread(fd, size - offset, offset)
        os.makedirs(quarantine_dir, exist_ok=True)
        qpath = os.path.join(quarantine_dir, f"{segno:010d}-{offset}.torn")
        with open(qpath, "wb") as q:
            q.write(tail)
            q.flush()
            os.fsync(q.fileno())
        fsync_dir(quarantine_dir)
        os.ftruncate(fd, offset)
        os.fsync(fd)
        self.cur_end = offset
        return qpath, len(tail)


def _pwrite_all(fd, data, offset):
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
