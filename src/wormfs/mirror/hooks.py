"""mirror/'s side of store/replication.py: what a store needs of replication, installed
when wormfs is imported."""
from ..store import replication
from .scrub import restore_missing_tail
from .shipper import Replicator, read_state
from .target import open_target, server_clock


class MirrorHooks:
    def server_clock(self, unit):
        return server_clock(unit)

    def restore_missing_tail(self, unit_path, unit):
        return restore_missing_tail(unit_path, unit)

    def replicator(self, log, group, unit, unit_path, time_source, server_clock, now_us,
                   event_hash_at):
        return Replicator(log, group,
                          lambda: open_target(unit, unit_path, time_source, server_clock),
                          unit_path, now_us, event_hash_at)

    def saved_state(self, unit_path):
        return read_state(unit_path)


replication.install(MirrorHooks())
