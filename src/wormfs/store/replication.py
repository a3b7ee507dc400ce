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


class Replicator(Protocol):
    """What store/ asks of the object ``ReplicationHooks.replicator`` returns (duplicate.py,
    store.py, disposal.py); mirror/shipper.py's Replicator is the one there is."""
    state: str                    # synced, lagging, unreachable, refused, diverged ...
    reason: str
    behind_since: Optional[int]   # us since which it has been behind, or None
    acked: tuple                  # (segno, offset) the duplicate holds durably
    acked_seq: int                # the last event it holds
    connected: bool
    target: object                # the connected unit (read(segno, offset, n)), or None
    has_changes: bool             # changes of state wait for pop_changes

    def connect(self) -> bool:
        """Connect if not connected and due; whether it is connected now."""

    def wait(self, pos):
        """Return once the duplicate holds the log up to ``pos`` durably, or is
        unreachable (its state says so)."""

    def ship_durable(self):
        """Ship what is durable here and not there."""

    def pop_changes(self) -> list:
        """The changes of state since the last call, as dicts for ``mirror`` events."""

    def is_synced(self, seal_seq) -> bool:
        """Whether the duplicate holds event ``seal_seq``."""

    def exclusive(self, fn):
        """Run ``fn(target)`` with shipping held off (disposal)."""

    def peer_clock(self):
        """(now_us, why_unsettled) of the clock by which the connected duplicate judges
        deletions, or None."""

    def holds_event(self, seq) -> bool:
        """Whether the connected duplicate holds event ``seq`` and applied it."""

    def close(self):
        """Disconnect."""


class ReplicationHooks(Protocol):
    def server_clock(self, unit):
        """The clock outside this host that bounds the compliance clock (an S3
        duplicate's), or None."""

    def restore_missing_tail(self, unit_path, unit):
        """Put back the open segment (and any after the last finished one) from a local
        mirror before the log opens: [(segno, length)] restored."""

    def replicator(self, log, group, unit, unit_path, time_source, server_clock, now_us,
                   event_hash_at):
        """The object that ships the durable log to the duplicate: a Replicator."""

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
