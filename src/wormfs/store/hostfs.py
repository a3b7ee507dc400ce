"""What the store needs from the host file system: durable renames, atomic small files and the
immutable flag (chattr +i) on finished segments."""
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import stat
import struct

from ..errors import StoreError

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data):
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def unlink_quiet(path):
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def try_lock(path, create=True):
    """Take an exclusive flock on ``path`` without waiting: the open fd, or None when another
    process holds it (or, with ``create=False``, when the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unit_in_use(unit_path):
    """Whether another process holds a unit (its mount's daemon, or a primary replicating to
    it): then work that changes it must be asked of that process."""
    fd = try_lock(os.path.join(unit_path, "lock"))
    if fd is None:
        return True
    os.close(fd)
    return False


@contextlib.contextmanager
def unit_locked(unit_path, busy):
    """Hold a unit's lock for the block (commands that change a unit which must not be in
    use); StoreError(``busy``) at once if another process holds it."""
    fd = try_lock(os.path.join(unit_path, "lock"))
    if fd is None:
        raise StoreError(busy)
    try:
        yield
    finally:
        os.close(fd)


def _flags(path, change=None):
    """Read FS_IOC_GETFLAGS of a file and, with ``change(flags) -> flags``, write it back.
    Returns the flags before the change, or None where the host has no such flags."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        new = flags if change is None else change(flags)
        if new != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", new))
        return flags
    except OSError:
        return None
    finally:
        os.close(fd)


def set_immutable(path, on=True):
    """Set or clear FS_IMMUTABLE_FL. Returns False where the host cannot (tmpfs, no
    CAP_LINUX_IMMUTABLE): the flag is defence in depth, not what WORM rests on."""
    def change(flags):
        return flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
    return _flags(path, change) is not None


def is_immutable(path):
    flags = _flags(path)
    return flags is not None and bool(flags & FS_IMMUTABLE_FL)


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _libc


def syncfs(path):
    """Make everything written to the file system holding ``path`` durable (syncfs(2)):
    one call instead of an fsync per file for a tree of many files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _c().syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def punch_hole(fd, offset, length):
    """Deallocate a byte range of a file, which then reads as zeros (fallocate
    PUNCH_HOLE|KEEP_SIZE). False where the host file system cannot; the caller writes zeros
    instead."""
    if length <= 0:
        return True
    return _c().fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                           length) == 0


# -- who may read a unit --------------------------------------------------------------------
# A unit holds the records' bytes in the clear: only root may read it (SPEC "unit
# permissions"; Reg S-P). Directories 0700, files 0600, finished segments 0400.

def _wanted_mode(path, is_dir):
    if is_dir:
        return 0o700
    if path.endswith(".seg"):
        return 0o400  # finished: nobody writes it again
    return 0o600


def loose_paths(unit_path, limit=20):
    """Paths in a unit that anyone but the owner may read, write or search (at most
    ``limit``; the unit directory itself first). Symbolic links have no mode of their own
    and are not counted."""
    out = []
    for dirpath, dirs, files in os.walk(unit_path):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                out.append(p)
                if len(out) >= limit:
                    return out
    return out


def tighten(unit_path):
    """Make a unit readable by root alone (a unit made by an older wormfs was 0755/0644).
    Finished segments keep their immutable flag: it is lifted for the chmod only."""
    for p in loose_paths(unit_path, limit=1 << 30):
        is_dir = os.path.isdir(p)
        mode = _wanted_mode(p, is_dir)
        immutable = not is_dir and is_immutable(p)
        try:
            if immutable:
                set_immutable(p, False)
            os.chmod(p, mode)
        except OSError:
            pass
        finally:
            if immutable:
                set_immutable(p, True)
