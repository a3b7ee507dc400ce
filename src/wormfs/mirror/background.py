"""The background scrub of a mounted store: SPEC "verified automatically ... while retained".

A plain thread in the mount daemon. Every ``scrub_interval`` (a store setting, default 7d) it
walks both units once with repairs on (verification.run, cause "background"), so bit rot on
either unit is found and repaired from the other while both copies are still good somewhere,
and the result is a 'scrub' event. The walk is paced: its average rate stays near what it
takes to finish within half the interval (at least MIN_RATE), so a big store is read slowly
over days instead of in one burst that would compete with the writers.

A pass goes in pieces of about PIECE_SECONDS: each piece ends with a 'scrub' event that
carries the cursor to go on from (scrubcursor.py), and so does stopping (an unmount). A
remount goes on with the pass where it stood, not from the start: at 10^8 records a pass
reads for days, and a daemon restarted more often than that would otherwise never finish
one. A killed daemon loses at most the piece it was in.

The first pass comes one interval after the last complete verification of any kind (or
after the mount, for a store never verified), so remounting does not restart the clock; a
pass left unfinished goes on at once.
"""
import logging
import threading
import time

from ..errors import WormError
from ..timeutil import US, parse_date, parse_duration
from . import verification

log = logging.getLogger("wormfs.scrub")
DEFAULT_INTERVAL = "7d"
MIN_RATE = 1 << 20   # bytes/s: a small store is not spread out over days
PIECE_SECONDS = 600  # a piece's length: what a killed daemon can lose of a pass


class BackgroundScrub:
    def __init__(self, store, piece_seconds=PIECE_SECONDS):
        self.store = store
        self.piece_seconds = piece_seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wormfs-scrub", daemon=True)
        self.thread.start()

    def _interval_s(self):
        text = (self.store.settings() or {}).get("scrub_interval", DEFAULT_INTERVAL)
        now = self.store.now()
        return max(1.0, (parse_duration(text).after(now) - now) / US)

    def _first_wait(self, interval):
        if self.store.scrub_resume() is not None:
            return 0.0   # a pass in pieces to go on with
        last = self.store.last_verification()
        if not last:
            return interval
        elapsed = (self.store.now() - parse_date(last["time"])) / US
        return max(0.0, interval - elapsed)

    def _run(self):
        try:
            interval = self._interval_s()
            wait = self._first_wait(interval)
        except Exception:
            log.exception("background scrub not started (bad scrub_interval?)")
            return
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                rep = self._one_pass(interval)
                if rep is None:
                    return   # stopped; the last piece's event says where to go on
                (log.info if rep.ok else log.error)(
                    "background scrub: %s, %d findings, %d repaired",
                    "clean" if rep.ok else "PROBLEMS", rep.count, rep.repaired)
            except WormError as e:
                log.warning("background scrub could not run: %s", e)
            except Exception:
                log.exception("background scrub failed; it runs again next interval")
            wait = max(0.0, interval - (time.monotonic() - started))

    def _one_pass(self, interval):
        """Pieces until the pass is done (its Report) or the scrub is stopped (None)."""
        resume = self.store.scrub_resume()
        pacer = Pacer(self.store, interval, self._stop.wait)
        while True:
            piece_began = time.monotonic()

            def pause():
                return self._stop.is_set() or \
                    time.monotonic() - piece_began >= self.piece_seconds

            rep = verification.run(self.store, repair=True, cause="background",
                                   progress=pacer, resume=resume, pause=pause,
                                   on_cursor=pacer.start_from)
            if rep.resume is None:
                return rep
            if self._stop.is_set():
                return None
            resume = rep.resume.to_dict()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=30)


class Pacer:
    """A walk's ``progress``: sleeps (with ``wait``, which stopping cuts short) so that the
    pass, from when it began, reads at about the rate that ends it within half the
    interval; the walk pauses at its next step once stopped.

    When the pass began comes from the cursor the walk goes from (``start_from``, called by
    verification.run): a pass resumed after a remount has the time since its cursor's
    ``started`` (the store's clock) behind it, and a new one (also one begun because the
    recorded cursor no longer fits the units) has none, so that its pacing counts from now,
    not from a cursor it does not use."""

    def __init__(self, store, interval, wait):
        self.store, self.interval, self.wait = store, interval, wait
        self.began = time.monotonic()   # on this process's monotonic clock

    def start_from(self, cursor):
        behind = max(0.0, (self.store.now() - cursor.started) / US)
        self.began = time.monotonic() - behind

    def __call__(self, done, total):
        rate = max(MIN_RATE, total / (self.interval / 2))
        ahead = done / rate - (time.monotonic() - self.began)
        if ahead > 0:
            self.wait(ahead)
