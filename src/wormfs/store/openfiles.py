"""Files that are not records yet: their staged bytes and the stream that chunks them.

An ``OpenFile`` is the mechanics of one such file: its staging descriptor, its size and
times, and the SealStream (sealstream.py) that chunks it while it is written in order. What
may be done to it, and the refusals, are the store's (store.py); the store's table of open
files and its lock hold them.
"""
import logging
import os
import threading

from ..errors import IntegrityError, WormError
from .sealstream import SealStream

log = logging.getLogger("wormfs.store")

SEAL_READ_BLOCK = 4 << 20


class OpenFile:
    """A file that is not a record yet: its bytes live in staging/<ino>.

    ``mtime``/``atime`` set while it is open are kept here, not logged: the kernel's writeback
    cache sends one such setattr per close, and the seal event records the final mtime.
    ``orphan`` holds the Inode of a file unlinked while the mount still had it open.
    ``stream`` chunks the file while it is written (sealstream.py). ``lock`` orders the
    size and the stream among concurrent writes to the same file."""

    __slots__ = ("ino", "fd", "size", "mtime", "atime", "ctime", "orphan", "touched", "stream",
                 "lock", "sealing")

    def __init__(self, ino, fd, size, stream=None):
        self.ino, self.fd, self.size, self.stream = ino, fd, size, stream
        # Times of the open file kept in memory until the seal (no event per write); ctime
        # moves with every change, as POSIX has it (data, size, times).
        self.mtime = self.atime = self.ctime = self.orphan = None
        self.touched = None  # boot-clock us of the last change (for the scratch TTL)
        self.lock = threading.Lock()
        # Set under ``lock`` once a seal has taken the file's size: a write or truncate
        # that comes after it is refused, never accepted into bytes the record lacks.
        self.sealing = False

    def set_times(self, mtime, atime, now):
        if mtime is not None:
            self.mtime = mtime
        if atime is not None:
            self.atime = atime
        self.ctime = now

    def changed(self, now):
        """Its data or size changed at wall time ``now``."""
        self.mtime = self.ctime = now

    def grow(self, offset, data, n, store_chunks):
        """(under ``lock``) The size and the chunk stream after a write of ``n`` bytes;
        ``store_chunks`` takes the chunks the stream cuts (the journal appends them)."""
        if offset + n > self.size:
            self.size = offset + n
        if self.stream is None:
            return
        try:
            self.stream.add(offset, memoryview(data)[:n], store_chunks)
        except (WormError, OSError) as e:
            # The staged bytes are safe; the seal will chunk them and report a lasting
            # problem itself.
            log.warning("inode %d: chunking while written stopped: %s", self.ino, e)
            self.end_stream()
        else:
            if self.stream.broken:
                self.end_stream()

    def end_stream(self):
        if self.stream is not None:
            self.stream.stop()
            self.stream = None


def stream_staged(of, params, disposals, store_chunks):
    """A stream fed with the whole staged file: the seal's way when the file was not
    (entirely) written in order."""
    st = SealStream(params)
    st.disposals = disposals
    buf = bytearray(max(1, min(SEAL_READ_BLOCK, of.size)))  # small files: small buffer
    mv = memoryview(buf)
    while st.pos < of.size:
        n = os.preadv(of.fd, [buf], st.pos)
        if n <= 0:
            break
        st.add(st.pos, mv[:n], store_chunks)
    if st.pos != of.size:
        raise IntegrityError(f"staged file of inode {of.ino} is {st.pos} bytes, expected "
                             f"{of.size}")
    return st
