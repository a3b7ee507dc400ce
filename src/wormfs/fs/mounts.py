"""Reading /proc/PID/mountinfo: which wormfs mount is where, its kernel mount id and its
device (the same superblock shows under another mount id in every other mount namespace)."""
from typing import NamedTuple


class MountEntry(NamedTuple):
    mount_id: int
    mountpoint: str
    fstype: str
    source: str
    dev: str           # "major:minor" of the superblock: the same in every namespace


def _unescape(s):
    return (s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
             .replace("\\134", "\\"))


def entries(pid="self"):
    """Yield a MountEntry for every mount process ``pid`` sees (its mount namespace)."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        try:
            yield MountEntry(int(fields[0]), _unescape(fields[4]), tail[0],
                             _unescape(tail[1]), fields[2])
        except ValueError:
            continue


def find(mountpoint):
    """The MountEntry of the topmost mount at ``mountpoint`` that this process sees, or
    None."""
    found = None
    for e in entries():
        if e.mountpoint == mountpoint:
            found = e
    return found


def set_readahead(mountpoint, kib):
    """Set the kernel's read-ahead for a FUSE mount (its backing device info in sysfs).
    FUSE starts at 128 KiB, which makes a sequential read of a record one small request
    after another. Needs root; without it the default stays. Reads mountinfo rather than
    stat()ing the mount point, which would ask this very daemon before it serves."""
    hit = find(mountpoint)
    if hit is None:
        return False
    try:
        with open(f"/sys/class/bdi/{hit.dev}/read_ahead_kb", "w") as f:
            f.write(f"{kib}\n")
        return True
    except OSError:
        return False
