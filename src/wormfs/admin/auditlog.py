"""Reading the audit trail (``wormfs audit``) and checking its hash chain on both units
(``wormfs audit --verify``).

Events are read one by one at the positions the index gives (``events`` database), never by
scanning the log, so listing or verifying the trail does not read the chunks. Each frame is
checked (xxh3) as it is read; ``verify`` also checks that each event continues the chain,
that the index's chain head is the last event's hash, and that the mirror's chain is the
primary's, event for event. Whoever changes one byte of an event breaks its frame checksum
or, if they recompute that, the ``prev`` of the event after it.
"""
import csv
import io
import json

from ..errors import IntegrityError, WormError
from ..store import events as E
from ..store import frames as F
from ..store.unit import read_unit

COMMON = ("seq", "prev", "time", "time_us", "type", "actor")
CSV_COLUMNS = ("seq", "time", "type", "outcome", "user", "uid", "gid", "pid", "program",
               "path", "serial", "details")


def read_event(log, pos):
    """(event dict, encoded bytes) of the event frame at ``pos`` (segno, offset), checked.
    IntegrityError if the frame is damaged or is not an event."""
    segno, offset = pos
    try:
        head = log.read(segno, offset, F.FIXED_LEN)
        ftype, key, plen, pxxh, hl = F.parse_header(head)
        if ftype not in (F.T_EVENT, F.T_ZEVENT):
            raise F.FrameError("the frame there is not an event")
        payload = log.read(segno, offset + hl, plen)
        F.check_payload(payload, pxxh)
        payload = F.event_payload(ftype, payload)
        return E.decode(payload), payload
    except (F.FrameError, ValueError) as e:
        raise IntegrityError(f"segment {segno} offset {offset}: {e}") from None


def last_seq(ix):
    with ix.read() as txn:
        return ix.meta(txn, "last_seq", 0)


def _pos(ix, seq):
    with ix.read() as txn:
        return ix.event_pos(txn, seq)


def event(log, ix, seq):
    """(event, encoded bytes) of event ``seq``."""
    pos = _pos(ix, seq)
    if pos is None:
        raise IntegrityError(f"the index does not place event {seq}")
    return read_event(log, pos)


def iter_events(log, ix, start=1, end=None):
    """Yield (event, encoded bytes) for seq ``start``..``end`` (default: the last)."""
    end = last_seq(ix) if end is None else end
    for seq in range(start, end + 1):
        pos = _pos(ix, seq)
        if pos is None:
            raise IntegrityError(f"the index does not place event {seq}")
        try:
            yield read_event(log, pos)
        except IntegrityError as e:
            raise IntegrityError(f"event {seq}: {e}") from None


def refused_since(log, ix, seq, pid):
    """The ``refused`` events of process ``pid`` after event ``seq``: how a command that
    asked through the mount learns why (the kernel passes on only the errno)."""
    return [ev for ev, _ in iter_events(log, ix, seq + 1)
            if ev["type"] == "refused" and (ev.get("actor") or {}).get("pid") == pid]


def first_seq_at(log, ix, t_us):
    """The first seq whose time is at or after ``t_us``, by bisection where the log's
    times never go back (Index.times_in_order); else 1 (the caller filters by time)."""
    with ix.read() as txn:
        if not ix.times_in_order(txn):
            return 1
    lo, hi = 1, last_seq(ix) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        ev, _ = read_event(log, _pos(ix, mid))
        if ev["time_us"] < t_us:
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- which events concern a selection ---------------------------------------------------------

subjects = E.subjects   # what an event is about (store/events.py)


def outcome(ev):
    t = ev["type"]
    if t == "refused":
        return f"refused ({ev.get('errno', 'EPERM')})"
    if t in ("verify", "scrub"):
        return "clean" if ev.get("ok") else f"{ev.get('findings')} findings"
    if ev.get("repaired") is False:
        return "failed"
    return "ok"


# -- formats ------------------------------------------------------------------------------------

def details(ev):
    rest = {k: v for k, v in ev.items() if k not in COMMON and k not in ("path", "serial")}
    if "chunks" in rest and isinstance(rest["chunks"], list):
        rest["chunks"] = f"{len(rest['chunks'])} chunks"
    return json.dumps(rest, sort_keys=True, ensure_ascii=False)


def _who(ev):
    a = ev.get("actor")
    if not a:
        return "-"
    return f"{a.get('user')}({a.get('uid')}) {a.get('program')}[{a.get('pid')}]"


def text_line(ev):
    path = ev.get("path") or ""
    serial = f"#{ev['serial']}" if isinstance(ev.get("serial"), int) else ""
    line = (f"{ev['seq']:>7}  {ev['time']}  {ev['type']:<12} {outcome(ev):<14} {_who(ev)}  "
            f"{path} {serial}").rstrip()
    rest = details(ev)
    return line + (f"  {rest}" if rest != "{}" else "")


def csv_header():
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_COLUMNS)
    return buf.getvalue()


def csv_line(ev):
    a = ev.get("actor") or {}
    buf = io.StringIO()
    csv.writer(buf).writerow([
        ev["seq"], ev["time"], ev["type"], outcome(ev), a.get("user", ""), a.get("uid", ""),
        a.get("gid", ""), a.get("pid", ""), a.get("program", ""), ev.get("path", ""),
        ev.get("serial", ""), details(ev)])
    return buf.getvalue()


# -- verifying the chain on both units --------------------------------------------------------

class ChainCheck:
    """The result of walking units' chains: per unit the events and head; findings name the
    unit, the event (seq) and the place."""

    def __init__(self):
        self.units, self.findings, self.notes = [], [], []

    def add(self, unit, seq, detail):
        self.findings.append({"unit": unit, "seq": seq, "detail": detail})

    @property
    def ok(self):
        return not self.findings

    def as_dict(self):
        return {"ok": self.ok, "units": self.units, "findings": self.findings,
                "notes": self.notes}


def _head(ix):
    with ix.read() as txn:
        return ix.meta(txn, "last_seq", 0), ix.meta(txn, "last_hash", E.GENESIS)


def _walk(log, ix, serial, end, check, progress=None):
    """Walk one unit's chain up to ``end`` = (last seq, its hash as the index keeps it):
    yields (seq, hash) of each event found sound, in order, and stops at the first break
    (a finding in ``check``). Nothing is kept: a chain of any length walks in constant
    memory."""
    prev = E.GENESIS
    n, head = end
    for seq in range(1, n + 1):
        if progress and seq % 1000 == 0:
            progress(seq, n)
        pos = _pos(ix, seq)
        if pos is None:
            check.add(serial, seq, f"event {seq} is missing from the index")
            return
        try:
            ev, payload = read_event(log, pos)
        except IntegrityError as e:
            check.add(serial, seq, f"event {seq} is damaged ({e}): it was altered after it "
                      f"was written")
            return
        if ev.get("seq") != seq:
            check.add(serial, seq, f"event {seq} at segment {pos[0]} offset {pos[1]} says it "
                      f"is event {ev.get('seq')}")
            return
        if ev.get("prev") != prev:
            check.add(serial, seq, f"event {seq} does not continue the chain: its prev is not "
                      f"the hash of event {seq - 1}, so event {seq - 1} was altered (or "
                      f"{seq} was forged)")
            return
        prev = E.event_hash(payload)
        yield seq, prev
    if n and prev != head:
        check.add(serial, n, f"the chain head the index keeps is not the hash of the last "
                  f"event {n}: event {n} was altered")


def verify_unit(unit_path, progress=None):
    """Open a unit and its peer read-only (mounted or not) and verify both chains; a peer
    that cannot be read is a note, and only the unit given is checked."""
    from ..store.store import Store   # the store imports nothing from here; keep it so
    unit = read_unit(unit_path)
    stores, notes = [Store(unit_path, readonly=True)], []
    peer = unit.get("peer_path")
    if peer and not unit.get("no_mirror"):
        try:
            stores.append(Store(peer, readonly=True))
        except (WormError, OSError) as e:
            notes.append(f"the peer unit {unit.get('peer_serial')} at {peer} cannot be read "
                         f"({e}): only {unit['serial']} was checked")
    stores.sort(key=lambda s: s.unit["role"] != "primary")
    try:
        check = verify_chains([(s.unit["serial"], s.unit["role"], s.path, s.log, s.ix)
                               for s in stores], progress)
    finally:
        for s in stores:
            s.close()
    check.notes = notes
    return check


def verify_chains(units, progress=None):
    """``units``: [(serial, role, path, log, ix)], the primary first. Checks each chain end to
    end, then that every event the mirror holds is the primary's, event for event."""
    check = ChainCheck()
    # The ends are read mirror first: a mounted primary ships only what its index already
    # holds, so read in this order the mirror can never seem ahead of the primary.
    ends = [_head(ix) for *_, ix in reversed(units)][::-1]
    # Each chain's findings are its own, listed in unit order as before; the walks go in
    # step (seq by seq, both chains numbered from 1), so no hash is kept.
    own = [ChainCheck() for _ in units]
    walks = [_walk(log, ix, serial, end, mine, progress if i == 0 else None)
             for i, ((serial, role, path, log, ix), end, mine)
             in enumerate(zip(units, ends, own))]
    verified = [0] * len(units)
    differs = None
    steps = [next(w, None) for w in walks]
    while any(step is not None for step in steps):
        if len(steps) == 2 and None not in steps and differs is None and \
                steps[0][1] != steps[1][1]:
            differs = steps[0][0]
        for i, w in enumerate(walks):
            if steps[i] is not None:
                verified[i] += 1
                steps[i] = next(w, None)
    for (serial, role, path, log, ix), end, mine, n in zip(units, ends, own, verified):
        check.findings += mine.findings
        check.units.append({"serial": serial, "role": role, "path": path, "events": end[0],
                            "verified": n})
    if len(units) == 2:
        ps, ms = units[0][0], units[1][0]
        pn, mn = ends[0][0], ends[1][0]
        if differs is not None:
            check.add(ms, differs, f"event {differs} differs between primary {ps} and mirror "
                      f"{ms}")
        if mn > pn:
            check.add(ms, pn + 1, f"the mirror holds events the primary does not ({mn} "
                      f"against {pn})")
    return check
