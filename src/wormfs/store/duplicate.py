"""A primary's side of its duplicate while the unit is open.

The replicator itself (shipping frames, waiting for acknowledgements, its states) lives in
mirror/ and reaches the store through replication.py's hooks; this module is what the store
does around it: wait for it after a durable change (the journal's ``after_durable``), put
every change of its state on record as a ``mirror`` event, note the heads it acknowledged
in the unit's own chain (heads.py), refuse new files once it has been behind too long, and
serve a damaged chunk from it (read repair). It imports nothing above store/.
"""
import logging

from blake3 import blake3 as _blake3

from ..errors import IntegrityError, StoreFull, WormError
from ..timeutil import format_us, parse_duration
from . import frames as F
from .maintenance import event_hash_at

log = logging.getLogger("wormfs.store")

DEFAULT_MIRROR_MAX_LAG = "24h"


class Duplicate:
    def __init__(self, replicator, *, journal, unit, heads, serial_floor, settings):
        """``replicator``: what replication.hooks().replicator made; ``heads``: the
        HeadKeeper of the unit's chain (None on a unit without one); ``settings``: a
        function returning the store's settings (the lag limit can change)."""
        self.replicator = replicator
        self.journal, self.log, self.ix = journal, journal.log, journal.ix
        self.clock = journal.clock
        self.unit, self.heads, self.serial_floor = unit, heads, serial_floor
        self.settings = settings

    # -- keeping it up --------------------------------------------------------------------

    def connect(self):
        """Connect only: a backlog is shipped by ``poll`` (the mount's keeper, or the
        command that opened the store), so that opening never waits for it."""
        self.replicator.connect()
        self.record_changes()

    def poll(self):
        """Reconnect if due, ship what is durable and not shipped (frames no seal waited
        for), and audit every change of state. Costs a stat when there is nothing to do."""
        r = self.replicator
        if r.connect():
            if r.acked < self.log.end_position():
                self.journal.sync()
            r.ship_durable()
        self.record_changes()

    def after_durable(self, pos):
        """A durable change waits for the duplicate too (unless it is unreachable)."""
        self.replicator.wait(pos)
        if self.replicator.has_changes:
            self.record_changes()

    def record_changes(self):
        self.note_head()
        for change in self.replicator.pop_changes():
            lag = self.journal.last_seq - change.pop("acked_seq", 0)
            self.journal.mutate(lambda txn: self.journal.append(
                txn, "mirror", None, serial=self.unit.get("peer_serial"),
                lag_events=max(0, lag), **change), durable=True, ship=False, reserve=True)

    def note_head(self, force=False):
        """Record the head the duplicate acknowledged (rate-limited; ``force`` at close)."""
        r = self.replicator
        if self.heads is None or not r.acked_seq or not r.connected:
            return  # only a head the connected duplicate itself acknowledged
        if not force and not self.heads.due(self.clock.now()):
            return  # rate-limited: no index read or frame read for a head not yet due
        seq = r.acked_seq
        with self.ix.read() as txn:
            next_serial = self.ix.meta(txn, "next_serial", 1)
        try:
            h = event_hash_at(self.log, self.ix, seq)
            self.heads.note(self.clock.now(), seq, h, max(next_serial, self.serial_floor),
                            force=force)
        except (IntegrityError, OSError) as e:
            log.warning("cannot record the mirror's head %s: %s", seq, e)

    def close(self):
        try:
            self.journal.sync()
            self.replicator.ship_durable()
            self.note_head(force=True)
            self.replicator.close()
        except WormError as e:
            log.warning("mirror not closed cleanly: %s", e)

    # -- what it says ---------------------------------------------------------------------

    def state(self):
        """(state, reason, behind_since_us) as this process sees it."""
        r = self.replicator
        return (r.state, r.reason, r.behind_since)

    def check_lag(self):
        """New files are refused once the duplicate has been behind longer than the store's
        mirror_max_lag: records must not pile up without their duplicate."""
        r = self.replicator
        if r.behind_since is None:
            return
        limit = (self.settings() or {}).get("mirror_max_lag", DEFAULT_MIRROR_MAX_LAG)
        now = self.clock.now()
        if now - r.behind_since > parse_duration(limit).after(r.behind_since) - r.behind_since:
            raise StoreFull(f"the mirror has not kept up since {format_us(r.behind_since)} "
                            f"({r.state}: {r.reason}), longer than the store's mirror_max_lag "
                            f"of {limit}: new files are refused until it is back (see "
                            f"'wormfs status')")

    # -- read repair ----------------------------------------------------------------------

    def repair_chunk(self, cid, loc, damage):
        """A chunk that fails its checks here is served from the duplicate, which holds the
        same frame at the same place, and the frame is copied back over the damaged one.
        Without a sound copy the read fails (EIO): never wrong bytes."""
        target = self.replicator.target
        if target is None or self.journal.failed:
            raise damage
        segno, offset, length = loc
        flen = F.FIXED_LEN + 32 + length
        try:
            raw = target.read(segno, offset, flen)
            ftype, key, plen, pxxh, hl = F.parse_header(raw)
            data = memoryview(raw)[hl:]
            F.check_payload(data, pxxh)
            if ftype != F.T_CHUNK or key != cid or plen != length or \
                    _blake3(data).digest() != cid:
                raise IntegrityError("the mirror's frame is another chunk")
        except (WormError, OSError) as e:
            raise IntegrityError(f"{damage}; the mirror has no sound copy either "
                                 f"({e})") from None
        detail = f"read of chunk {cid.hex()[:16]}: {damage}"
        where = dict(unit=self.unit["serial"], segment=segno, offset=offset, length=flen,
                     source=target.serial, cause="read")
        try:
            self.log.patch(segno, offset, raw)
            self.log.read_chunk(segno, offset, cid, length)
        except (WormError, OSError) as e:
            log.error("chunk %s served from the mirror; repairing the primary failed: %s",
                      cid.hex()[:16], e)
            self.journal.event_now("repair", durable=True, detail=f"{detail}; repair failed: "
                                   f"{e}", repaired=False, **where)
            return bytes(data)
        log.warning("chunk %s at segment %d offset %d was damaged; repaired from mirror %s",
                    cid.hex()[:16], segno, offset, target.serial)
        self.journal.event_now("repair", durable=True, detail=detail, **where)
        return bytes(data)
