"""Is a file still open for writing by the process that opened it (or its children)?

FUSE sends FLUSH on every close(2) of a descriptor and RELEASE, asynchronously, only when the
last reference to the open file description goes. Sealing must happen in FLUSH so that close()
returns after the seal, but a FLUSH is not always the last close: a shell runs
``open; dup2(fd, 1); close(fd)`` before the command writes to stdout, and a parent may hand a
descriptor to a child and close its own copy. FLUSH carries no pid in pyfuse3, so we look at
the opener and its descendants in /proc: if any of them still holds a writable descriptor on
this inode of this mount, the seal waits for a later FLUSH (or, failing that, RELEASE).

At FLUSH time the kernel has already removed the closing descriptor from the fd table, and a
process that is exiting has no fd table any more, so neither is counted.
"""
import os

MAX_FAMILY = 256  # a bound, in case the opener is a process manager with many children


def family(pid):
    """``pid`` and its descendants (bounded)."""
    out, i = [pid], 0
    while i < len(out) and len(out) < MAX_FAMILY:
        p = out[i]
        i += 1
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out[:MAX_FAMILY]


def writable_fd_open(pid, ino, mountpoint, mnt_id):
    """Whether ``pid`` or a descendant holds a descriptor open for writing on ``ino``."""
    prefix = mountpoint.rstrip("/") + "/"
    for p in family(pid):
        fd_dir = f"/proc/{p}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith(prefix):
                    continue
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines()
                                if ":" in line)
            except (OSError, ValueError):
                continue
            try:
                if int(info.get("ino", "-1")) != ino:
                    continue
                if mnt_id is not None and int(info.get("mnt_id", mnt_id)) != mnt_id:
                    continue
                if int(info.get("flags", "0"), 8) & os.O_ACCMODE != os.O_RDONLY:
                    return True
            except ValueError:
                continue
    return False
