"""Reading records: a record's manifest from the index, its chunks from the log, a small
cache of chunks, and a hook for a chunk that fails its checks.

The reader never writes. A damaged chunk goes to ``repair(cid, loc, damage)``, which the
store supplies (it fetches the frame from the duplicate and audits the repair); that hook
returns the chunk's sound bytes or raises, so a read returns the record's bytes or fails
(EIO), never other bytes.
"""
import collections
import threading

from ..errors import IntegrityError

CHUNK_CACHE_ENTRIES = 16  # a sequential read of a big record uses each chunk many times


class RecordReader:
    def __init__(self, log, ix, repair):
        self.log, self.ix, self.repair = log, ix, repair
        self._cache = collections.OrderedDict()  # chunk id -> bytes, least recent first
        self._lock = threading.Lock()

    def read(self, rec, offset, size):
        """Bytes [offset, offset + size) of sealed record ``rec`` (an Inode), cut at its end."""
        end = min(offset + size, rec.size)
        if offset >= end:
            return b""
        with self.ix.read() as txn:
            pieces = []
            for start, length, cid in self.ix.manifest_from(txn, rec.serial, offset):
                if start >= end:
                    break
                pieces.append((start, length, cid, self.ix.chunk(txn, cid)))
        out = []
        for start, length, cid, loc in pieces:
            if loc is None:
                raise IntegrityError(f"record {rec.serial}: chunk {cid.hex()[:16]} is not in "
                                     f"the index")
            data = self.chunk(cid, loc)
            lo, hi = max(offset, start) - start, min(end, start + length) - start
            out.append(data[lo:hi])
        return b"".join(out)

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
        with self._lock:
            self._cache[cid] = data
            if len(self._cache) > CHUNK_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return data

    def forget(self):
        """Drop the cached chunks (a test that damages a chunk on disk reads it again)."""
        with self._lock:
            self._cache.clear()
