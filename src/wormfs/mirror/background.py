"""The background scrub of a mounted store: SPEC "verified automatically ... while retained".

A plain thread in the mount daemon. Every ``scrub_interval`` (a store setting, default 7d) it
walks both units once with repairs on (verification.run, cause "background"), so bit rot on
either unit is found and repaired from the other while both copies are still good somewhere,
and the result is a 'scrub' event. The walk is paced: its average rate stays near what it
takes to finish within half the interval (at least MIN_RATE), so a big store is read slowly
over days instead of in one burst that would compete with the writers.

The first pass comes one interval after the last verification of any kind (or after the
mount, for a store never verified), so remounting does not restart the clock.
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


class _Stopped(Exception):
    pass


class BackgroundScrub:
    def __init__(self, store):
        self.store = store
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wormfs-scrub", daemon=True)
        self.thread.start()

    def _interval_s(self):
        text = (self.store.settings() or {}).get("scrub_interval", DEFAULT_INTERVAL)
        now = self.store.now()
        return max(1.0, (parse_duration(text).after(now) - now) / US)

    def _first_wait(self, interval):
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
                rep = verification.run(self.store, repair=True, cause="background",
                                       progress=self._pacer(interval, started))
                (log.info if rep.ok else log.error)(
                    "background scrub: %s, %d findings, %d repaired",
                    "clean" if rep.ok else "PROBLEMS", rep.count,
                    sum(1 for f in rep.findings if f["repaired"]))
            except _Stopped:
                return
            except WormError as e:
                log.warning("background scrub could not run: %s", e)
            except Exception:
                log.exception("background scrub failed; it runs again next interval")
            wait = max(0.0, interval - (time.monotonic() - started))

    def _pacer(self, interval, started):
        def progress(done, total):
            if self._stop.is_set():
                raise _Stopped()
            rate = max(MIN_RATE, total / (interval / 2))
            ahead = done / rate - (time.monotonic() - started)
            if ahead > 0 and self._stop.wait(ahead):
                raise _Stopped()
        return progress

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=30)
