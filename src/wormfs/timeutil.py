"""Dates, durations and times as the store keeps them.

Internally a point in time is an ``int`` of microseconds since 1970-01-01T00:00:00Z ("us").
Durations are calendar durations: "6y" from 2026-02-28 is 2032-02-28, "1m" from 01-31 is the
last day of the next month. Accepted forms (SPEC.md): ``18m`` (months), ``3y``, ``30d``,
``12h``, ``90s`` and ISO 8601 ``P6Y``, ``P18M``, ``PT90S``, ``P1Y2M3DT4H5M6S``, ``P2W``.
"""
import calendar
import functools
import datetime as _dt
import re
from dataclasses import dataclass

from .errors import InvalidValue

US = 1_000_000
DURATION_FORMS = "18m (months), 3y, 30d, 12h, 90s or ISO 8601 P6Y, P18M, PT90S"
DATE_FORMS = "ISO 8601 UTC, e.g. 2032-01-31 or 2032-01-31T17:00:00Z"

_SHORT = re.compile(r"^(\d{1,6})([ymdhs])$", re.ASCII)
_ISO = re.compile(
    r"^P(?!$)(?:(\d{1,6})Y)?(?:(\d{1,6})M)?(?:(\d{1,6})W)?(?:(\d{1,6})D)?"
    r"(?:T(?=\d)(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,12})S)?)?$", re.ASCII
)
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", re.ASCII)
MAX_US = 253402300799 * US  # 9999-12-31T23:59:59Z: beyond it datetime cannot represent


@dataclass(frozen=True)
class Duration:
    months: int = 0
    days: int = 0
    seconds: int = 0
    text: str = ""

    def __str__(self):
        return self.text

    def is_zero(self):
        return self.months == 0 and self.days == 0 and self.seconds == 0

    def after(self, t_us):
        """The point in time this duration after ``t_us`` (calendar arithmetic, UTC)."""
        d = from_us(t_us)
        if self.months:
            y, m = divmod(d.month - 1 + self.months, 12)
            year = d.year + y
            if year > 9999:
                return MAX_US
            day = min(d.day, calendar.monthrange(year, m + 1)[1])
            d = d.replace(year=year, month=m + 1, day=day)
        try:
            d = d + _dt.timedelta(days=self.days, seconds=self.seconds)
        except OverflowError:
            return MAX_US
        return min(to_us(d), MAX_US)


def parse_duration(text):
    """Parse a retention period; raise InvalidValue naming the value and the accepted forms."""
    # Exact: a value with spaces or a NUL around it is not a duration (SPEC).
    if not isinstance(text, str):
        raise InvalidValue(f"bad duration {text!r}: use {DURATION_FORMS}")
    return _parse_duration(text)


@functools.lru_cache(maxsize=256)
def _parse_duration(s):
    # Cached: every seal parses its retention floor's period (a Duration is frozen), and a
    # bad value raises again each time (lru_cache keeps no exceptions).
    m = _SHORT.fullmatch(s)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        dur = {
            "y": Duration(months=12 * n, text=s),
            "m": Duration(months=n, text=s),
            "d": Duration(days=n, text=s),
            "h": Duration(seconds=3600 * n, text=s),
            "s": Duration(seconds=n, text=s),
        }[unit]
    else:
        m = _ISO.fullmatch(s.upper())
        if not m:
            raise InvalidValue(f"bad duration {s!r}: use {DURATION_FORMS}")
        y, mo, w, d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
        dur = Duration(months=12 * y + mo, days=7 * w + d,
                       seconds=3600 * h + 60 * mi + sec, text=s.upper())
    if dur.is_zero():
        raise InvalidValue(f"bad duration {s!r}: a retention period cannot be zero")
    return dur


def parse_date(text):
    """Parse an ISO 8601 date or date-time (UTC unless an offset is given) into us."""
    s = text if isinstance(text, str) else ""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s, re.ASCII):
            d = _dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        elif _DATETIME.fullmatch(s):
            d = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
            if d.tzinfo is None:
                d = d.replace(tzinfo=_dt.timezone.utc)
        else:
            raise ValueError
        return to_us(d)
    except (ValueError, OverflowError):
        raise InvalidValue(f"bad date {text!r}: use {DATE_FORMS}") from None


def to_us(d):
    return calendar.timegm(d.utctimetuple()) * US + d.microsecond


def from_us(t_us):
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=t_us)


_last_second = (None, "")  # (second, its text): events come many to a second


def format_us(t_us):
    """ISO 8601 UTC with a Z; microseconds only when there are any."""
    global _last_second
    sec, us = divmod(t_us, US)
    cached_sec, text = _last_second
    if sec != cached_sec:
        text = from_us(sec * US).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (sec, text)
    return f"{text}.{us:06d}Z" if us else text + "Z"
