"""From what a user typed to a unit: a store directory, a mount point of it, or a path inside
a mount. Commands take any of these (SPEC: "a store directory (or a mount point of it)").

The mount's source in /proc/self/mountinfo is the unit directory the daemon serves (the
``fsname`` the daemon passes to FUSE), so a path inside a mount leads back to its unit
without asking the daemon anything.
"""
import os
from dataclasses import dataclass

from ..errors import StoreError
from ..fs import mounts
from ..mirror.s3bucket import is_s3

FSTYPE = "fuse.wormfs"


@dataclass(frozen=True)
class Place:
    unit: str               # the unit directory
    inner: str = None       # the path inside the store ('/a/b'), when one was named
    mountpoint: str = None  # where the unit is mounted, if it is

    def in_mount(self):
        """The path of ``inner`` through the mount (for calls that go through the kernel, so
        the daemon sees who asks)."""
        if self.mountpoint is None or self.inner is None:
            return None
        return os.path.join(self.mountpoint, self.inner.lstrip("/"))


def wormfs_mounts():
    """[(mountpoint, unit directory)] of every wormfs mount this process sees."""
    return [(mp, source) for _, mp, fstype, source, _ in mounts.entries()
            if fstype == FSTYPE]


def mountpoint_of(unit):
    """Where a unit directory is mounted, or None."""
    unit = os.path.abspath(unit)
    for mp, source in wormfs_mounts():
        if os.path.abspath(source) == unit:
            return mp
    return None


def _unit_dir(path):
    return os.path.isfile(os.path.join(path, "unit.json"))


def store(text):
    """A store directory or a mount point of it (or any path inside the mount), or an S3
    unit (s3://BUCKET/PREFIX), which is read into its local copy first (mirror/s3copy.py)."""
    if is_s3(text):
        from ..mirror.s3copy import fetch_for_reading
        unit = fetch_for_reading(text)
        return Place(unit, None, mountpoint_of(unit))
    path = os.path.abspath(text)
    hit = _mount_containing(path)
    if hit is not None:
        mp, source = hit
        return Place(source, None, mp)
    if _unit_dir(path):
        return Place(path, None, mountpoint_of(path))
    raise StoreError(f"{text} is not a wormfs unit (no unit.json there) and not inside a "
                     f"wormfs mount")


def record(text, store_dir=None):
    """A file inside a mount (``/srv/records/a/b``), or, with ``store_dir``, a path inside
    that store (``/a/b``), mounted or not."""
    if store_dir is not None:
        base = store(store_dir)
        inner = "/" + text.strip("/")
        return Place(base.unit, inner, base.mountpoint)
    path = os.path.abspath(text)
    hit = _mount_containing(path)
    if hit is None:
        raise StoreError(f"{text} is not inside a wormfs mount; for a store that is not "
                         f"mounted, give --store STORE and the path inside it (e.g. /a/b)")
    mp, source = hit
    rel = os.path.relpath(path, mp)
    return Place(source, "/" if rel == "." else "/" + rel, mp)


def _mount_containing(path):
    best = None
    for mp, source in wormfs_mounts():
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best[0]):
                best = (mp, source)
    return best
