# cython: language_level=3
"""The /proc reads of the last-close check (fs/closers.py), made in bulk with the GIL let go
once per call.

The same walk written with os.listdir, os.readlink and open().read() let the interpreter's
lock go at every readdir, readlink, open, fstat, ioctl, lseek, read and close: some fifty
times a close for a writer with eight threads. With other threads waiting for the lock each
of those is a wake-up and a context switch, and with eight writers a third of the daemon's
CPU went there (bench/RESULTS.md). These functions do the same system calls and return what
Python's would, with the lock released once.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, strlen


cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)
    int dirfd(DIR *dirp)

cdef extern from "<fcntl.h>" nogil:
    int c_open "open"(const char *pathname, int flags)
    int openat(int dirfd, const char *pathname, int flags)
    int O_RDONLY
    int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void *buf, size_t count)
    int c_close "close"(int fd)
    ssize_t readlinkat(int dirfd, const char *pathname, char *buf, size_t bufsiz)


DEF LINK_MAX = 4096
DEF CHUNK = 4096


cdef struct Buf:
    char *p
    size_t n
    size_t cap


cdef int _reserve(Buf *b, size_t more) noexcept nogil:
    cdef size_t cap
    cdef char *q
    if b.n + more <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 8192
    while cap < b.n + more:
        cap *= 2
    q = <char *>realloc(b.p, cap)
    if q == NULL:
        return -1
    b.p, b.cap = q, cap
    return 0


cdef int _put(Buf *b, const char *s, size_t n) noexcept nogil:
    if _reserve(b, n) < 0:
        return -1
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


DEF NO_MEMORY = -2


cdef ssize_t _slurp(int dfd, const char *path, Buf *b) noexcept nogil:
    """Append the whole file at ``path`` (relative to ``dfd``, or absolute) to ``b``; its
    length, -1 if it cannot be read, NO_MEMORY if ``b`` cannot hold it."""
    cdef int fd = openat(dfd, path, O_RDONLY | O_CLOEXEC)
    cdef size_t start = b.n
    cdef ssize_t got
    if fd < 0:
        return -1
    while True:
        if _reserve(b, CHUNK) < 0:
            c_close(fd)
            b.n = start
            return NO_MEMORY
        got = c_read(fd, b.p + b.n, CHUNK)
        if got < 0:
            c_close(fd)
            b.n = start
            return -1
        if got == 0:
            break
        b.n += got
    c_close(fd)
    return <ssize_t>(b.n - start)


cdef bint _skip(const char *name) noexcept nogil:
    return name[0] == b'.'


def readlinks(bytes directory):
    """[(name, target)] of the symbolic links in ``directory`` (a /proc/PID/fd), as
    os.listdir and os.readlink give them (bytes); entries whose link cannot be read (closed
    meanwhile) are left out. None if the directory cannot be opened."""
    cdef const char *path = directory
    cdef Buf b
    cdef DIR *d
    cdef dirent *e
    cdef char link[LINK_MAX]
    cdef ssize_t n
    cdef size_t nl
    cdef int failed = 0
    b.p, b.n, b.cap = NULL, 0, 0
    with nogil:
        d = opendir(path)
        if d != NULL:
            while True:
                e = readdir(d)
                if e == NULL:
                    break
                if _skip(e.d_name):
                    continue
                n = readlinkat(dirfd(d), e.d_name, link, LINK_MAX)
                if n < 0:
                    continue
                nl = strlen(e.d_name)
                # name \0 target \0: neither holds a NUL
                if (_put(&b, e.d_name, nl + 1) < 0 or _put(&b, link, <size_t>n) < 0 or
                        _put(&b, b"\0", 1) < 0):
                    failed = 1
                    break
            closedir(d)
    if d == NULL:
        free(b.p)
        return None
    if failed:
        free(b.p)
        raise MemoryError()
    try:
        parts = PyBytes_FromStringAndSize(b.p, b.n).split(b"\0") if b.n else [b""]
    finally:
        free(b.p)
    return list(zip(parts[0:-1:2], parts[1:-1:2]))


def read_files(paths):
    """The contents of each file of ``paths`` (a list of bytes), or None for one that
    cannot be read."""
    cdef Py_ssize_t count = len(paths), i
    cdef const char **cpaths
    cdef ssize_t *lens
    cdef Buf b
    cdef size_t pos = 0
    cdef int failed = 0
    keep = [bytes(p) for p in paths]
    cpaths = <const char **>malloc(max(count, 1) * sizeof(char *))
    lens = <ssize_t *>malloc(max(count, 1) * sizeof(ssize_t))
    if cpaths == NULL or lens == NULL:
        free(cpaths)
        free(lens)
        raise MemoryError()
    for i in range(count):
        cpaths[i] = <bytes>keep[i]
    b.p, b.n, b.cap = NULL, 0, 0
    try:
        with nogil:
            for i in range(count):
                lens[i] = _slurp(-100, cpaths[i], &b)  # AT_FDCWD: the paths are absolute
                if lens[i] == NO_MEMORY:
                    failed = 1  # never a file that exists reported as one that does not
                    break
        if failed:
            raise MemoryError()
        out = []
        for i in range(count):
            if lens[i] < 0:
                out.append(None)
            else:
                out.append(PyBytes_FromStringAndSize(b.p + pos, lens[i]))
                pos += lens[i]
        return out
    finally:
        free(b.p)
        free(cpaths)
        free(lens)


def children(pids):
    """The child pids of every thread of each process in ``pids``, in order
    (/proc/PID/task/TID/children), as one list of ints; a process gone meanwhile has none."""
    cdef Py_ssize_t count = len(pids), i
    cdef long *cp
    cdef Buf b
    cdef DIR *d
    cdef dirent *e
    cdef char path[64]
    cdef char rel[320]
    cdef int failed = 0
    cdef ssize_t n
    cp = <long *>malloc(max(count, 1) * sizeof(long))
    if cp == NULL:
        raise MemoryError()
    for i in range(count):
        cp[i] = int(pids[i])
    b.p, b.n, b.cap = NULL, 0, 0
    try:
        with nogil:
            for i in range(count):
                snprintf(path, sizeof(path), b"/proc/%ld/task", cp[i])
                d = opendir(path)
                if d == NULL:
                    continue
                while True:
                    e = readdir(d)
                    if e == NULL:
                        break
                    if _skip(e.d_name):
                        continue
                    snprintf(rel, sizeof(rel), b"%s/children", e.d_name)
                    n = _slurp(dirfd(d), rel, &b)
                    if n == NO_MEMORY or (n > 0 and _put(&b, b" ", 1) < 0):
                        failed = 1
                closedir(d)
        if failed:
            raise MemoryError()  # never a family with children left out
        text = PyBytes_FromStringAndSize(b.p, b.n) if b.n else b""
    finally:
        free(b.p)
        free(cp)
    return [int(c) for c in text.split()]
