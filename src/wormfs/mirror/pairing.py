"""Changing who mirrors whom: a new mirror for a primary (``wormfs mirror resync``) and a
mirror that becomes the primary when the primary is lost (``wormfs mirror promote``).

Both rewrite unit.json, the only time it changes after mkfs, and both are events in the log:
'mirror_paired' when a primary gets a new mirror unit, 'promote' when a mirror continues the
log as its primary. They run on a store that is not mounted: they hold the units' locks.
"""
import os
import shutil
import tempfile

from ..errors import StoreError
from ..store.hostfs import unit_locked
from ..store.maintenance import event_hash_at, unit_head
from ..store.unit import new_serial, read_unit, rewrite_unit, write_unit
from .s3bucket import is_s3
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


def check_old_mirror(primary_path, unit, primary_seq, hash_at):
    """Refuse to replace a mirror that holds events the primary lacks: it may hold the only
    copy of what the primary lost (SPEC "Duplicate robustness"). ``hash_at(seq)`` is the
    primary's event hash. A mirror that is gone or unreadable holds nothing anyone can
    use here; an S3 mirror keeps its objects locked whatever the primary does."""
    path = unit.get("peer_path")
    if not path or is_s3(path):
        return
    try:
        m = read_unit(path)
    except StoreError:
        return
    if m.get("serial") != unit.get("peer_serial") or m.get("role") != "mirror":
        return
    try:
        seq, h = unit_head(path)
    except Exception as e:  # lmdb errors: a unit that is there but cannot be read
        raise StoreError(f"the mirror {m['serial']} at {path} cannot be read ({e}); it may "
                         f"hold events this store lacks. Repair it or move it aside, then "
                         f"run resync again; nothing was changed") from None
    if seq > primary_seq or (seq and hash_at(seq) != h):
        raise StoreError(f"the mirror {m['serial']} at {path} holds events this store lacks "
                         f"(its log reaches event {seq}, this store's event {primary_seq}"
                         f"{'' if seq > primary_seq else ', and they differ'}): it may be the "
                         f"only copy of those records. Examine it ('wormfs verify {path}') or "
                         f"promote it ('wormfs mirror promote'); nothing was changed")


def copy_to_new_unit(st, mirror_path, serial, same_device):
    """Create the mirror unit ``serial`` at ``mirror_path`` and ship ``st``'s whole log into
    it, then verify the two units against each other, all before the primary's unit.json
    names it. Returns the verification Report; StoreError if the copy did not take (the
    new directory is emptied again then: it held nothing but a copy of this log)."""
    from . import scrub
    from .replica import Replica
    from .shipper import Replicator
    unit = st.unit
    log_uuid = _write_mirror_unit(unit, st.path, mirror_path, serial, same_device)
    scratch = tempfile.mkdtemp(prefix="wormfs-resync-")  # the copy's own mirror.json
    try:
        st.sync()
        rep_ = Replicator(st.log, st.group,
                          lambda: Replica(mirror_path, serial=serial, log_uuid=log_uuid),
                          scratch, st.clock.now, lambda seq: event_hash_at(st.log, st.ix, seq))
        if not rep_.connect():
            raise StoreError(f"the new mirror at {mirror_path} cannot be opened: "
                             f"{rep_.reason}")
        try:
            rep_.ship_durable()
            if rep_.state != "synced" or rep_.acked != st.group.durable_pos:
                raise StoreError(f"the new mirror at {mirror_path} did not take the log: "
                                 f"{rep_.state}: {rep_.reason}")
            target = rep_.target
            units = [scrub.Unit(unit["serial"], "primary", st.path, st.log, st.ix),
                     scrub.Unit(serial, "mirror", mirror_path, target.log, target.ix,
                                local=target.local)]
            report = scrub.check_units(units)
        finally:
            rep_.disconnect("closed")
        if not report.ok:
            raise StoreError(f"the copy at {mirror_path} does not verify: "
                             f"{report.unrepaired[0]['detail']}; the store keeps its mirror")
        return report
    except BaseException:
        _empty(mirror_path)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def switch_mirror(primary_path, mirror_path, serial, same_device):
    """Name the (copied, verified) unit ``serial`` as the primary's mirror. Returns the
    previous mirror's serial."""
    unit = read_unit(primary_path)
    old = unit.get("peer_serial")
    unit.update(peer_serial=serial, peer_path=mirror_path, same_device=same_device,
                no_mirror=False)
    rewrite_unit(primary_path, unit)
    try:
        os.unlink(os.path.join(primary_path, STATE_FILE))  # about the old mirror
    except FileNotFoundError:
        pass
    return old


def _empty(path):
    """Remove what copy_to_new_unit put in ``path`` (the directory itself stays)."""
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def new_mirror(primary_path, mirror_path, allow_same_device=False):
    """Create an empty mirror unit for an unmounted primary and name it in the primary's
    unit.json. Returns (old peer serial, new serial). The primary ships its whole log to it
    the next time it is opened."""
    same = check_mirror_place(primary_path, mirror_path, allow_same_device)
    serial = new_serial()
    _write_mirror_unit(read_unit(primary_path), primary_path, mirror_path, serial, same)
    return switch_mirror(primary_path, mirror_path, serial, same), serial


def _write_mirror_unit(unit, primary_path, mirror_path, serial, same_device):
    """An empty mirror unit ``serial`` for the primary ``unit``; returns the log uuid."""
    log_uuid = unit.get("log_uuid", unit["uuid"])
    write_unit(mirror_path, role="mirror", mode=unit["mode"], label=unit.get("label", ""),
               peer_serial=unit["serial"], peer_path=primary_path, same_device=same_device,
               serial=serial, log_uuid=log_uuid, segment_size=unit["segment_size"],
               chunking=unit.get("chunking"))
    return log_uuid


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
