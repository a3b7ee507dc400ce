"""Stat attributes of an inode dict, as the kernel sees them.

Conventions: a record's mode has no write bits; its atime shows its retain-until (as on
SnapLock), since the atime convention sets retention and reading never changes it;
directories count their links as POSIX does (2 + subdirectories); a file unlinked while
open has none.
"""
import stat

import pyfuse3

from .. import retention

# How long the kernel may trust what we tell it. Records change only through wormfs calls
# (retention shown as atime), so a short timeout is enough. Open files: every write reaches
# the daemon (direct I/O) and the kernel keeps its size from the write replies, and every
# seal invalidates the cached attributes and pages (operations.forget_data), so a second
# saves the two GETATTRs that a small file's open and write would otherwise cost.
ENTRY_TIMEOUT = 60
ATTR_TIMEOUT_RECORD = 2
ATTR_TIMEOUT_OPEN = 1
ATTR_TIMEOUT_DIR = 1
BLKSIZE = 128 * 1024


def private(dir_rec):
    """Whether some user may not search ``dir_rec``: then the kernel must not answer a path
    walk through it from its caches (without default_permissions it checks no search
    permission itself), so its entries are looked up, and checked, every time."""
    return dir_rec.mode & 0o111 != 0o111


def entry(rec, uncached=False):
    e = pyfuse3.EntryAttributes()
    e.st_ino = rec.ino
    e.generation = 0
    e.entry_timeout = 0 if uncached else ENTRY_TIMEOUT
    size = rec.size
    atime = rec.atime
    if rec.is_dir:
        e.st_mode = stat.S_IFDIR | rec.mode
        e.attr_timeout = ATTR_TIMEOUT_DIR
        size = 4096
    else:
        e.st_mode = stat.S_IFREG | rec.mode
        if rec.sealed:
            e.attr_timeout = ATTR_TIMEOUT_RECORD
            kind, until = retention.effective(rec.retention)
            if kind == "until" and until is not None:
                atime = until
        else:
            e.attr_timeout = ATTR_TIMEOUT_OPEN
    if rec.is_dir:
        e.st_nlink = 2 + rec.subdirs
    else:
        e.st_nlink = 0 if rec.orphan else 1
    if uncached:
        e.attr_timeout = 0
    e.st_uid = rec.uid
    e.st_gid = rec.gid
    e.st_rdev = 0
    e.st_size = size
    e.st_blksize = BLKSIZE
    e.st_blocks = (size + 511) // 512
    e.st_atime_ns = atime * 1000
    e.st_mtime_ns = rec.mtime * 1000
    e.st_ctime_ns = rec.ctime * 1000
    return e
