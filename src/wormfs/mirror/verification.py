"""Running verify and scrub on a store: which units take part, how repairs and results are
audited. The walk itself is scrub.py.

The process that owns the store runs it: the ``wormfs`` command when the store is not
mounted, the mount's daemon when it is (asked through its control socket, fs/control.py, or
by its background scrub). Then every repair is a 'repair' event in the store's chain (and, for
the mirror's own segments, in the mirror's chain too) and the result is a 'verify' or 'scrub'
event, which the index keeps as the last verification (``status``).
"""
import copy
import logging

from ..errors import WormError
from ..store.unit import read_unit
from ..store import heads
from ..store.localchain import LocalChain
from .scrub import Report, Unit, check_units, new_cursor
from .scrubcursor import Cursor

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


def run(store, *, deep=False, repair=False, progress=None, cause="command", resume=None,
        pause=None, on_cursor=None):
    """Verify (or with ``repair`` scrub) a writable primary and its mirror, audited.

    In pieces (the background scrub): with ``pause``, the walk stops when pause() says so
    between two segments or two windows of records; the result event is then a piece's,
    with the cursor to go on from (``resume`` in the event; Store.scrub_resume), and the
    Report's ``resume`` is set. ``resume`` (such a cursor, as the event holds it) goes on
    with that pass; one that does not parse, or was over other units, starts a new one.
    ``on_cursor(cursor)`` is told the cursor the walk goes from before it starts (the
    background scrub's pacer counts from its ``started``)."""
    units, target = primary_units(store)
    kind = "scrub" if repair else "verify"
    cursor = _resumable(resume, units)
    fresh = cursor is None
    if fresh:
        cursor = new_cursor(units, store.now())
    if on_cursor is not None:
        on_cursor(cursor)
    from_bucket = target is not None and hasattr(target, "check_bucket")
    # Where this piece began, for a walk again after repairs from the bucket (the walk
    # changes the cursor as it goes).
    start = copy.deepcopy(cursor) if from_bucket else None

    def on_repair(f):
        fields = {k: f[k] for k in ("unit", "segment", "offset", "length", "source", "detail")
                  if k in f}
        store.note("repair", cause=kind, **fields)
        if target is not None and f["unit"] == target.serial:
            target.note("repair", cause=kind, **fields)

    bucket_rep = None
    if from_bucket and fresh:
        # The bucket first (once a pass): a frame of the shipping cache that differs from
        # the bucket's is put back from it, so the walk below repairs the primary from the
        # bucket's bytes.
        bucket_rep = Report(units, deep, repair)
        target.check_bucket(bucket_rep, units[1], deep=deep, repair=repair,
                            on_repair=on_repair)
    rep = check_units(units, deep=deep, repair=repair, progress=progress, on_repair=on_repair,
                      cursor=cursor, pause=pause)
    if from_bucket and repair:
        rep = _repair_from_bucket(rep, units, target, deep, progress, on_repair, start)
    if bucket_rep is not None:
        rep.findings[:0] = bucket_rep.findings
        for k, n in bucket_rep.unlisted.items():   # not ``kind``: the event's type
            rep.unlisted[k] = rep.unlisted.get(k, 0) + n
        rep.bytes += bucket_rep.bytes
    if rep.resume is None:
        _end_of_pass(store, units, target, rep)
    _record(store.note, kind, rep, cause)
    return rep


def _resumable(resume, units):
    """The cursor to go on from, or None for a new pass."""
    if resume is None:
        return None
    try:
        cursor = Cursor.from_dict(resume)
    except ValueError as e:
        log.warning("the recorded scrub cursor is not usable (%s): a new pass begins", e)
        return None
    if not cursor.fits(units):
        log.info("the recorded scrub pass was over other units: a new pass begins")
        return None
    return cursor


def _end_of_pass(store, units, target, rep):
    """What a pass reports once, at its end: the units it could not reach, the clocks, the
    unit files against the log."""
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


def clock_findings(store, unit, rep):
    """The clock's state against the log (clock.py): an edited clock.json, and sources
    that disagree now."""
    for text in store.clock_problems():
        rep.add(unit, "clock", text)
    for text in store.tamper_problems():
        rep.add(unit, "tamper", text)


def _repair_from_bucket(rep, units, target, deep, progress, on_repair, start):
    """Frames damaged on both local units (the primary and the shipping cache) are put back
    from the bucket's objects, checked frame by frame; then the units are walked again from
    where this walk began (``start``, a cursor), to the end of the pass."""
    places = sorted({(f["segment"], f["offset"]) for f in rep.unrepaired
                     if f["kind"] == "damaged" and f.get("segment") is not None})
    if not places:
        return rep
    fixed = target.repair_frames(places, [u.log for u in units if u.writable])
    if not fixed:
        return rep
    units = [Unit(u.serial, u.role, u.path, u.log, u.ix, writable=u.writable, local=u.local)
             for u in units]   # a walk keeps its state in the Units: start afresh
    again = check_units(units, deep=deep, repair=True, progress=progress, on_repair=on_repair,
                        cursor=start)
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
    """The result event: of the pass, or of one piece of it (``piece``, and ``resume``: the
    cursor to go on from). Counts are the pass's so far; the summary quotes this piece's
    findings."""
    more = {}
    if rep.resume is not None:
        more = {"piece": rep.pieces + 1, "resume": rep.resume.to_dict()}
    elif rep.pieces:
        more = {"pieces": rep.pieces + 1}
    if rep.notes:
        more["notes"] = rep.notes[:SUMMARY_FINDINGS]   # what the walk left out, and why
    try:
        note(kind, ok=rep.ok, cause=cause, deep=rep.deep, bytes=rep.bytes,
             findings=rep.count, repaired=rep.repaired, pending_records=rep.pending,
             summary=[f["detail"] for f in rep.findings[:SUMMARY_FINDINGS]],
             units=[u.serial for u in rep.units], **more)
    except WormError as e:
        log.warning("could not record the %s result: %s", kind, e)


__all__ = ["run", "run_readonly", "Report"]
