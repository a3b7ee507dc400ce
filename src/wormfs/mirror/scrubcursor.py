"""Where a verify or scrub pass stands, so that it can stop and go on later: the background
scrub walks a big store in pieces over days, and a restart of the daemon must not send it
back to the start (at 10^8 records a pass is a day of reading).

A pass walks what was there when it began: each unit's log up to where its index was then
(``applied``), and the records sealed by then (serials up to ``last_serial``); what comes
later is the next pass's. The cursor holds that, how far the walk has come (``phase`` and
``next``: the next segment of the log walk, then the next serial of the record walk), the
state the walk carries from one frame to the next (each unit's chain position and hash, its
counts), and what the pass has found so far.

It is kept in the chain, not in a file beside it: each piece's 'scrub' event carries it as
``resume`` (so a cursor cannot be edited behind the daemon's back without breaking the
chain), and the index keeps the latest as meta ``scrub_resume`` until a complete verify or
scrub (docs/FORMAT.md "Index", "Events"). A cursor that does not parse, or that names other
units than the store has now, starts a fresh pass: it can make a pass longer, never shorter.
"""
import dataclasses

from ..store import events as E

VERSION = 1


@dataclasses.dataclass
class UnitPlace:
    """One unit in a pass: what it held when the pass began, and the walk's state on it."""
    serial: str
    applied: tuple          # (segment, offset): the log is walked up to here
    last_seq: int           # events the index held then
    chunks: int             # chunks the index listed then (stats)
    logical: int            # bytes of its records then (stats), read by the record walk
    last_dispose: int       # seq of the last dispose event then (0: none)
    chain_seq: int = 0      # the last event the walk has seen, and its hash
    chain_hash: str = E.GENESIS
    chain_broken: bool = False
    damaged: bool = False
    placed: int = 0         # chunk frames found where the index says
    frames: int = 0
    records: int = 0


@dataclasses.dataclass
class Cursor:
    started: int            # the store's clock when the pass began (us)
    units: list             # [UnitPlace], primary first
    last_serial: int        # records up to this serial are walked
    total: int              # bytes the pass reads: every log, then every record's content
    phase: str = "log"      # "log", then "records"
    next: int = 1           # the next segment (log) or serial (records) to walk
    done: int = 0           # bytes read so far (of total)
    bytes: int = 0          # log bytes walked so far
    pending: int = 0        # records the mirror does not hold yet
    chains_agree: object = None   # whether the mirror's chain is a prefix (records phase)
    findings: int = 0       # findings of the pieces before this one
    repaired: int = 0
    pieces: int = 0         # pieces recorded before this one

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["v"] = VERSION
        for u in d["units"]:
            u["applied"] = list(u["applied"])
        return d

    @classmethod
    def from_dict(cls, d):
        """The cursor a 'scrub' event recorded; ValueError if it is not one."""
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise ValueError("not a scrub cursor of this version")
        d = dict(d)
        del d["v"]
        try:
            units = [UnitPlace(**u) for u in d.pop("units")]
            cur = cls(units=units, **d)
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"malformed scrub cursor: {e}") from None
        for u in units:
            u.applied = tuple(u.applied)
            _check(u, str, "serial", "chain_hash")
            _check(u, bool, "chain_broken", "damaged")
            _check(u, int, "last_seq", "chunks", "logical", "last_dispose", "chain_seq",
                   "placed", "frames", "records")
            if len(u.applied) != 2 or not all(type(x) is int for x in u.applied):
                raise ValueError("malformed scrub cursor: applied")
        _check(cur, int, "started", "last_serial", "total", "next", "done", "bytes",
               "pending", "findings", "repaired", "pieces")
        if cur.phase not in ("log", "records") or cur.chains_agree not in (None, True, False) \
                or not units or cur.next < 1:
            raise ValueError("malformed scrub cursor")
        return cur

    def fits(self, units):
        """Whether this pass was over these units (the same serials, in the same order)."""
        return [u.serial for u in self.units] == [u.serial for u in units]

    def place(self, serial):
        for u in self.units:
            if u.serial == serial:
                return u
        raise KeyError(serial)


def _check(obj, kind, *names):
    for n in names:
        v = getattr(obj, n)
        if type(v) is not kind:
            raise ValueError(f"malformed scrub cursor: {n}")
