"""Changing who mirrors whom: a new mirror for a primary (``wormfs mirror resync``) and a
mirror that becomes the primary when the primary is lost (``wormfs mirror promote``).

Both rewrite unit.json, the only time it changes after mkfs, and both are events in the log:
'mirror_paired' when a primary gets a new mirror unit, 'promote' when a mirror continues the
log as its primary. They run on a store that is not mounted: they hold the units' locks.
"""
import os

from ..errors import StoreError
from ..store.hostfs import unit_locked
from ..store.unit import new_serial, read_unit, rewrite_unit, write_unit
from .shipper import STATE_FILE


def nearest_dev(path):
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return os.stat(p).st_dev


def check_mirror_place(primary_path, mirror_path, allow_same_device):
    """Refuse a mirror inside the primary (or the other way round), a non-empty directory,
    or the primary's device without ``allow_same_device``. Returns whether it is the same
    device."""
    if mirror_path == primary_path or mirror_path.startswith(primary_path + "/") or \
            primary_path.startswith(mirror_path + "/"):
        raise StoreError("the mirror must be a directory apart from the store")
    if os.path.exists(mirror_path) and (not os.path.isdir(mirror_path) or
                                        os.listdir(mirror_path)):
        raise StoreError(f"{mirror_path} is not an empty directory; a new mirror unit needs "
                         f"one (move what is there aside: it may be evidence)")
    same = nearest_dev(primary_path) == nearest_dev(mirror_path)
    if same and not allow_same_device:
        raise StoreError(f"{mirror_path} is on the same device as {primary_path}: a duplicate "
                         f"must be stored separately; use another disk, or "
                         f"--allow-same-device (then status reports the store as not "
                         f"separately duplicated)")
    return same


def new_mirror(primary_path, mirror_path, allow_same_device=False):
    """Create an empty mirror unit for an unmounted primary and name it in the primary's
    unit.json. Returns (old peer serial, new serial). The primary ships its whole log to it
    the next time it is opened."""
    unit = read_unit(primary_path)
    same = check_mirror_place(primary_path, mirror_path, allow_same_device)
    serial = new_serial()
    write_unit(mirror_path, role="mirror", mode=unit["mode"], label=unit.get("label", ""),
               peer_serial=unit["serial"], peer_path=primary_path, same_device=same,
               serial=serial, log_uuid=unit.get("log_uuid", unit["uuid"]),
               segment_size=unit["segment_size"], chunking=unit.get("chunking"))
    old = unit.get("peer_serial")
    unit.update(peer_serial=serial, peer_path=mirror_path, same_device=same, no_mirror=False)
    rewrite_unit(primary_path, unit)
    try:
        os.unlink(os.path.join(primary_path, STATE_FILE))  # about the old mirror
    except FileNotFoundError:
        pass
    return old, serial


def promote(mirror_path, force=False):
    """Make a mirror unit the primary of its log. Refused while the old primary is there,
    unless ``force``: then the old primary is retired (it still mounts read-only and can be
    verified, but never takes a write again), so the log cannot fork."""
    unit = read_unit(mirror_path)
    if unit.get("role") != "mirror":
        raise StoreError(f"{mirror_path} is a {unit.get('role')} unit; only a mirror can be "
                         f"promoted")
    with unit_locked(mirror_path, f"{mirror_path} is in use (its primary is mounted and "
                     f"replicating to it, or it is being checked); a mirror in use is not "
                     f"lost"):
        retired = _retire_old_primary(unit, mirror_path, force)
        old_primary = unit.get("peer_serial")
        unit.update(role="primary", peer_serial=None, peer_path=None, same_device=False,
                    no_mirror=False, promoted_from=old_primary)
        rewrite_unit(mirror_path, unit)
    return old_primary, retired


def _retire_old_primary(unit, mirror_path, force):
    path = unit.get("peer_path")
    try:
        old = read_unit(path) if path else None
    except StoreError:
        return None  # gone or unreadable: lost, as promotion assumes
    if old.get("serial") != unit.get("peer_serial") or old.get("role") != "primary":
        return None
    if not force:
        raise StoreError(f"the primary {old['serial']} is still at {path}; promote a mirror "
                         f"only when its primary is lost, or give --force to retire that "
                         f"primary (it will never take a write again)")
    with unit_locked(path, f"the primary {old['serial']} at {path} is in use (mounted?); "
                           f"unmount it first"):
        old.update(role="retired", retired_for=unit["serial"])
        rewrite_unit(path, old)
    return old["serial"]
