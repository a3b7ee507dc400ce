"""A unit's own event chain, beside the log it shares with its peer.

A mirror holds its primary's log byte for byte, so it cannot write its own events into it.
What only the mirror knows goes here: an event it refused to apply, a torn tail it cut after a
crash, a repair of its own segments, a promotion. Same frames and same chain rules as the
main log (docs/FORMAT.md "Segments" and "Events"), in ``UNIT/local/``, with the unit's own
uuid in the segment headers and the unit's own compliance clock in ``time``. ``verify`` checks
it as the unit's second chain.
"""
import os

from . import events as E
from . import frames as F
from .segments import SegmentLog
from ..timeutil import format_us

LOCAL_SEGMENT_SIZE = 16 << 20


class LocalChain:
    def __init__(self, path, unit_uuid_bytes, readonly=False):
        os.makedirs(path, exist_ok=True) if not readonly else None
        self.log = SegmentLog(path, unit_uuid_bytes, LOCAL_SEGMENT_SIZE, readonly=readonly,
                              disposable=False)
        self.last_seq, self.last_hash = 0, E.GENESIS
        self.last_refused = None  # (seq of the refused event, reason), to note each once
        self.kept = []  # the refused events kept in the log unapplied (kept_refusals)
        self.last_checkpoint = None  # (time_us, readings) of the newest clock checkpoint
        self.last_head = None  # the newest head or peer_head event (heads.py)
        for ev, h in self.events_with_hashes():
            self.last_seq, self.last_hash = ev["seq"], h
            if ev["type"] in ("head", "peer_head") and isinstance(ev.get("event_seq"), int):
                if self.last_head is None or ev["event_seq"] > self.last_head["event_seq"]:
                    self.last_head = ev
            if ev["type"] == "clock" and ev.get("kind") == "checkpoint":
                self.last_checkpoint = (ev["time_us"], ev.get("readings"))
            if ev["type"] == "refused":
                self.last_refused = (ev.get("event_seq"), ev.get("reason"))
                if ev.get("kept"):
                    self.kept.append(ev)

    def skipped_seqs(self):
        """The seqs of the primary's events this unit holds in its log without applying
        them: what a replay of its log must skip to rebuild its index (replay.Replayer)."""
        return {ev["event_seq"] for ev in self.kept}

    def events_with_hashes(self):
        for fr in self.log.scan():
            if fr.ftype == F.T_EVENT:
                yield E.decode(fr.payload), E.event_hash(fr.payload)

    def events(self):
        return [ev for ev, _ in self.events_with_hashes()]

    def append(self, now_us, etype, **fields):
        ev = {"seq": self.last_seq + 1, "prev": self.last_hash, "time": format_us(now_us),
              "time_us": now_us, "type": etype}
        ev.update(fields)
        payload = E.encode(ev)
        self.log.append([F.encode_event(payload)])
        self.log.sync()
        self.last_seq, self.last_hash = ev["seq"], E.event_hash(payload)
        if etype == "refused" and ev.get("kept"):
            self.kept.append(ev)
        if etype == "clock" and ev.get("kind") == "checkpoint":
            self.last_checkpoint = (now_us, ev.get("readings"))
        if etype in ("head", "peer_head"):
            self.last_head = ev
        return ev

    def close(self):
        self.log.close()


def kept_refusals(unit_path, unit_uuid):
    """The ``refused`` events with ``kept`` of the unit at ``unit_path`` (none if it has no
    local chain: a primary that never was a mirror)."""
    path = os.path.join(unit_path, "local")
    if not os.path.isdir(path):
        return []
    chain = LocalChain(path, bytes.fromhex(unit_uuid.replace("-", "")), readonly=True)
    try:
        return list(chain.kept)
    finally:
        chain.close()


def skipped_seqs(unit_path, unit):
    """What a replay of this unit's log must skip (LocalChain.skipped_seqs)."""
    return frozenset(ev["event_seq"] for ev in kept_refusals(unit_path, unit["uuid"]))
