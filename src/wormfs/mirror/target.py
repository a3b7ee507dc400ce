"""The narrow interface between a primary and "a unit I replicate to".

Everything the primary does with its mirror goes through these calls, so a unit elsewhere (a
second host, an S3 Object Lock bucket) only has to provide them. Positions are (segment
number, byte offset) in the shared log; data is always whole frames.

    serial                   the unit's serial
    end()                    (segno, offset) just past the last frame the unit holds
    head()                   (last_seq, last_hash) of the event chain it holds
    alive()                  False once the unit is gone from where it was opened
    receive(segno, off, b)   check and keep whole frames at the unit's end; returns the new
                             end. Raises MirrorRefused (after keeping the frames before an
                             event that does not continue the chain) or PositionMismatch
    finish(segno, size)      the primary finished a segment at this size: finish it too
    kept_refusals()          the events the unit refused but keeps unapplied (they
                             continue the chain, so the events after them still flow)
    deletion_clock()         (now_us, why_unsettled) of the clock by which the unit judges
                             a delete or dispose: the primary's deletions go by the earlier
                             of it and its own clock, so the unit never refuses one
    sync()                   make everything received durable
    read(segno, off, n)      raw bytes of the unit's log (to repair the peer)
    note(type, **fields)     an event in the unit's own chain (local/)
    close()

``open_target`` gives the implementation for where the primary's unit.json says the peer is:
a directory on this host (replica.Replica) or an S3 Object Lock bucket (s3target.S3Target,
peer_path ``s3://BUCKET/PREFIX``). A failure to open is a StoreError or an OSError, which the
shipper reports as "unreachable" and retries.
"""
from .replica import Replica
from .s3bucket import is_s3


def server_clock(unit):
    """The clock outside this host that bounds a primary's compliance clock: its S3
    duplicate's (s3clock.py), or None for a local mirror."""
    if not is_s3(unit.get("peer_path")):
        return None
    from .s3clock import BucketClock
    return BucketClock(unit["peer_path"], unit.get("peer_endpoint"))


def open_target(unit, primary_path, time_source=None, server=None):
    """Open the peer named by a primary's unit.json for replication. ``server``: the
    primary's BucketClock for an S3 peer, which the target's requests keep fresh."""
    path = unit.get("peer_path")
    if not path:
        raise ValueError("the unit has no mirror")
    if is_s3(path):
        from .s3target import open_s3_target
        return open_s3_target(unit, primary_path, time_source, server)
    return Replica(path, serial=unit["peer_serial"], log_uuid=unit.get("log_uuid", unit["uuid"]),
                   time_source=time_source)
