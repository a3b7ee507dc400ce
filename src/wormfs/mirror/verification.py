"""Running verify and scrub on a store: which units take part, how repairs and results are
audited. The walk itself is scrub.py.

The process that owns the store runs it: the ``wormfs`` command when the store is not
mounted, the mount's daemon when it is (asked through its control socket, fs/control.py, or
by its background scrub). Then every repair is a 'repair' event in the store's chain (and, for
the mirror's own segments, in the mirror's chain too) and the result is a 'verify' or 'scrub'
event, which the index keeps as the last verification (``status``).
"""
import logging

from ..errors import WormError
from ..store.unit import read_unit
from ..store import heads
from ..store.localchain import LocalChain
from .scrub import Report, Unit, check_units

log = logging.getLogger("wormfs.verify")
SUMMARY_FINDINGS = 20  # findings quoted in the result event (all are in the report)


def primary_units(store):
    """The primary's Unit and, if it is connected, its mirror's."""
    units = [Unit(store.unit["serial"], "primary", store.path, store.log, store.ix,
                  writable=not store.readonly)]
    target = None
    if store.mirror is not None:
        store.mirror_poll()
        target = store.mirror.target
        if target is not None:
            units.append(Unit(target.serial, "mirror", target.path, target.log, target.ix,
                              writable=True, local=target.local))
    return units, target


def run(store, *, deep=False, repair=False, progress=None, cause="command"):
    """Verify (or with ``repair`` scrub) a writable primary and its mirror, audited."""
    units, target = primary_units(store)
    kind = "scrub" if repair else "verify"

    def on_repair(f):
        fields = {k: f[k] for k in ("unit", "segment", "offset", "length", "source", "detail")
                  if k in f}
        store.note("repair", cause=kind, **fields)
        if target is not None and f["unit"] == target.serial:
            target.note("repair", cause=kind, **fields)

    bucket_rep = None
    if target is not None and hasattr(target, "check_bucket"):
        # The bucket first: a frame of the shipping cache that differs from the bucket's is
        # put back from it, so the walk below repairs the primary from the bucket's bytes.
        bucket_rep = Report(units, deep, repair)
        target.check_bucket(bucket_rep, units[1], deep=deep, repair=repair,
                            on_repair=on_repair)
    rep = check_units(units, deep=deep, repair=repair, progress=progress, on_repair=on_repair)
    if bucket_rep is not None and repair:
        rep = _repair_from_bucket(rep, units, target, deep, progress, on_repair)
    if bucket_rep is not None:
        rep.findings[:0] = bucket_rep.findings
        for kind, n in bucket_rep.unlisted.items():
            rep.unlisted[kind] = rep.unlisted.get(kind, 0) + n
        rep.bytes += bucket_rep.bytes
    if store.mirror is not None and target is None:
        state, reason, _ = store.mirror_state()
        rep.add(None, "mirror", f"the mirror {store.unit.get('peer_serial')} could not be "
                f"checked: {state}: {reason}")
    clock_findings(store, units[0], rep)
    if target is not None and getattr(target, "clock", None) is not None and \
            target.clock.file_problem:
        rep.add(units[1], "clock", f"the mirror's {target.clock.file_problem}")
    if target is not None and getattr(target, "local", None) is not None:
        for text in heads.problems(target.local, target.log, target.ix):
            rep.add(units[1], "tamper", text)
    _record(store.note, kind, rep, cause)
    return rep


def clock_findings(store, unit, rep):
    """The clock's state against the log (clock.py): an edited clock.json, and sources
    that disagree now."""
    for text in store.clock_problems():
        rep.add(unit, "clock", text)
    for text in store.tamper_problems():
        rep.add(unit, "tamper", text)


def _repair_from_bucket(rep, units, target, deep, progress, on_repair):
    """Frames damaged on both local units (the primary and the shipping cache) are put back
    from the bucket's objects, checked frame by frame; then the units are walked again."""
    places = sorted({(f["segment"], f["offset"]) for f in rep.unrepaired
                     if f["kind"] == "damaged" and f.get("segment") is not None})
    if not places:
        return rep
    fixed = target.repair_frames(places, [u.log for u in units if u.writable])
    if not fixed:
        return rep
    units = [Unit(u.serial, u.role, u.path, u.log, u.ix, writable=u.writable, local=u.local)
             for u in units]   # a walk keeps its state in the Units: start afresh
    again = check_units(units, deep=deep, repair=True, progress=progress, on_repair=on_repair)
    for segno, off, length in fixed:
        for u in units:
            f = again.add(u, "damaged", f"segment {segno} offset {off}: damaged here and on "
                          f"the other local unit", segno, off, repaired=True)
            f.update(length=length, source=target.url)
            on_repair(f)
    return again


def run_readonly(store, local_path=None):
    """Verify one unit without changing anything (a mirror on its own, or a unit another
    process holds without a control socket). Nothing is recorded."""
    unit = read_unit(store.path)
    local = None
    if local_path:
        try:
            local = LocalChain(local_path, bytes.fromhex(unit["uuid"].replace("-", "")),
                               readonly=True)
        except (WormError, OSError):
            local = None
    u = Unit(unit["serial"], unit["role"], store.path, store.log, store.ix, local=local)
    rep = check_units([u])
    clock_findings(store, u, rep)
    return rep


def _record(note, kind, rep, cause):
    try:
        note(kind, ok=rep.ok, cause=cause, deep=rep.deep, bytes=rep.bytes,
             findings=rep.count, repaired=sum(1 for f in rep.findings if f["repaired"]),
             pending_records=rep.pending,
             summary=[f["detail"] for f in rep.findings[:SUMMARY_FINDINGS]],
             units=[u.serial for u in rep.units])
    except WormError as e:
        log.warning("could not record the %s result: %s", kind, e)


__all__ = ["run", "run_readonly", "Report"]
