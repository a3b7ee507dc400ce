"""Records as admins and examiners see them: every field of ``wormfs info``, and the
searchable index behind ``wormfs ls`` and ``wormfs export`` (SPEC: path glob, serial range,
commit-date range, expiring-before, held)."""
import fnmatch
import os
from dataclasses import dataclass

import lmdb

from .. import retention
from ..errors import InvalidValue
from ..store.inode import State
from ..store.maintenance import unit_last_seq
from ..store.replay import ROOT_INO
from ..timeutil import format_us, parse_date

# The columns of index.csv and of ``ls``, in order (every one is a key of ``describe``).
FIELDS = ("serial", "path", "size", "blake3", "committed", "retain_until", "state", "holds",
          "event_date", "writer_uid", "writer_user", "writer_gid", "writer_pid",
          "writer_program", "mode", "uid", "gid", "mtime", "mirror", "recovered_from")


def mirror_view(store):
    """rec -> 'synced' or 'pending', for a command that opened a unit read-only: the mounted
    daemon's view is not available here, so ask the mirror unit itself how far it holds the
    log (read once per command)."""
    unit = store.unit
    if unit.get("role") != "primary" or store.mirror is not None:
        return store.record_mirror_status
    held = 0
    peer = unit.get("peer_path")
    if peer and not unit.get("no_mirror"):
        try:
            held = unit_last_seq(peer)
        except (lmdb.Error, OSError):
            held = 0

    def status(rec):
        seq = rec.seal_seq
        return "synced" if seq is not None and seq <= held else "pending"
    return status


def describe(store, rec, now_us=None, mirror_of=None):
    """Every field of one record (an inode dict of a sealed or deleted record);
    ``mirror_of`` from ``mirror_view``."""
    now = store.now() if now_us is None else now_us
    mirror_of = mirror_of or store.record_mirror_status
    r = rec.retention
    state = rec.state
    if state is State.SEALED and retention.expired(r, now):
        state = "expired"
    writer = rec.writer or {}
    return {
        "serial": rec.serial,
        "path": rec.path,
        "size": rec.size,
        "blake3": rec.blake3,
        "committed": format_us(rec.committed),
        "retain_until": retention.display(r),
        "state": str(state),
        "holds": dict(sorted(rec.holds.items())),
        "event_date": format_us(r["event_date"]) if r.get("event_date") else None,
        "writer_uid": writer.get("uid"),
        "writer_user": writer.get("user"),
        "writer_gid": writer.get("gid"),
        "writer_pid": writer.get("pid"),
        "writer_program": writer.get("program"),
        "mode": f"{rec.mode & 0o7777:04o}",
        "uid": rec.uid,
        "gid": rec.gid,
        "mtime": format_us(rec.mtime),
        "mirror": mirror_of(rec) if rec.sealed else None,
        "recovered_from": rec.recovered_from,
        "unit": store.unit["serial"],
    }


def lookup(store, inner):
    """The record at a path inside the store; NotFound or InvalidValue if it is not one."""
    rec = store.resolve(inner)
    if not rec.is_file:
        raise InvalidValue(f"{inner} is a directory, not a record")
    if not rec.sealed:
        raise InvalidValue(f"{inner} is not a record yet (it is {rec.get('state')}: it "
                           f"becomes one when its writer closes it)")
    return rec


@dataclass
class Selection:
    """Which records: every given criterion must hold (SPEC ``ls`` options)."""
    path: str = None             # glob over the path inside the store
    first: int = 1               # serial range
    last: int = None
    since: int = None            # commit time range, us, inclusive
    until: int = None
    expiring_before: int = None  # effective retain-until before this (finite ones only)
    held: bool = False

    def matches_path(self, path):
        if self.path is None:
            return True
        pattern = "/" + self.path.lstrip("/")
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(
            path, pattern.rstrip("/") + "/*")

    def matches(self, rec):
        if self.since is not None and rec.committed < self.since:
            return False
        if self.until is not None and rec.committed > self.until:
            return False
        if self.held and not rec.holds:
            return False
        return self.matches_path(rec.path or "")


def parse_serials(text):
    """'17', '10-20', '10-' or '-20' -> (first, last)."""
    a, sep, b = text.partition("-")
    try:
        first = int(a) if a.strip() else 1
        last = (int(b) if b.strip() else None) if sep else first
    except ValueError:
        raise InvalidValue(f"bad serial range {text!r}: use N, A-B, A- or -B") from None
    if first < 1 or (last is not None and last < first):
        raise InvalidValue(f"bad serial range {text!r}: serials start at 1 and A <= B")
    return first, last


def end_of_day(text, us):
    """A bare date given as an upper bound means the whole of that day."""
    t = text.strip()
    return us + 86_400_000_000 - 1 if len(t) == 10 else us


def selection_from(args):
    """A Selection from the ``ls``/``export`` options (InvalidValue names the bad one)."""
    sel = Selection(path=args.path, held=args.held)
    if args.serial:
        sel.first, sel.last = parse_serials(args.serial)
    if getattr(args, "from_", None):
        sel.since = parse_date(args.from_)
    if args.to:
        sel.until = end_of_day(args.to, parse_date(args.to))
    if args.expiring_before:
        sel.expiring_before = parse_date(args.expiring_before)
    return sel


SUBTREE_MATCHES = 1 << 20   # serials a subtree walk collects before it gives way


def literal_dir(glob):
    """The deepest directory every path ``glob`` matches lies under: its leading
    components up to the first wildcard (fnmatch's ``*`` and ``?`` also match ``/``, so
    nothing after it prunes). '/' when the first component has one."""
    pattern = "/" + glob.lstrip("/")
    cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    head = pattern[:cut]
    return head[:head.rfind("/")] or "/"


def _subtree_matches(ix, txn, top, sel):
    """(serial, ino) of the live records below directory path ``top`` that ``sel``
    matches, in serial order: none if ``top`` is not a directory here (a sealed record
    never moves, and no directory above one is renamed, so a record's path is where it
    lies); None if more than SUBTREE_MATCHES match (the caller walks the serials instead:
    memory stays bounded whatever the selection)."""
    ino = ROOT_INO
    for part in (p for p in top.split("/") if p):
        hit = ix.lookup(txn, ino, os.fsencode(part))
        if hit is None:
            return []
        ino = hit[0]
        rec = ix.inode(txn, ino)
        if rec is None or not rec.is_dir:
            return []
    found, stack = [], [ino]
    while stack:
        for _, _, child in ix.list_dir(txn, stack.pop()):
            rec = ix.inode(txn, child)
            if rec is None:
                continue
            if rec.is_dir:
                stack.append(child)
            elif rec.sealed and rec.serial >= sel.first and \
                    (sel.last is None or rec.serial <= sel.last) and sel.matches(rec):
                found.append((rec.serial, child))
                if len(found) > SUBTREE_MATCHES:
                    return None
    found.sort()
    return found


def _committed_range(ix, txn, sel):
    """The serial range of ``sel`` narrowed to its commit-time range, by bisection: serials
    are handed out in seal order and, where the log's times never go back
    (Index.times_in_order), commit times grow with them. (None, None) if nothing can match;
    the range unchanged where it cannot bisect (the walk then filters by time)."""
    first, last = sel.first, sel.last
    if sel.since is None and sel.until is None:
        return first, last
    top = ix.meta(txn, "next_serial", 1) - 1
    last = top if last is None else min(last, top)
    if first > last or not ix.times_in_order(txn):
        return (None, None) if first > last else (sel.first, sel.last)

    def committed(serial):
        ino = ix.serial_ino(txn, serial)
        rec = ix.inode(txn, ino) if ino is not None else None
        return None if rec is None or rec.committed is None else rec.committed

    def first_at(t, lo, hi):
        """The first serial in [lo, hi + 1] whose commit time is at or after ``t``."""
        while lo <= hi:
            mid = (lo + hi) // 2
            c = committed(mid)
            if c is None:
                raise LookupError(mid)
            if c < t:
                lo = mid + 1
            else:
                hi = mid - 1
        return lo
    try:
        if sel.since is not None:
            first = first_at(sel.since, first, last)
        if sel.until is not None:
            last = first_at(sel.until + 1, first, last) - 1
    except LookupError:
        return sel.first, sel.last   # a gap in the serials: walk them all
    return (first, last) if first <= last else (None, None)


PAGE = 1000   # records select_pages reads per read transaction


def _collected(ix, txn, sel):
    """(serial, ino) of the candidates of a selection that is not a plain serial walk, in
    serial order: a path glob with a literal directory at its head (that subtree's
    matches), or an expiring-before bound (the expiry table's); None for a serial walk."""
    top = literal_dir(sel.path) if sel.path is not None else "/"
    if top != "/" and sel.expiring_before is None:
        found = _subtree_matches(ix, txn, top, sel)
        if found is not None:
            return found
    if sel.expiring_before is not None:
        serials = sorted(s for _, s in ix.expiring(txn, sel.expiring_before)
                         if s >= sel.first and (sel.last is None or s <= sel.last))
        return [(s, ix.serial_ino(txn, s)) for s in serials]
    return None


def select_pages(store, sel, page=None):
    """The records ``sel`` selects (live: sealed, not deleted), in serial order, in lists
    of at most ``page``, each read in a read transaction of its own: a long export holds
    no transaction open (one would keep LMDB from reusing pages while the mount writes).
    A path glob with a literal directory at its head walks that directory's subtree alone
    (work in proportion to it, not to the store); a commit-time range bisects the serials."""
    ix, page = store.ix, page or PAGE
    with ix.read() as txn:
        pairs = _collected(ix, txn, sel)
        first, last = _committed_range(ix, txn, sel)
    if first is None:
        return
    if pairs is not None:
        for i in range(0, len(pairs), page):
            with ix.read() as txn:
                recs = [r for r in (ix.inode(txn, ino) for _, ino in pairs[i:i + page]
                                    if ino is not None)
                        if r is not None and r.sealed and sel.matches(r)]
            if recs:
                yield recs
        return
    by_path = sel.path is not None
    while True:
        recs, more = [], False
        with ix.read() as txn:
            for serial, ino in ix.serials(txn, first, last):
                if len(recs) == page:
                    more, first = True, serial
                    break
                if by_path:   # most do not match: their path is read, not the whole inode
                    found = ix.inode_path(txn, ino)
                    if found is None or not found[0] or not sel.matches_path(found[1] or ""):
                        continue
                rec = ix.inode(txn, ino)
                if rec is not None and rec.sealed and sel.matches(rec):
                    recs.append(rec)
        if recs:
            yield recs
        if not more:
            return


def select(store, sel):
    """Yield the Inode of every live record matching ``sel``, in serial order
    (select_pages, one at a time)."""
    for recs in select_pages(store, sel):
        yield from recs
