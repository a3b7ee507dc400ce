"""How a store reaches its duplicate without importing the layer above it.

store/ owns the units' files and imports nothing above it (tests/unit/test_layers.py);
replication lives in mirror/. The store asks for it through this seam, and mirror/hooks.py
fills it in when the package is imported (wormfs/__init__.py does, so every entry point,
the command line, the mount and a test alike, has it).

A unit whose unit.json names a duplicate is never opened without it: if nothing installed
the hooks, ``hooks()`` refuses with a StoreError instead of letting the store run without
its mirror and without a word.
"""
from typing import Optional, Protocol

from ..errors import StoreError


class ReplicationHooks(Protocol):
    def server_clock(self, unit):
        """The clock outside this host that bounds the compliance clock (an S3
        duplicate's), or None."""

    def restore_missing_tail(self, unit_path, unit):
        """Put back the open segment (and any after the last finished one) from a local
        mirror before the log opens: [(segno, length)] restored."""

    def replicator(self, log, group, unit, unit_path, time_source, server_clock, now_us,
                   event_hash_at):
        """The object that ships the durable log to the duplicate (mirror/shipper.py's
        Replicator)."""

    def saved_state(self, unit_path):
        """The duplicate's last acknowledged state as the primary recorded it (mirror.json),
        as a dict; {} if there is none."""


_hooks: Optional[ReplicationHooks] = None


def install(hooks):
    global _hooks
    _hooks = hooks


def hooks():
    if _hooks is None:
        raise StoreError("this unit has a duplicate, but wormfs's replication (wormfs.mirror) "
                         "is not loaded; refusing to open it without its mirror")
    return _hooks


def has_duplicate(unit):
    return bool(unit.get("peer_path")) and not unit.get("no_mirror")
