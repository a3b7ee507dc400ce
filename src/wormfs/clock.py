"""The compliance clock: the only time retention decisions are made with.

Rules (SPEC.md "Compliance clock", R12):
- It never runs backward, whatever the system clock does.
- It advances with real elapsed time, measured by CLOCK_BOOTTIME (which counts suspend and is
  not settable), so a daemon restart within one boot loses nothing.
- When the system clock is ahead of it (a forward jump, or time spent powered off, which no
  trusted source measures) it catches up by at most CATCHUP_RATE of the real time that passes:
  7 days per 365 days, as SnapLock's ComplianceClock. A 10-year forward jump therefore expires
  nothing: it would take centuries to catch up. Deletions after a long outage wait longer; that
  is the safe side.
- Every transition into or out of agreement with the system clock (beyond TOLERANCE) is an
  anomaly that the store writes into the audit trail.

State is kept in ``STORE/clock.json`` (written atomically) and is never older than the last
event in the log: the store passes the newest event time as a floor when it opens.

Tests inject a TimeSource; the product has no way to choose one (no flag, no variable).
"""
import json
import os
import time
from dataclasses import dataclass

from .timeutil import US, format_us

CATCHUP_RATE = 7 / 365
TOLERANCE_US = 2 * US
PERSIST_INTERVAL_US = 30 * US


class SystemTimeSource:
    """The real clocks of this machine."""

    def wall_us(self):
        return time.time_ns() // 1000

    def boot_us(self):
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000

    def boot_id(self):
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                return f.read().strip()
        except OSError:
            return "unknown"


@dataclass
class Anomaly:
    kind: str          # "ahead" (system clock ahead), "behind", "agree", "restart"
    wall_us: int
    compliance_us: int
    detail: str


class ComplianceClock:
    def __init__(self, state_path, source=None, floor_us=0, initial_us=None, persist=True):
        """Load or start the clock. ``floor_us``: newest time already recorded in the log.
        ``initial_us``: for a new unit, the time to start from (the system clock).
        ``persist=False``: a reader's view (status of a mounted store) that writes nothing."""
        self.path = state_path
        self._persist = persist
        self.src = source or SystemTimeSource()
        self.anomalies = []
        boot = self.src.boot_us()
        boot_id = self.src.boot_id()
        wall = self.src.wall_us()
        state = self._load()
        if state is None:
            c = initial_us if initial_us is not None else wall
            c = max(c, floor_us)
        elif state.get("boot_id") == boot_id:
            # Same boot: CLOCK_BOOTTIME tells exactly how much real time passed.
            # The floor (the last event's time) already counts the time between the last
            # save and that event: elapsed time is added to the saved value only, never to
            # the floor, or each crash would move the clock ahead by up to the save interval.
            elapsed = max(0, boot - int(state["boot_us"]))
            c = max(int(state["compliance_us"]) + elapsed, floor_us)
            c += min(max(0, wall - c), int(elapsed * CATCHUP_RATE))
        else:
            # New boot: the time spent down is unknown; resume where we stopped and catch up.
            c = max(int(state["compliance_us"]), floor_us)
            self.anomalies.append(Anomaly(
                "restart", wall, c,
                f"new boot; system clock {format_us(wall)}, compliance clock resumes at "
                f"{format_us(c)} and catches up at most 7 days per year"))
        self._c = c
        self._boot = boot
        self._agree = abs(wall - c) <= TOLERANCE_US
        if not self._agree and (state is None or state.get("agree", True)):
            self._note_disagreement(wall, c)
        self._persisted_at = None
        self.persist()

    def _load(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _note_disagreement(self, wall, c):
        kind = "ahead" if wall > c else "behind"
        self.anomalies.append(Anomaly(
            kind, wall, c,
            f"system clock {format_us(wall)} is {abs(wall - c) / US:.0f}s {kind} of the "
            f"compliance clock {format_us(c)}"))

    def now(self):
        """Current compliance time in us. Thread-safe enough: callers hold the store lock."""
        boot = self.src.boot_us()
        wall = self.src.wall_us()
        elapsed = max(0, boot - self._boot)
        c = self._c + elapsed
        lag = wall - c
        if lag > 0:
            c += min(lag, int(elapsed * CATCHUP_RATE))
        c = max(c, self._c)
        self._c, self._boot = c, boot
        agree = abs(wall - c) <= TOLERANCE_US
        if agree != self._agree:
            if agree:
                self.anomalies.append(Anomaly("agree", wall, c, "system clock agrees again"))
            else:
                self._note_disagreement(wall, c)
            self._agree = agree
        if self._persisted_at is None or c - self._persisted_at >= PERSIST_INTERVAL_US:
            self.persist()
        return c

    def wall_us(self):
        return self.src.wall_us()

    def pop_anomalies(self):
        out, self.anomalies = self.anomalies, []
        return out

    def persist(self):
        if not self._persist:
            return
        state = {"compliance_us": self._c, "boot_us": self._boot, "boot_id": self.src.boot_id(),
                 "agree": self._agree, "compliance": format_us(self._c)}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._persisted_at = self._c
