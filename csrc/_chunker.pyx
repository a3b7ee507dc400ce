# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FastCDC 2020 chunking with BLAKE3-256 ids and xxh3-64 checksums: the store's hot path.

Cut points come from the C kernel in fastcdc.c, run on whole buffers with the GIL released.
``StreamChunker`` takes successive buffers (FUSE delivers up to 1 MiB per write, a seal reads
the staged file in larger blocks) and gives back complete chunks; the cut points are the same
however the stream is split, because a cut is only decided once ``max_size`` bytes (or the end
of the stream) are available after the chunk's start.

Buffers are reused, not reallocated: only the unfinished tail of one feed (< max_size bytes)
is copied and joined with the head of the next; every other chunk is a zero-copy view into the
caller's buffer. Views are valid until the next call on the same chunker.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

import blake3 as _blake3
import xxhash as _xxhash

cdef extern from "fastcdc.h" nogil:
    ctypedef struct wormfs_cdc_params:
        uint32_t min_size
        uint32_t avg_size
        uint32_t max_size
    int wormfs_cdc_init(wormfs_cdc_params *p, uint32_t min_size, uint32_t avg_size,
                        uint32_t max_size, int normalization)
    size_t wormfs_cdc_cut(const wormfs_cdc_params *p, const uint8_t *buf, size_t length)

# The store's chunking parameters. They are written into every unit.json at mkfs; changing the
# defaults only affects stores created afterwards.
DEFAULT_MIN_SIZE = 16 * 1024
DEFAULT_AVG_SIZE = 64 * 1024
DEFAULT_MAX_SIZE = 256 * 1024
DEFAULT_NORMALIZATION = 1

cdef object _b3 = _blake3.blake3
cdef object _xxh3 = _xxhash.xxh3_64_intdigest


cdef class Params:
    """Validated chunking parameters (sizes in bytes)."""
    cdef wormfs_cdc_params p
    cdef readonly int normalization

    def __init__(self, uint32_t min_size=DEFAULT_MIN_SIZE, uint32_t avg_size=DEFAULT_AVG_SIZE,
                 uint32_t max_size=DEFAULT_MAX_SIZE, int normalization=DEFAULT_NORMALIZATION):
        if wormfs_cdc_init(&self.p, min_size, avg_size, max_size, normalization) != 0:
            raise ValueError(
                f"bad chunking parameters min={min_size} avg={avg_size} max={max_size} "
                f"normalization={normalization}: need 64 <= min <= avg <= max <= 16 MiB, "
                f"avg >= 256, max >= 1024, normalization 0..3")
        self.normalization = normalization

    @property
    def min_size(self):
        return self.p.min_size

    @property
    def avg_size(self):
        return self.p.avg_size

    @property
    def max_size(self):
        return self.p.max_size

    def __repr__(self):
        return (f"Params(min_size={self.p.min_size}, avg_size={self.p.avg_size}, "
                f"max_size={self.p.max_size}, normalization={self.normalization})")


def cut_points(buf, Params params=None):
    """End offsets of the chunks of ``buf``, treated as a whole stream (its end is the end of
    the last chunk). Runs without the GIL."""
    if params is None:
        params = Params()
    cdef Py_buffer view
    cdef size_t pos = 0, n, c
    cdef list ends = []
    cdef size_t batch[1024]
    cdef int k, i
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        n = <size_t>view.len
        while pos < n:
            # Cut up to 1024 chunks per GIL release so huge buffers need no big allocation.
            with nogil:
                k = 0
                while pos < n and k < 1024:
                    c = wormfs_cdc_cut(&params.p, <const uint8_t *>view.buf + pos, n - pos)
                    pos += c
                    batch[k] = pos
                    k += 1
            for i in range(k):
                ends.append(batch[i])
    finally:
        PyBuffer_Release(&view)
    return ends


cdef class _TailBuffer:
    """Owns one of a chunker's tail buffers and exposes it through the buffer protocol,
    read-only. Freed when neither the chunker nor any view of it is left."""
    cdef uint8_t *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]

    def __cinit__(self):
        self.ptr = NULL

    def __dealloc__(self):
        if self.ptr != NULL:
            PyMem_Free(self.ptr)

    @staticmethod
    cdef _TailBuffer alloc(size_t size):
        cdef _TailBuffer b = _TailBuffer.__new__(_TailBuffer)
        b.ptr = <uint8_t *>PyMem_Malloc(size)
        if b.ptr == NULL:
            raise MemoryError()
        b.size = <Py_ssize_t>size
        return b

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self.shape[0] = self.size
        buffer.buf = self.ptr
        buffer.obj = self
        buffer.len = self.size
        buffer.readonly = 1
        buffer.itemsize = 1
        buffer.format = NULL
        buffer.ndim = 1
        buffer.shape = self.shape
        buffer.strides = NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL

    def __releasebuffer__(self, Py_buffer *buffer):
        pass


cdef class StreamChunker:
    """Incremental chunker. ``feed(data)`` and ``finish()`` return lists of chunks, each a
    tuple ``(offset, length, blake3_id, xxh3_64, view)``: the stream offset, the length, the
    32-byte BLAKE3-256 digest, the xxh3-64 of the bytes (seed 0), and a read-only memoryview of
    the bytes, valid until the next call. With ``hash=False`` id and checksum are None.

    Two tail buffers alternate: the bytes left over by one call are copied into the buffer that
    none of that call's views point into, so returned views stay intact until the next call.
    The buffers belong to ``_TailBuffer`` objects that the views reference, so a view that
    outlives the chunker still points to live (if stale) memory."""
    cdef Params params
    cdef uint8_t *bufs[2]
    cdef tuple views           # persistent memoryviews over the two _TailBuffers
    cdef int cur               # which buffer holds the tail
    cdef size_t tail_len
    cdef size_t cap
    cdef readonly unsigned long long offset   # stream offset of the first unfinished byte
    cdef bint do_hash
    cdef bint finished

    def __cinit__(self):
        self.bufs[0] = NULL
        self.bufs[1] = NULL

    def __init__(self, Params params=None, bint hash=True):
        self.params = params if params is not None else Params()
        # A tail (< max) plus up to max bytes of the next feed decides at least one cut.
        self.cap = 2 * <size_t>self.params.p.max_size
        cdef _TailBuffer t0 = _TailBuffer.alloc(self.cap)
        cdef _TailBuffer t1 = _TailBuffer.alloc(self.cap)
        self.bufs[0] = t0.ptr
        self.bufs[1] = t1.ptr
        self.views = (memoryview(t0), memoryview(t1))
        self.cur = 0
        self.tail_len = 0
        self.offset = 0
        self.do_hash = hash
        self.finished = False

    cdef inline void _emit(self, list out, object base, size_t start, size_t length):
        view = base[start:start + length]
        if self.do_hash:
            out.append((self.offset, length, _b3(view).digest(), _xxh3(view), view))
        else:
            out.append((self.offset, length, None, None, view))
        self.offset += length

    cdef void _keep(self, const uint8_t *src, size_t n):
        # The leftover goes into the other buffer: this call's views may point into ours.
        cdef int other = 1 - self.cur
        memmove(self.bufs[other], src, n)
        self.tail_len = n
        self.cur = other

    def feed(self, data):
        """Add bytes; return the chunks they complete."""
        if self.finished:
            raise ValueError("feed() after finish()")
        cdef list out = []
        cdef Py_buffer view
        cdef const uint8_t *src
        cdef uint8_t *a
        cdef size_t n, used = 0, take, c, start = 0, t, filled
        cdef size_t maxs = self.params.p.max_size
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            src = <const uint8_t *>view.buf
            n = <size_t>view.len
            if self.tail_len > 0:
                a = self.bufs[self.cur]
                t = self.tail_len
                take = min(n, self.cap - t)
                memcpy(a + t, src, take)
                filled = t + take
                while filled - start >= maxs:
                    with nogil:
                        c = wormfs_cdc_cut(&self.params.p, a + start, filled - start)
                    self._emit(out, self.views[self.cur], start, c)
                    start += c
                    if start >= t:
                        break
                if start < t:
                    # Too little for another decision; then all of data was copied (see the
                    # cap): filled - start < max and start < t < max imply filled < cap.
                    self._keep(a + start, filled - start)
                    return out
                # The last chunk ended inside the bytes of this feed: go on zero-copy there.
                used = start - t
                self.tail_len = 0
            mv = None
            while n - used >= maxs:
                if mv is None:
                    mv = memoryview(data).cast("B")
                with nogil:
                    c = wormfs_cdc_cut(&self.params.p, src + used, n - used)
                self._emit(out, mv, used, c)
                used += c
            if used < n:
                self._keep(src + used, n - used)
        finally:
            PyBuffer_Release(&view)
        return out

    def finish(self):
        """End of stream: return the remaining chunks (the last may be short)."""
        cdef list out = []
        cdef size_t start = 0, c
        cdef uint8_t *a = self.bufs[self.cur]
        if self.finished:
            return out
        self.finished = True
        while start < self.tail_len:
            with nogil:
                c = wormfs_cdc_cut(&self.params.p, a + start, self.tail_len - start)
            self._emit(out, self.views[self.cur], start, c)
            start += c
        self.tail_len = 0
        return out
