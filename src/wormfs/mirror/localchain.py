"""A unit's own event chain, beside the log it shares with its peer.

A mirror holds its primary's log byte for byte, so it cannot write its own events into it.
What only the mirror knows goes here: an event it refused to apply, a torn tail it cut after a
crash, a repair of its own segments, a promotion. Same frames and same chain rules as the
main log (docs/FORMAT.md "Segments" and "Events"), in ``UNIT/local/``, with the unit's own
uuid in the segment headers and the unit's own compliance clock in ``time``. ``verify`` checks
it as the unit's second chain.
"""
import os

from ..store import events as E
from ..store import frames as F
from ..store.segments import SegmentLog
from ..timeutil import format_us

LOCAL_SEGMENT_SIZE = 16 << 20


class LocalChain:
    def __init__(self, path, unit_uuid_bytes, readonly=False):
        os.makedirs(path, exist_ok=True) if not readonly else None
        self.log = SegmentLog(path, unit_uuid_bytes, LOCAL_SEGMENT_SIZE, readonly=readonly)
        self.last_seq, self.last_hash = 0, E.GENESIS
        self.last_refused = None  # (seq of the refused event, reason), to note each once
        for ev, h in self.events_with_hashes():
            self.last_seq, self.last_hash = ev["seq"], h
            if ev["type"] == "refused":
                self.last_refused = (ev.get("event_seq"), ev.get("reason"))

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
        return ev

    def close(self):
        self.log.close()
