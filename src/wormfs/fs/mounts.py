"""Reading /proc/self/mountinfo: which wormfs mount is where, and its kernel mount id."""


def _unescape(s):
    return (s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
             .replace("\\134", "\\"))


def entries():
    """Yield (mount_id, mountpoint, fstype, source, "major:minor") for every mount this
    process sees."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        try:
            yield int(fields[0]), _unescape(fields[4]), tail[0], _unescape(tail[1]), fields[2]
        except ValueError:
            continue


def find(mountpoint):
    """(mount_id, fstype, source, "major:minor") of the topmost mount at ``mountpoint``, or
    None."""
    found = None
    for mid, mp, fstype, source, dev in entries():
        if mp == mountpoint:
            found = (mid, fstype, source, dev)
    return found


def mount_id(mountpoint):
    hit = find(mountpoint)
    return hit[0] if hit else None


def set_readahead(mountpoint, kib):
    """Set the kernel's read-ahead for a FUSE mount (its backing device info in sysfs).
    FUSE starts at 128 KiB, which makes a sequential read of a record one small request
    after another. Needs root; without it the default stays. Reads mountinfo rather than
    stat()ing the mount point, which would ask this very daemon before it serves."""
    hit = find(mountpoint)
    if hit is None:
        return False
    try:
        with open(f"/sys/class/bdi/{hit[3]}/read_ahead_kb", "w") as f:
            f.write(f"{kib}\n")
        return True
    except OSError:
        return False
