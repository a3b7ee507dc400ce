"""Reading /proc/self/mountinfo: which wormfs mount is where, and its kernel mount id."""


def _unescape(s):
    return (s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
             .replace("\\134", "\\"))


def entries():
    """Yield (mount_id, mountpoint, fstype, source) for every mount this process sees."""
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
            yield int(fields[0]), _unescape(fields[4]), tail[0], _unescape(tail[1])
        except ValueError:
            continue


def find(mountpoint):
    """(mount_id, fstype, source) of the topmost mount at ``mountpoint``, or None."""
    found = None
    for mid, mp, fstype, source in entries():
        if mp == mountpoint:
            found = (mid, fstype, source)
    return found


def mount_id(mountpoint):
    hit = find(mountpoint)
    return hit[0] if hit else None
