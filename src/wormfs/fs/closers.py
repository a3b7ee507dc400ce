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

A process in another mount namespace (a container, a service with mounts of its own; or the
daemon is the one in another namespace and its mount reached the caller's by propagation)
sees our mount as another mount, with another mount id, maybe at another path. There the
mounts of our device (the same superblock in every namespace) in that process's own
mountinfo say which descriptors are ours: missing them sealed a file half-written when a
writer started a child (the child's copy closes at exec).
"""
import functools
import os

from . import mounts

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


def writable_fd_open(pid, ino, mountpoint, mount):
    """Whether ``pid`` or a descendant holds a descriptor open for writing on ``ino`` of
    our mount (``mount``: its MountEntry here, mounts.find)."""
    for p in family(pid):
        fd_dir = f"/proc/{p}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        prefixes, ids = _our_mounts(p, mountpoint, mount)
        if not prefixes:
            continue
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith(prefixes):
                    continue
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines()
                                if ":" in line)
            except (OSError, ValueError):
                continue
            try:
                if int(info.get("ino", "-1")) != ino:
                    continue
                if ids is not None and "mnt_id" in info and int(info["mnt_id"]) not in ids:
                    continue
                if int(info.get("flags", "0"), 8) & os.O_ACCMODE != os.O_RDONLY:
                    return True
            except ValueError:
                continue
    return False
