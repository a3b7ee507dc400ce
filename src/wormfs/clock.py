"""The compliance clock: the only time retention decisions are made with.

Rules (SPEC.md "Compliance clock", R12):
- It never runs backward, whatever the system clock does.
- It advances by the **smallest** elapsed time its independent sources agree on:
    boot      CLOCK_BOOTTIME as this process reads it (an LD_PRELOAD clock library fakes it;
              a time namespace offsets it);
    uptime    the kernel's /proc/uptime, read as a file (clock libraries do not touch file
              reads; a time namespace does offset it);
    kernel    the kernel's own realtime, as the ctime it puts on a probe file the clock
              touches on a tmpfs (probe_path), read by raw statx (neither a clock library
              nor a time namespace changes it; only setting the system clock does).
  Faking one of them never makes the clock run faster than the others. Across a reboot no
  source measures the time spent down: the clock resumes where it stopped.
- Where the duplicate is an S3 bucket, the bucket's clock (the Date of its responses,
  ``server``: mirror/s3clock.py) bounds it from above: the compliance clock is never ahead
  of what the bucket's clock can be now. It is a clock on another machine, which no setting
  of this host moves: faking all three local sources together (a time namespace and a
  ``settimeofday``) still cannot expire a record before the bucket's time says so. A clock
  that would run ahead of it is held at it, and that is a disagreement like any other.
- When the kernel's realtime is ahead of it (a forward jump, time spent powered off) it
  catches up by at most CATCHUP_RATE of the elapsed time: 7 days per 365 days, as
  SnapLock's ComplianceClock. A 10-year jump therefore expires nothing.
- When the sources disagree beyond a tolerance (over one check, or the process's own
  realtime against the kernel's), the anomaly goes into the audit trail and the clock is
  *unsettled* until they have agreed for SETTLE_US: the store refuses deletions and disposal
  meanwhile (``why_unsettled``), and status says NOT COMPLIANT. Writes, reads and extensions
  go on.
- Its state lives in the hash-chained log: the store writes a ``clock`` event of kind
  ``checkpoint`` (with the sources' readings) at open and every CHECKPOINT_INTERVAL_US,
  and the clock restarts from the newest checkpoint plus the elapsed time its sources
  agree on since then. ``clock.json`` is a cache of the same state: a value the log does not
  support (ahead of it by more than a checkpoint interval) is an anomaly and is ignored
  (``file_problem`` says so to verify and status).

Tests inject a TimeSource; the product has no way to choose one (no flag, no variable).
"""
import json
import os
import struct
import time
from dataclasses import dataclass

from .timeutil import US, format_us

CATCHUP_RATE = 7 / 365
TOLERANCE_US = 2 * US            # sources may differ by this much (file timestamps are coarse)
DRIFT_PPM = 1000                 # ... plus this much of the elapsed time
PERSIST_INTERVAL_US = 30 * US    # clock.json rewritten this often
CHECK_INTERVAL_US = 1 * US       # all sources read at most this often (and before a deletion)
CHECKPOINT_INTERVAL_US = 600 * US
SETTLE_US = 600 * US             # agreement needed after a disagreement before deletions
# A delete that the other unit's clock allows within this long is waited for, not refused:
# two compliance clocks on healthy hosts differ by milliseconds (the mirror's judgement,
# mirror/replica.py, and the primary's look at the mirror's clock, store.py).
CLOCK_SKEW_WAIT_US = 5 * US


class SystemTimeSource:
    """The real clocks of this machine."""

    def server_us(self, date_us):
        """A server's clock reading (an HTTP Date) on this source's time line: as it is."""
        return date_us

    def wall_us(self):
        return time.time_ns() // 1000

    def boot_us(self):
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000

    def uptime_us(self):
        with open("/proc/uptime", "rb") as f:
            return int(float(f.read().split()[0]) * US)

    def kernel_wall_us(self, probe_path):
        """The kernel's realtime: the ctime it gives a file we touch now, read with the raw
        statx system call. ctime cannot be set from user space, and a clock library that
        fakes time(), clock_gettime(), utime() and stat() (libfaketime) does not see a raw
        system call; a time namespace does not shift realtime."""
        fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.utime(fd)   # any change: the kernel sets ctime to its own now
            return _statx_ctime_us(fd)
        finally:
            os.close(fd)

    def boot_id(self):
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                return f.read().strip()
        except OSError:
            return "unknown"


_SYS_STATX = {"x86_64": 332, "aarch64": 291}.get(os.uname().machine)
_libc = None


def _statx_ctime_us(fd):
    global _libc
    if _SYS_STATX is not None:
        import ctypes
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)
        # statx(fd, "", AT_EMPTY_PATH, STATX_CTIME, buf); stx_ctime at offset 0x60
        if _libc.syscall(_SYS_STATX, fd, b"", 0x1000, 0x80, buf) == 0:
            sec, nsec = struct.unpack_from("<qI", buf.raw, 0x60)
            return sec * US + nsec // 1000
    return os.fstat(fd).st_ctime_ns // 1000


@dataclass
class Anomaly:
    kind: str          # ahead, behind, agree, restart, disagree, settled, file
    wall_us: int
    compliance_us: int
    detail: str


@dataclass
class Readings:
    """One reading of every source (what a checkpoint keeps)."""
    boot_id: str
    boot_us: int
    uptime_us: int
    kernel_us: int
    wall_us: int

    def as_fields(self):
        return {"boot_id": self.boot_id, "boot_us": self.boot_us,
                "uptime_us": self.uptime_us, "kernel_us": self.kernel_us}

    @classmethod
    def from_fields(cls, d):
        try:
            kernel = int(d["kernel_us"])
            # A checkpoint keeps no process realtime: it was the kernel's when it was taken.
            return cls(str(d["boot_id"]), int(d["boot_us"]), int(d["uptime_us"]), kernel,
                       kernel)
        except (KeyError, TypeError, ValueError):
            return None


PROBE_DIRS = ("/run/wormfs", "/dev/shm/wormfs")


def probe_path(unit_dir):
    """Where the clock touches a file to read the kernel's realtime: a tmpfs (/run), whose
    timestamps the kernel sets itself, rather than the unit, which may sit on a FUSE or
    network file system whose times are the server's and cached. The unit's own directory
    only when no tmpfs can be used."""
    name = "clock-" + os.path.basename(os.path.abspath(unit_dir)) + "-" + \
        str(os.stat(unit_dir).st_ino if os.path.exists(unit_dir) else 0)
    for d in PROBE_DIRS:
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.access(d, os.W_OK):
                return os.path.join(d, name)
        except OSError:
            continue
    return os.path.join(unit_dir, "clock.probe")


def tolerance(elapsed_us):
    return TOLERANCE_US + abs(elapsed_us) * DRIFT_PPM // 1_000_000


def read_sources(src, probe_path):
    return Readings(src.boot_id(), src.boot_us(), src.uptime_us(),
                    src.kernel_wall_us(probe_path), src.wall_us())


def elapsed_between(a, b):
    """(agreed elapsed us from reading ``a`` to ``b``, disagreement text or None). The
    smallest of the sources; across a reboot none measures anything (0)."""
    if a.boot_id != b.boot_id:
        return 0, None
    parts = {"boot-time clock": b.boot_us - a.boot_us,
             "kernel uptime": b.uptime_us - a.uptime_us,
             "kernel file times": b.kernel_us - a.kernel_us}
    low = max(0, min(parts.values()))
    high = max(parts.values())
    if high - low > tolerance(low):
        text = ", ".join(f"{k} {v / US:+.1f}s" for k, v in parts.items())
        return low, f"the clock's sources disagree on the time elapsed ({text})"
    return low, None


def trusted_start(checkpoint, floor_us, now):
    """The compliance time the log supports at readings ``now``: the newest checkpoint
    (compliance_us, Readings) plus the elapsed time the sources agree on since, never below
    the newest event's time. Returns (compliance_us, disagreement or None)."""
    if checkpoint is None:
        return floor_us, None
    c0, r0 = checkpoint
    e, why = elapsed_between(r0, now)
    return max(c0 + e, floor_us), why


class ComplianceClock:
    def __init__(self, state_path, source=None, floor_us=0, initial_us=None, persist=True,
                 checkpoint=None, server=None):
        """Load or start the clock. ``floor_us``: newest time already recorded in the log.
        ``checkpoint``: the log's newest clock checkpoint, (compliance_us, Readings fields).
        ``initial_us``: for a new unit, the time to start from (the system clock).
        ``persist=False``: a reader's view (status of a mounted store) that writes nothing.
        ``server``: a clock on another machine that bounds this one from above (an S3
        bucket's, mirror/s3clock.py): ``refresh()`` and ``upper_us(source)``."""
        self.path = state_path
        self.probe = probe_path(os.path.dirname(state_path))
        self._persist = persist
        self.src = source or SystemTimeSource()
        self.server = server
        self._floor = floor_us
        self.anomalies = []
        self.file_problem = None
        self.unsettled = None        # why deletions wait (a disagreement), or None
        self._settle_at = None       # compliance time from which it counts as settled
        r = self._read()
        cp = None
        if checkpoint is not None:
            rd = Readings.from_fields(checkpoint[1])
            cp = (int(checkpoint[0]), rd) if rd is not None else None
        c, why = trusted_start(cp, floor_us, r)
        if why:
            self._disagree(r, c, why + " since the last checkpoint in the log")
        state = self._load()
        if state is None and cp is None and not floor_us:
            # A new unit: it starts at the system clock (the kernel's).
            c = max(c, initial_us if initial_us is not None else r.kernel_us)
        elif state is not None:
            cj = self._from_file(state, r, c)
            # A crash loses at most the time since the last checkpoint; the file may carry
            # that much more, never further than the log supports.
            if cp is not None and cj > c + CHECKPOINT_INTERVAL_US + TOLERANCE_US:
                self.file_problem = (f"clock.json says {format_us(cj)}, ahead of the "
                                     f"{format_us(c)} the log supports: edited or stale, "
                                     f"ignored")
                self.anomalies.append(Anomaly("file", r.wall_us, c, self.file_problem))
            else:
                c = max(c, cj)
            if state.get("boot_id") != r.boot_id:
                self.anomalies.append(Anomaly(
                    "restart", r.wall_us, c,
                    f"new boot; system clock {format_us(r.kernel_us)}, compliance clock "
                    f"resumes at {format_us(c)} and catches up at most 7 days per year"))
            if state.get("unsettled") and not self.unsettled:
                self.unsettled = str(state["unsettled"])
                self._settle_at = c + SETTLE_US
        c, why = self._server_bound(c, strict=True)
        if why:
            self._disagree(r, c, why)
        self._c = self._shown = c
        self._last = r
        self._agree = abs(r.kernel_us - c) <= TOLERANCE_US
        if not self._agree and (state is None or state.get("agree", True)):
            self._note_disagreement(r.kernel_us, c)
        self._check_process_clock(r)
        self._persisted_at = None
        self.persist()

    def _load(self):
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.file_problem = f"clock.json cannot be read ({e}): ignored"
            return None
        return state if isinstance(state, dict) else None

    # -- sources ----------------------------------------------------------------------------

    def _read(self):
        try:
            return read_sources(self.src, self.probe)
        except OSError:
            # No probe file (a read-only unit): the kernel's realtime is the process's.
            s = self.src
            return Readings(s.boot_id(), s.boot_us(), s.uptime_us(), s.wall_us(), s.wall_us())

    def _from_file(self, state, r, c):
        """What clock.json would give, by the same elapsed rule as the log's checkpoint."""
        try:
            saved = int(state["compliance_us"])
            ref = Readings.from_fields(state)
        except (KeyError, TypeError, ValueError):
            return 0
        if ref is None:
            # A file an older wormfs wrote (the boot-time clock only): its elapsed time, as
            # it counted it, still bounded by the log's checkpoint in __init__.
            if state.get("boot_id") == r.boot_id and isinstance(state.get("boot_us"), int):
                return saved + max(0, r.boot_us - state["boot_us"])
            return saved
        e, _ = elapsed_between(ref, r)
        return saved + e

    def _check_process_clock(self, r):
        """This process's realtime against the kernel's file times: a clock library
        (LD_PRELOAD) fakes the first, not the second."""
        diff = r.wall_us - r.kernel_us
        if abs(diff) > TOLERANCE_US:
            self._disagree(r, self._c,
                           f"this process's clock reads {format_us(r.wall_us)} but the "
                           f"kernel's file times say {format_us(r.kernel_us)} "
                           f"({diff / US:+.0f}s): a faked clock in the daemon")
            return False
        return True

    def _disagree(self, r, c, why):
        if why != self.unsettled:
            self.anomalies.append(Anomaly("disagree", r.wall_us, c, why))
        self.unsettled = why
        self._settle_at = c + SETTLE_US

    def _note_disagreement(self, kernel, c):
        kind = "ahead" if kernel > c else "behind"
        self.anomalies.append(Anomaly(
            kind, kernel, c,
            f"system clock {format_us(kernel)} is {abs(kernel - c) / US:.0f}s {kind} of the "
            f"compliance clock {format_us(c)}"))

    # -- reading ----------------------------------------------------------------------------

    def now(self, strict=False):
        """Current compliance time in us (callers hold the store lock). Between checks it
        moves with the boot-time clock, by less than CHECK_INTERVAL_US; a check (then, or
        ``strict``: before a deletion) reads every source and takes the smallest elapsed
        time. Never backward."""
        boot = self.src.boot_us()
        if not strict and 0 <= boot - self._last.boot_us < CHECK_INTERVAL_US:
            self._shown = max(self._shown, self._c + (boot - self._last.boot_us))
            return self._shown
        r = self._read()
        e, why = elapsed_between(self._last, r)
        c = self._c + e
        lag = r.kernel_us - c
        if lag > 0:
            c += min(lag, int(e * CATCHUP_RATE))
        c, ahead = self._server_bound(c, strict)
        why = why or ahead
        self._c, self._last = c, r
        if ahead:
            # Held at the bucket's time: what was shown beyond it is not kept either.
            self._shown = max(c, self._floor)
        c = self._shown = max(self._shown, c)
        if why:
            self._disagree(r, c, why)
        ok = self._check_process_clock(r)
        if self.unsettled and why is None and ok and c >= (self._settle_at or 0):
            self.anomalies.append(Anomaly("settled", r.wall_us, c,
                                          f"the clock's sources agree again (after: "
                                          f"{self.unsettled})"))
            self.unsettled = None
        agree = abs(r.kernel_us - c) <= TOLERANCE_US
        if agree != self._agree:
            if agree:
                self.anomalies.append(Anomaly("agree", r.kernel_us, c,
                                              "system clock agrees again"))
            else:
                self._note_disagreement(r.kernel_us, c)
            self._agree = agree
        if self._persisted_at is None or c - self._persisted_at >= PERSIST_INTERVAL_US:
            self.persist()
        return c

    def _server_bound(self, c, strict):
        """(c held at the server's clock, why it had to be, or None)."""
        if self.server is None:
            return c, None
        if strict:
            self.server.refresh()
        hi = self.server.upper_us(self.src)
        if hi is None or c <= hi + TOLERANCE_US:
            return c, None
        return max(hi, self._floor), (
            f"the compliance clock would read {format_us(c)}, ahead of {self.server.name}'s "
            f"clock ({format_us(hi)} at most): this host's clocks run fast or were set "
            f"ahead; held at the bucket's time")

    def why_unsettled(self):
        """None when deletions may go by this clock, else why they wait."""
        self.now(strict=True)
        return self.unsettled

    def readings(self):
        """The sources as last read, for a checkpoint event."""
        return self._last

    def wall_us(self):
        return self.src.wall_us()

    def pop_anomalies(self):
        out, self.anomalies = self.anomalies, []
        return out

    def persist(self, unless_within_us=None):
        """Write clock.json (fsynced, and its directory). ``unless_within_us``: not if what
        is there is at most that much behind the clock now."""
        if not self._persist:
            return
        if unless_within_us is not None and self._persisted_at is not None and \
                self._c - self._persisted_at <= unless_within_us:
            return
        r = self._last
        # _c belongs to the readings _last: the pair from which the next start re-derives.
        state = {"compliance_us": self._c, "agree": self._agree,
                 "compliance": format_us(self._c), "unsettled": self.unsettled,
                 **r.as_fields()}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename too: a clock that told a peer its time must not come back from a power
        # cut with an older file (Replica.deletion_clock relies on it).
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._persisted_at = self._c
