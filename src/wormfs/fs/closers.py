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

A multithreaded writer whose other thread starts a program (``subprocess.run``) forks a child
that holds a copy of every descriptor of the process for the moment between fork and exec. If
the writer closes its file in that moment, the child's copy is a writable descriptor of the
opener's family, and the seal would wait for the child's exec: close() would return on a file
not yet sealed. A copy in a child that is marked close-on-exec is about to go, so the check
polls for a short while (EXEC_WAIT_S) for such copies to vanish before it answers. It never
seals while any copy is there: a child that does not exec (a forked worker) only makes the
close wait that long, and the seal then waits for that child's last close, as before.

A process in another mount namespace (a container, a service with mounts of its own; or the
daemon is the one in another namespace and its mount reached the caller's by propagation)
sees our mount as another mount, with another mount id, maybe at another path. There the
mounts of our device (the same superblock in every namespace) in that process's own
mountinfo say which descriptors are ours: missing them sealed a file half-written when a
writer started a child (the child's copy closes at exec).

The walk's system calls go through _procfs (csrc/_procfs.pyx), which makes each batch of them
with the GIL let go once: done from Python they gave it away at every call, and a writer with
eight threads paid for some fifty hand-offs of the lock per close (bench/RESULTS.md).
"""
import functools
import os
import time

from .. import _procfs
from . import mounts

MAX_FAMILY = 256  # a bound, in case the opener is a process manager with many children
# How long a FLUSH waits for close-on-exec copies in children to go at their exec: a fork+exec
# takes well under a millisecond to tens of milliseconds on a loaded machine.
EXEC_WAIT_S = 0.5
HELD, LEAVING = "held", "leaving"
DELETED = " (deleted)"  # what /proc adds to the link of a descriptor whose file is unlinked
_LINK_MAX = 4096  # _procfs.readlinks reads this much of a link, as os.readlink does


def family(pid):
    """``pid`` and its descendants (bounded), a generation at a time."""
    out, i = [pid], 0
    while i < len(out) and len(out) < MAX_FAMILY:
        generation, i = out[i:], len(out)
        out.extend(_procfs.children(generation))
    return out[:MAX_FAMILY]


def _namespace(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _own_namespace():
    """The daemon's mount namespace: it never changes, so it is read once, not at every
    FLUSH."""
    return _namespace("self")


def _our_mounts(pid, mountpoint, mount):
    """(path prefixes, mount ids or None for any) under which process ``pid`` sees our
    mount: ours as we mounted it in our own namespace, else the mounts of our device in
    its mountinfo."""
    if mount is None:
        return (mountpoint.rstrip("/") + "/",), None
    if _namespace(pid) == _own_namespace():
        return (mountpoint.rstrip("/") + "/",), {mount.mount_id}
    seen = [e for e in mounts.entries(pid) if e.dev == mount.dev]
    return (tuple(e.mountpoint.rstrip("/") + "/" for e in seen),
            {e.mount_id for e in seen})


def writable_fd_open(pid, ino, mountpoint, mount, names=None, wait_s=EXEC_WAIT_S):
    """Whether ``pid`` or a descendant holds a descriptor open for writing on ``ino`` of
    our mount (``mount``: its MountEntry here, mounts.find). ``names``: every name the file
    has had while these descriptors can exist (None: any), see holders. Copies that are only
    about to go at a child's exec are waited for, up to ``wait_s``."""
    found = holders(pid, ino, mountpoint, mount, names)
    deadline = time.monotonic() + wait_s
    pause = 0.001
    while found is LEAVING and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
        found = holders(pid, ino, mountpoint, mount, names)
    return found is not None


def holders(pid, ino, mountpoint, mount, names=None):
    """None if no one in the family holds a writable descriptor on ``ino``; LEAVING if only
    children do, each through a close-on-exec descriptor; HELD otherwise.

    A descriptor's link in /proc ends with the name its file has now (a file has one name:
    hard links are refused), with " (deleted)" once unlinked, in every mount namespace and
    under any bind mount. With ``names`` (a set the caller may still add to), only
    descriptors ending in one of them are ours to read the fdinfo of: that read, not the
    readlink, is what cost 31 ms per close to a writer holding 1000 files open."""
    found = None
    for p in family(pid):
        links = _procfs.readlinks(b"/proc/%d/fd" % p)
        if links is None:
            continue  # gone, or not ours to look at
        prefixes, ids = _our_mounts(p, mountpoint, mount)
        if not prefixes:
            continue
        wanted = []
        for fd, target in links:
            link = os.fsdecode(target)
            if not link.startswith(prefixes):
                continue
            if names is not None and len(target) < _LINK_MAX - 1:  # a cut link: read it
                base = link.rpartition("/")[2]
                if base not in names and not (base.endswith(DELETED) and
                                              base[:-len(DELETED)] in names):
                    continue
            wanted.append(fd)
        if not wanted:
            continue
        for data in _procfs.read_files([b"/proc/%d/fdinfo/%s" % (p, fd) for fd in wanted]):
            if data is None:
                continue  # closed meanwhile
            try:
                info = dict(line.split(":", 1) for line in data.decode().splitlines()
                            if ":" in line)
            except (UnicodeDecodeError, ValueError):
                continue
            try:
                if int(info.get("ino", "-1")) != ino:
                    continue
                if ids is not None and "mnt_id" in info and int(info["mnt_id"]) not in ids:
                    continue
                flags = int(info.get("flags", "0"), 8)
            except ValueError:
                continue
            if flags & os.O_ACCMODE == os.O_RDONLY:
                continue
            # The opener's own copies (a dup, the shell's dup2 onto stdout) are held whatever
            # their flags; so is anything a child may go on writing through after an exec.
            if p == pid or not flags & os.O_CLOEXEC:
                return HELD
            found = LEAVING
    return found
