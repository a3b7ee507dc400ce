"""The primary side of replication: shipping the log to the mirror unit.

What is shipped: the bytes of the primary's segments, from where the mirror's log ends up to
the position the group commit made durable (store/commit.py), in order, in batches of whole
frames. The mirror checks and applies them (replica.py) and fsyncs them before they count as
acknowledged. Only durable frames are shipped, so a crash of the primary can never take back
something the mirror already holds, and the two logs stay one log.

Who ships: whoever needs it first. A seal waits for its own position (``wait``); one waiter
at a time ships everything durable so far, and the others usually find their position covered
when it is done (group commit, once more). The mount calls ``Store.mirror_poll`` every few
seconds: it ships what nobody waited for, notices a mirror that went away, and reconnects.
A backlog found at (re)connection (the mirror was away) is shipped by the poll, not by a
seal: seals meanwhile return at once and their records stay 'pending' until it is done.

States (also the ``state`` of the 'mirror' events the store writes on every change):
    synced       connected; everything durable is shipped, or is being shipped
    unreachable  the mirror cannot be opened or written (removed, read-only, full, locked)
    refused      the mirror refused an event that does not continue the chain; nothing
                 after it can be shipped (an event that continues it but breaks the
                 mirror's rules is kept there unapplied and the events after it flow:
                 the store is DEGRADED for it, see status.py)
    diverged     the mirror holds a log that is not a prefix of this one
Outside ``synced`` the store is DEGRADED. ``behind_since`` (compliance time) says since when
the mirror has not kept up; it is kept in ``mirror.json`` with the acknowledged position, so
a restart neither forgets nor resets it (status and the maximum lag read it).
"""
import json
import logging
import os
import threading
import time

from ..errors import WormError
from ..store import frames as F
from ..store.hostfs import atomic_write
from ..timeutil import format_us
from .replica import MirrorRefused, PositionMismatch

log = logging.getLogger("wormfs.mirror")

STATE_FILE = "mirror.json"
BATCH = 8 << 20           # bytes per receive call (whole frames; one bigger frame alone)
RETRY_S = 2               # reconnect this often while unreachable (a failed try is a stat)
REFUSED_RETRY_S = 60      # a refused event is offered again this often (the mirror's clock
                          # may have reached the retain-until by then)


class Replicator:
    def __init__(self, log_, group, connect, unit_path, now_us, event_hash_at):
        """``connect()`` opens the target (target.py); ``unit_path`` is the primary's
        directory (for mirror.json); ``now_us()`` is the primary's
        compliance clock; ``event_hash_at(seq)`` the hash of the primary's event ``seq``
        (to check that the mirror's chain is a prefix of ours)."""
        self._log, self._group, self._connect = log_, group, connect
        self._state_path = os.path.join(unit_path, STATE_FILE)
        self._now, self._event_hash_at = now_us, event_hash_at
        self._cond = threading.Condition()
        self._shipping = False
        self._changes = []
        self._catching_up = False
        self._next_try = 0.0
        self.target = None
        self.acked = None
        saved = read_state(unit_path)
        self.acked_seq = saved.get("acked_seq", 0)
        # A new store starts out synced: its mirror was created empty beside it.
        self.state = saved.get("state", "synced")
        self.reason = saved.get("reason", "the mirror holds everything durable")
        self.behind_since = saved.get("behind_since_us")
        # How many of the mirror's kept refusals (refused events it holds unapplied, so the
        # events after them still flow) this store has put on record in its own trail.
        self.refusals_seen = saved.get("refusals_seen", 0)

    # -- state ------------------------------------------------------------------------------

    def _save(self):
        state = {"state": self.state, "reason": self.reason, "acked_seq": self.acked_seq,
                 "acked": list(self.acked) if self.acked else None,
                 "behind_since_us": self.behind_since,
                 "behind_since": format_us(self.behind_since) if self.behind_since else None,
                 "refusals_seen": self.refusals_seen}
        try:
            atomic_write(self._state_path, json.dumps(state, indent=2).encode() + b"\n")
        except OSError as e:
            log.warning("cannot write %s: %s", self._state_path, e)

    def _set_state(self, state, reason, **extra):
        """Caller holds _cond."""
        if state == "synced":
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = self._now()
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason = state, reason
        if changed:
            self._changes.append(dict(state=state, reason=reason, acked_seq=self.acked_seq,
                                      **extra))
            self._save()
            (log.info if state == "synced" else log.warning)("mirror %s: %s", state, reason)

    @property
    def has_changes(self):
        """Whether changes of state wait for pop_changes (read without the lock: a change
        that lands just after is popped by the next poll)."""
        return bool(self._changes)

    def pop_changes(self):
        with self._cond:
            out, self._changes = self._changes, []
        return out

    @property
    def connected(self):
        return self.target is not None

    def is_synced(self, seal_seq):
        """Whether the mirror holds the event ``seal_seq`` (user.worm.mirror)."""
        return seal_seq is not None and seal_seq <= self.acked_seq

    # -- connecting -------------------------------------------------------------------------

    def connect(self):
        """Open the mirror and check that its log is a prefix of ours. Returns whether it is
        connected now."""
        with self._cond:
            if self.target is not None:
                return True
            if time.monotonic() < self._next_try:
                return False
            try:
                target = self._connect()
            except Exception as e:  # WormError, OSError, lmdb.Error: it is not usable now
                self._failed("unreachable", _why(e))
                return False
            try:
                seq, h = target.head()
                mine = self._event_hash_at(seq) if seq else None
                end, durable = target.end(), self._group.durable_pos or self._log.end_position()
                if (seq and mine != h) or end > durable:
                    target.close()
                    self._failed("diverged", f"the mirror's log (event {seq}) is not a "
                                 f"prefix of this unit's log; see 'wormfs mirror status'")
                    return False
            except Exception as e:
                _close_quietly(target)
                self._failed("unreachable", _why(e))
                return False
            self.target, self.acked, self.acked_seq = target, end, seq
            # A backlog is the poll's to ship, in the background: a seal does not wait
            # behind it (its record shows 'pending' until the mirror has caught up).
            self._catching_up = end < durable
            return True

    def _failed(self, state, reason):
        """Caller holds _cond; the target is closed or was never opened."""
        self.target = None
        delay = REFUSED_RETRY_S if state in ("refused", "diverged") else RETRY_S
        self._next_try = time.monotonic() + delay
        self._set_state(state, reason)

    def disconnect(self, state="unreachable", reason="closed"):
        with self._cond:
            while self._shipping:
                self._cond.wait()
            if self.target is not None:
                _close_quietly(self.target)
            self.target = None
            self._save()
            if state != "closed":
                self._set_state(state, reason)

    # -- shipping ---------------------------------------------------------------------------

    def wait(self, pos):
        """Ship until the mirror durably holds the log up to ``pos`` (which the group commit
        made durable). False if the mirror is not there to hold it: the caller goes on, the
        record stays 'pending' and the mirror catches up later."""
        with self._cond:
            if self._catching_up:
                return False
            while self.target is not None and self.acked < pos:
                if self._shipping:
                    self._cond.wait()
                    continue
                before = self.acked
                self._ship_locked()
                if self.acked == before:
                    break  # nothing durable to ship beyond it (or a failure)
            return self.target is not None and self.acked >= pos

    def ship_durable(self):
        """Ship whatever is durable and not shipped yet (the mount's poll)."""
        with self._cond:
            if self.target is None:
                return False
            if self._shipping:
                return True
            self._ship_locked()
            return self.target is not None

    def exclusive(self, fn):
        """``fn(target)`` while nothing ships to it (None if there is no target): for the
        few calls that are not shipping (disposal's, on an S3 unit)."""
        with self._cond:
            while self._shipping:
                self._cond.wait()
            if self.target is None:
                return None
            return fn(self.target)

    def peer_clock(self):
        """The connected duplicate's (now_us, why_unsettled) for judging a deletion
        (target.deletion_clock), or None when none is connected or it cannot answer: the
        primary then judges alone, and the duplicate judges again when it catches up."""
        try:
            return self.exclusive(lambda t: t.deletion_clock())
        except (WormError, OSError) as e:
            log.warning("mirror: cannot read its compliance clock: %s", _why(e))
            return None

    def holds_event(self, seq):
        """Whether the connected duplicate holds event ``seq`` durably and applied it (not
        one it refused and keeps unapplied): disposal destroys nothing here before."""
        def held(t):
            return self.acked_seq >= seq and all(
                r.get("event_seq") != seq for r in t.kept_refusals())
        try:
            return bool(self.exclusive(held))
        except (WormError, OSError) as e:
            log.warning("mirror: cannot read its refusals: %s", _why(e))
            return False

    def _ship_locked(self):
        """Caller holds _cond with nobody shipping; it is released while the bytes move."""
        if not self.target.alive():
            # Removed or replaced: what we would write now would land nowhere anyone sees.
            _close_quietly(self.target)
            self._failed("unreachable", "the mirror directory is gone")
            return
        upto = self._group.durable_pos
        if upto is None or upto <= self.acked:
            if self.state != "synced":
                self._set_state("synced", "the mirror holds everything durable")
            return
        self._shipping = True
        target, start = self.target, self.acked
        self._cond.release()
        err, pos, t0 = None, start, time.monotonic()
        try:
            pos = self._ship(target, start, upto)
            target.sync()
            seq = target.head()[0]
        except (WormError, OSError) as e:
            err = e
        except Exception as e:  # a bug here must not fail a seal the primary made durable
            log.exception("shipping to the mirror failed")
            err = e
        finally:
            self._cond.acquire()
            self._shipping = False
            self._cond.notify_all()
        if err is None:
            was = self.state
            self.acked, self.acked_seq = pos, seq
            self._catching_up = False
            self._note_refusals(target)
            if was != "synced":
                self._set_state("synced", "the mirror caught up", caught_up_from=list(start),
                                seconds=round(time.monotonic() - t0, 3))
            return
        _close_quietly(target)
        if isinstance(err, MirrorRefused):
            self._failed("refused", str(err))
        elif isinstance(err, PositionMismatch):
            self._failed("unreachable", f"{err}; reconnecting")
            self._next_try = 0.0
        else:
            self._failed("unreachable", _why(err))

    def _note_refusals(self, target):
        """Caller holds _cond. Each refused event the mirror kept unapplied goes on record
        once as a 'mirror' event with state 'refused' (the store is DEGRADED from then on:
        status.py); the state itself stays what shipping says."""
        kept = target.kept_refusals()
        if len(kept) <= self.refusals_seen:
            return
        for r in kept[self.refusals_seen:]:
            reason = (f"the mirror refused event {r['event_seq']} ({r.get('event_type')}) and "
                      f"keeps it unapplied: {r.get('reason')}")
            self._changes.append(dict(state="refused", reason=reason,
                                      acked_seq=self.acked_seq, event_seq=r["event_seq"]))
            log.warning("mirror: %s", reason)
        self.refusals_seen = len(kept)
        self._save()

    def _ship(self, target, pos, upto):
        """Send the log from ``pos`` to ``upto``; returns the position reached."""
        while pos < upto:
            segno, off = pos
            end = upto[1] if segno == upto[0] else self._log.size(segno)
            if off >= end:
                target.finish(segno, off)
                pos = (segno + 1, F.SEG_HEADER_LEN)
                continue
            data = self._frames(segno, off, end)
            target.receive(segno, off, data)
            pos = (segno, off + len(data))
        return pos

    def _frames(self, segno, off, end):
        """Whole frames of a segment from ``off``: up to BATCH bytes, or the one frame at
        ``off`` if it is bigger."""
        buf = self._log.read(segno, off, min(BATCH, end - off))
        cut = 0
        while cut < len(buf):
            try:
                _, _, plen, _, hl = F.parse_header(buf[cut:cut + F.HEADER_PEEK])
            except F.FrameError as e:
                if e.torn:
                    break
                raise
            if cut + hl + plen > len(buf):
                break
            cut += hl + plen
        if cut == 0:
            _, _, plen, _, hl = F.parse_header(buf[:F.HEADER_PEEK])
            return self._log.read(segno, off, hl + plen)
        return memoryview(buf)[:cut]

    def close(self):
        """Ship what is durable, then let the mirror go (the store is closing)."""
        with self._cond:
            if self.target is not None:
                self._ship_locked()
        self.disconnect("closed")


def read_state(unit_path):
    """A primary's mirror.json as a dict ({} if there is none or it cannot be read)."""
    try:
        with open(os.path.join(unit_path, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _why(e):
    if isinstance(e, OSError):
        return f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}"
    if isinstance(e, WormError):
        return str(e)
    # A bug, not a state of the mirror: say so, and where the details are.
    return (f"an unexpected error ({type(e).__name__}{': ' + str(e) if str(e) else ''}); "
            f"the daemon's log has the details")


def _close_quietly(target):
    try:
        target.close()
    except Exception as e:  # a gone device: nothing left to save there
        log.debug("closing the mirror: %s", e)
