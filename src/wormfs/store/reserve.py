"""A few MiB kept free on a unit's disk for the changes that must work when it is full.

On a full disk a new file is refused (ENOSPC, and nothing is lost), but so would be a legal
hold, a retention extension, a deletion that frees space, or the audit event of a refusal:
each needs a frame in the log and LMDB pages. Databases keep a reserve for this; so does a
unit: ``UNIT/reserve``, RESERVE_BYTES allocated at every writable open when there is room.
When one of those essential changes finds the disk full, the store deletes the reserve and
tries once more (``Journal.mutate(reserve=True)``); ``reserve.used`` then marks that it is
gone, status says so, and it is made again once there is room (``ensure``)."""
import logging
import os

from .hostfs import fsync_dir

log = logging.getLogger("wormfs")

RESERVE_BYTES = 4 << 20
NAME, USED = "reserve", "reserve.used"


def ensure(unit_path):
    """Make the reserve if it is missing and the disk has room for it (and as much again).
    Returns whether it is there."""
    path = os.path.join(unit_path, NAME)
    if os.path.exists(path):
        return True
    try:
        st = os.statvfs(unit_path)
        if st.f_bavail * st.f_frsize < 2 * RESERVE_BYTES:
            return False
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
        try:
            os.unlink(os.path.join(unit_path, USED))
        except FileNotFoundError:
            pass
        fsync_dir(unit_path)
        return True
    except OSError as e:
        log.info("no space reserve in %s yet: %s", unit_path, e)
        try:
            os.unlink(path + ".tmp")
        except OSError:
            pass
        return False


def release(unit_path):
    """Give the reserve's space back to the disk (it is full). False if there is none."""
    path = os.path.join(unit_path, NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    try:
        open(os.path.join(unit_path, USED), "w").close()
        fsync_dir(unit_path)
    except OSError:
        pass  # the mark is for status; the space is what matters now
    log.warning("the disk under %s is full: its space reserve is released so that holds, "
                "extensions, deletions and audit events still work; free space on it",
                unit_path)
    return True


def in_use(unit_path):
    """Whether the reserve was used and is not back yet (status)."""
    return os.path.exists(os.path.join(unit_path, USED))
