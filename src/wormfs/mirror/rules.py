"""The mirror's own WORM rules: whether it may apply an event its primary sent.

The primary checked every rule before it appended the event; the mirror checks again against
its own index and its own compliance clock, because a primary can be wrong (a tampered clock,
a bug, a forged log). What a record's state forbids on the primary, it forbids here:
deleting a record that is held or not expired by the mirror's clock, shortening a retention,
renaming, replacing or changing a record, removing a directory that is not empty, disposing
of a record it has not deleted or of a chunk a retained record still refers to. Events that
only add (create, seal of an open file, hold, a longer retention) pass if they fit the index.

``check`` returns None when the event may be applied, else the reason it is refused. It only
reads; ``Replayer.apply_event`` then applies the event exactly as on the primary.
"""
from .. import retention
from ..store import events as E
from ..store.inode import UNSEALED, State
from ..store.replay import ROOT_INO


def check(ix, txn, ev, now_us):
    reason = shape(ev)
    if reason is not None:
        return reason
    fn = _CHECKS.get(ev.get("type"))
    try:
        return fn(ix, txn, ev, now_us) if fn is not None else None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # A field of the right type that points nowhere (an inode that is a directory
        # where a file is expected, say): the event cannot be judged, so it is refused.
        return f"malformed {ev.get('type')} event: {type(e).__name__} {e}"


_INT, _STR, _DICT, _LIST, _BOOL = int, str, dict, list, bool
UNSEALED_TEXT = frozenset(s.value for s in UNSEALED)
_RET = "retention"  # a retention dict (retention.py)

# The fields every event type that changes the index must carry, and their types: what
# Replayer relies on. An event that lacks one is refused here instead of failing halfway
# through being applied.
SHAPES = {
    "unit_init": {"settings": _DICT},
    "mkdir": {"ino": _INT, "parent": _INT, "name": _STR, "mode": _INT, "uid": _INT,
              "gid": _INT},
    "create": {"ino": _INT, "parent": _INT, "name": _STR, "mode": _INT, "uid": _INT,
               "gid": _INT, "state": _STR},
    "rmdir": {"ino": _INT, "parent": _INT, "name": _STR},
    "unlink": {"ino": _INT, "parent": _INT, "name": _STR},
    "rename": {"ino": _INT, "parent": _INT, "name": _STR, "new_parent": _INT,
               "new_name": _STR},
    "state": {"ino": _INT, "state": _STR},
    "setattr": {"ino": _INT},
    "seal": {"ino": _INT, "serial": _INT, "size": _INT, "blake3": _STR, "retention": _RET,
             "mode": _INT, "uid": _INT, "gid": _INT, "mtime": _INT, "path": _STR,
             "chunks": _LIST},
    "retention": {"ino": _INT, "after": _RET},
    "event_date": {"ino": _INT, "after": _RET, "before": _RET},
    "hold": {"ino": _INT, "name": _STR, "reason": _STR},
    "release": {"ino": _INT, "name": _STR},
    "dir_retention": {"ino": _INT, "value": _STR},
    "delete": {"ino": _INT},
    "dispose": {"serials": _LIST, "chunks": _LIST},
    "verify": {"ok": _BOOL, "findings": _INT},
    "scrub": {"ok": _BOOL, "findings": _INT},
    "setting": {"name": _STR},
}


def shape(ev):
    """None if ``ev`` has the common fields and those of its type, else what is wrong."""
    if not isinstance(ev, dict):
        return "the event is not a JSON object"
    for k, t in (("seq", _INT), ("prev", _STR), ("time_us", _INT), ("type", _STR)):
        if not isinstance(ev.get(k), t) or isinstance(ev.get(k), bool):
            return f"malformed event: field {k!r} is missing or not {t.__name__}"
    for k, t in SHAPES.get(ev["type"], {}).items():
        v = ev.get(k)
        ok = retention.is_valid(v) if t is _RET else (
            isinstance(v, t) and (t is _BOOL or not isinstance(v, bool)))
        if not ok:
            return (f"malformed {ev['type']} event {ev['seq']}: field {k!r} is missing or "
                    f"not {'a retention' if t is _RET else t.__name__}")
    if ev["type"] == "seal":
        for c in ev["chunks"]:
            if not (isinstance(c, list) and len(c) == 2 and isinstance(c[0], str)
                    and isinstance(c[1], int)):
                return f"malformed seal event {ev['seq']}: a chunk is not [id, length]"
    if ev["type"] in ("create", "state") and ev["state"] not in UNSEALED_TEXT:
        # A file is created, or renamed, as open or scratch; only a seal makes a record.
        return (f"malformed {ev['type']} event {ev['seq']}: state {ev['state']!r} is not "
                f"one of {', '.join(sorted(UNSEALED_TEXT))}")
    if ev["type"] == "retention" and ev.get("before") is not None and \
            not retention.is_valid(ev["before"]):
        return f"malformed retention event {ev['seq']}: field 'before' is not a retention"
    return None


def _record(ix, txn, ino):
    rec = ix.inode(txn, ino)
    return rec if rec is not None and rec.sealed else None


def _unit_init(ix, txn, ev, now):
    if ix.meta(txn, "unit") is not None:
        return "the unit is initialized already"
    return None


def _new_entry(ix, txn, ev, now):
    parent = ix.inode(txn, ev["parent"])
    if parent is None or not parent.is_dir:
        return f"parent directory inode {ev['parent']} does not exist here"
    if ix.lookup(txn, ev["parent"], E.name_bytes(ev["name"])) is not None:
        return f"{ev['name']!r} already exists here"
    if ix.inode(txn, ev["ino"]) is not None:
        return f"inode {ev['ino']} already exists here"
    return None


def _not_a_record(ix, txn, ev, now):
    if _record(ix, txn, ev["ino"]) is not None:
        return f"inode {ev['ino']} is a sealed record here"
    return None


def _state(ix, txn, ev, now):
    rec = ix.inode(txn, ev["ino"])
    if rec is None or not rec.unsealed:
        return f"inode {ev['ino']} is not an open or scratch file here"
    return None


def _rename(ix, txn, ev, now):
    src = ix.inode(txn, ev["ino"])
    if src is None:
        return f"inode {ev['ino']} does not exist here"
    if src.sealed:
        return f"inode {ev['ino']} is a sealed record here"
    if src.is_dir and ix.holds_records(txn, src.ino):
        return f"directory inode {ev['ino']} holds records here"
    if ev.get("replaced"):
        dst = ix.inode(txn, ev["replaced"])
        if dst is not None and (dst.sealed or (
                dst.is_dir and not ix.dir_is_empty(txn, dst.ino))):
            return f"the target inode {ev['replaced']} is a record or holds entries here"
    return None


def _rmdir(ix, txn, ev, now):
    if ev["ino"] == ROOT_INO:
        return "the root directory cannot be removed"
    if not ix.dir_is_empty(txn, ev["ino"]):
        return f"directory inode {ev['ino']} is not empty here"
    return None


def _seal(ix, txn, ev, now):
    rec = ix.inode(txn, ev["ino"])
    if rec is None or not rec.unsealed:
        return f"inode {ev['ino']} is not an open file here"
    if ix.serial_ino(txn, ev["serial"]) is not None:
        return f"serial {ev['serial']} is already taken here"
    for cid_hex, _ in ev["chunks"]:
        if ix.chunk(txn, bytes.fromhex(cid_hex)) is None:
            return f"chunk {cid_hex[:16]} of the record is not here"
    return None


def _delete(ix, txn, ev, now):
    rec = _record(ix, txn, ev["ino"])
    if rec is None:
        return f"inode {ev['ino']} is not a record here"
    if rec.holds:
        return f"record {rec.serial} is under legal hold ({', '.join(sorted(rec.holds))})"
    if ev.get("privileged") is True:
        # An early delete is lawful only where this unit's own mode allows it.
        mode = (ix.meta(txn, "unit") or {}).get("mode")
        if mode != "enterprise":
            return f"a privileged delete of record {rec.serial} in {mode} mode"
        if not isinstance(ev.get("reason"), str) or not ev["reason"].strip():
            return f"a privileged delete of record {rec.serial} without a reason"
        return None
    if not retention.expired(rec.retention, now):
        return (f"record {rec.serial} is retained until "
                f"{retention.display(rec.retention)} by this unit's compliance clock")
    return None


def _retention(ix, txn, ev, now):
    rec = ix.inode(txn, ev["ino"])
    if rec is None:
        return f"inode {ev['ino']} does not exist here"
    if not rec.sealed:
        return None  # an open file's retention is only a wish until its seal
    # Shortening first: it is what an examiner needs to read, whatever 'before' says.
    if not retention.never_shorter(rec.retention, ev["after"], rec.committed):
        return f"the change would shorten the retention of record {rec.serial}"
    if ev.get("before") != rec.retention:
        return f"record {rec.serial} has another retention here"
    return None


def _event_date(ix, txn, ev, now):
    rec = _record(ix, txn, ev["ino"])
    if rec is None:
        return f"inode {ev['ino']} is not a record here"
    old = rec.retention
    if old["event_period"] is None or old["event_date"] is not None:
        return f"record {rec.serial} has no pending event-based retention here"
    if ev["after"] != dict(old, event_date=ev["after"]["event_date"]):
        return f"the change would alter more than the event date of record {rec.serial}"
    return None


def _on_record(ix, txn, ev, now):
    if _record(ix, txn, ev["ino"]) is None:
        return f"inode {ev['ino']} is not a record here"
    return None


def _dispose(ix, txn, ev, now):
    # Only records this unit itself has deleted (each delete passed its own clock and holds)
    # and only chunks no other record here refers to: the same dedup check as the primary's,
    # on this unit's own index.
    from ..store.disposal import unreferenced_but_by
    serials = set(ev["serials"])
    for serial in serials:
        ino = ix.serial_ino(txn, serial)
        rec = ix.inode(txn, ino) if ino is not None else None
        if rec is None or rec.state is not State.DELETED:
            return f"record {serial} is not deleted here"
    wanted = {}
    for cid_hex, segno, offset, length in ev["chunks"]:
        cid = bytes.fromhex(cid_hex)
        loc = ix.chunk(txn, cid)
        if loc is not None and tuple(loc) != (segno, offset, length):
            return f"chunk {cid_hex[:16]} is not where the dispose event says"
        wanted[cid] = length
    kept = set(wanted) - unreferenced_but_by(ix, txn, wanted, serials)
    if kept:
        return f"chunk {min(kept).hex()[:16]} is still part of a retained record here"
    return None


_CHECKS = {
    "dispose": _dispose,
    "unit_init": _unit_init,
    "mkdir": _new_entry,
    "create": _new_entry,
    "rmdir": _rmdir,
    "unlink": _not_a_record,
    "state": _state,
    "setattr": _not_a_record,
    "rename": _rename,
    "seal": _seal,
    "delete": _delete,
    "retention": _retention,
    "event_date": _event_date,
    "hold": _on_record,
    "release": _on_record,
}
