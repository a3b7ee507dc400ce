"""An S3 bucket's clock, as the Date headers of its responses show it: the compliance clock's
bound from another machine (clock.py, SPEC "Compliance clock").

A Date is whole seconds, stamped some time between our sending a request and our reading the
answer. So the bucket's time *now* is at most that Date + 1 s + the time elapsed since the
request was sent (``upper_us``). That bound is all the compliance clock takes from it: the
clock is never ahead of it. A reading older than FRESH_US is not used (the time since then
would be measured by this host's clocks alone); before a deletion the clock asks for a fresh
one (``refresh``: one HEAD of unit.json, bounded by the client's timeouts, at most once per
RETRY_US when the bucket cannot be reached).

A bucket that cannot be reached bounds nothing: the local sources still decide, as for a
local mirror. What the bucket can always do is stop this host's clocks from running ahead.
"""
import email.utils
import threading
import time

from ..errors import StoreError

US = 1_000_000
FRESH_US = 120 * US
REFRESH_US = 30 * US      # a deletion asks for a newer Date than this
RETRY_US = 60 * US


def _boot_us():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000


class BucketClock:
    def __init__(self, url, endpoint=None):
        self.url, self.endpoint = url, endpoint
        self.name = f"the S3 bucket {url}"
        self._lock = threading.Lock()
        self._date = None        # (Date us, our boot-time clock when the request was sent)
        self._failed_at = None
        self._bucket = None      # for refresh: made once (a client costs tens of ms)

    def sent(self):
        """Call before a request; pass the value to ``note`` with its response."""
        return _boot_us()

    def note(self, headers, sent_boot_us):
        """A response's headers (any response: an error's Date is as good)."""
        text = (headers or {}).get("date")
        if not text:
            return
        try:
            date_us = int(email.utils.parsedate_to_datetime(text).timestamp()) * US
        except (TypeError, ValueError, OverflowError):
            return
        with self._lock:
            if self._date is None or sent_boot_us >= self._date[1]:
                self._date = (date_us, sent_boot_us)

    def upper_us(self, source):
        """The latest the bucket's clock can read now, on ``source``'s time line, or None
        with no fresh reading."""
        with self._lock:
            if self._date is None:
                return None
            date_us, sent = self._date
        since = _boot_us() - sent
        if not 0 <= since <= FRESH_US:
            return None
        server = getattr(source, "server_us", None)
        return (server(date_us) if server else date_us) + US + since

    def refresh(self):
        """Make the reading fresh (one request) unless it is, or the bucket just failed."""
        now = _boot_us()
        with self._lock:
            if self._date is not None and 0 <= now - self._date[1] <= REFRESH_US:
                return
            if self._failed_at is not None and 0 <= now - self._failed_at < RETRY_US:
                return
        from .s3bucket import Bucket
        try:
            if self._bucket is None:
                self._bucket = Bucket(self.url, self.endpoint, clock=self)
            self._bucket.head("unit.json")
        except (StoreError, OSError):
            with self._lock:
                self._failed_at = now
