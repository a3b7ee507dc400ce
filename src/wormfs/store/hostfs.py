"""What the store needs from the host file system: durable renames, atomic small files and the
immutable flag (chattr +i) on finished segments."""
import fcntl
import os
import struct

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


def set_immutable(path, on=True):
    """Set or clear FS_IMMUTABLE_FL. Returns False where the host cannot (tmpfs, no
    CAP_LINUX_IMMUTABLE): the flag is defence in depth, not what WORM rests on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        new = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        if new != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", new))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_immutable(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        return bool(flags & FS_IMMUTABLE_FL)
    except OSError:
        return False
    finally:
        os.close(fd)
