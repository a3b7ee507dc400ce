"""Chunking an open file while it is written, so that sealing it at close has little left to do.

Writers mostly write a file front to back. A ``SealStream`` takes the writes of one open file in
file order, hashes them (the whole-file BLAKE3 digest), chunks them, and hands each batch of
complete chunks to the store, which appends the new ones to the log at once. Until the seal
event names them those chunk frames belong to no record; if the file is never sealed they stay
unreferenced (docs/FORMAT.md, "Chunk frames"). At the seal only the unfinished tail is left:
for a big file, close costs one chunk and one fdatasync instead of reading, hashing and
rewriting every byte.

The staged file remains the truth for reads, for crash recovery and for anything out of order.
Writes may arrive a little out of order (the kernel's writeback sends several at once and
worker threads race), so writes ahead of the stream's position wait in ``pending`` up to
``MAX_PENDING`` bytes. A write behind the position (a rewrite), a truncate that changes the
size, or too much waiting turns the stream off: the seal then chunks the staged file from the
start, and the chunks already appended are found again by dedup.
"""
import blake3

from .. import _chunker

MAX_PENDING = 32 << 20


class SealStream:
    """The in-order prefix of one open file, chunked. ``pos`` bytes have been fed."""

    def __init__(self, params):
        self.pos = 0
        self.disposals = 0        # the store's count of disposals when this stream began
        self.chunks = []          # [(length, chunk_id)] in file order, all in the log
        self.broken = False
        self._chunker = _chunker.StreamChunker(params)
        self._whole = blake3.blake3()
        self._pending = {}        # offset -> bytes that arrived ahead of pos
        self._pending_bytes = 0

    def add(self, offset, data, store_chunks):
        """Take bytes written at ``offset``. ``store_chunks(chunks)`` is called with every
        batch of completed chunks ``(offset, length, id, xxh3, view)``; the views are valid
        only during that call. Callers serialize (the store holds its ``OpenFile.lock``)."""
        if self.broken or not data:
            return
        if offset < self.pos:
            self.stop()
        elif offset > self.pos:
            if offset in self._pending or self._pending_bytes + len(data) > MAX_PENDING:
                self.stop()
            else:
                self._pending[offset] = bytes(data)  # the caller may reuse its buffer
                self._pending_bytes += len(data)
        else:
            self._feed(data, store_chunks)
            while not self.broken and self.pos in self._pending:
                more = self._pending.pop(self.pos)
                self._pending_bytes -= len(more)
                self._feed(more, store_chunks)
            if self._pending and min(self._pending) < self.pos:
                self.stop()  # a write ahead overlapped one fed since: a rewrite

    def _feed(self, data, store_chunks):
        self._whole.update(data)
        self.pos += len(data)
        got = self._chunker.feed(data)
        if got:
            self._keep(got, store_chunks)

    def _keep(self, got, store_chunks):
        store_chunks(got)
        self.chunks.extend((length, cid) for _, length, cid, _, _ in got)

    def usable(self, size):
        """Whether the stream holds exactly the file's ``size`` bytes, in order."""
        return not self.broken and not self._pending and self.pos == size

    def finish(self, store_chunks):
        """Cut the tail; returns the BLAKE3 hex digest of everything fed."""
        got = self._chunker.finish()
        if got:
            self._keep(got, store_chunks)
        return self._whole.hexdigest()

    def stop(self):
        """Give up: the seal will chunk the staged file instead. Rebinds rather than clears,
        and keeps the chunker: a seal running in another thread may still hold the chunk
        list and views into the chunker's buffers."""
        self.broken = True
        self._pending = {}
        self._pending_bytes = 0
        self.chunks = []
