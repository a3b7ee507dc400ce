"""Disposal of expired records (SPEC ``wormfs dispose``, R11, R12).

One run, on the primary, in one index transaction under the store's write lock:
1. every record whose retain-until has passed by the compliance clock and that holds no
   legal hold is deleted (a ``delete`` event each, cause ``dispose``), like an ``unlink``
   after expiry;
2. the chunks of the deleted records (these and any deleted earlier and not yet disposed)
   that no other record refers to are chosen: a chunk shared with a retained record stays,
   and so does one that a file being written has streamed or matched (dedup-aware);
3. one ``dispose`` event, the certificate of destruction, names the records (serial, path,
   digest, size), the chunks (id, place, length) and the bytes reclaimed. It is durable and
   on the mirror before anything is destroyed.

What has expired is judged by the earlier of the primary's compliance clock and the
mirror's (Store.peer_deletion_time): the mirror judges each delete again by its own, and one
it refused would leave a record deleted here and kept there for good.

Then each unit destroys those chunk frames in place (SegmentLog.destroy): the bytes become
zeros, punched out of the segment files, and a disposed-chunk frame of the same length keeps
every offset of the log valid, so the two units stay byte-identical and every event (all of
them are kept) still chains. The mirror does it on receiving the dispose event, after its own
rules checked it (mirror/rules.py), and the primary afterwards, only once the mirror holds the
event and has applied it (``Replicator.holds_event``); a ``disposal_done`` event says which
units have. If the mirror lost its connection in between, or a crash came, the primary's part
is finished when the mirror holds the event: at the next open once the mirror is attached, or
by the next dispose run (``finish_pending``; ``finish_last`` on a unit without a mirror). If
the mirror refused the event, nothing is destroyed here: the store is DEGRADED with the
mirror's reason, and the bytes stay where the mirror still keeps the record.
"""
import logging
from collections import defaultdict

from .. import retention
from ..errors import IntegrityError, Refused, StoreError
from ..timeutil import format_us
from .index import U64
from .maintenance import event_at
from .inode import State

log = logging.getLogger("wormfs.dispose")


class Plan:
    def __init__(self, expired, deleted, chunks):
        self.expired = expired    # inode dicts of records to delete now
        self.deleted = deleted    # inode dicts of records deleted earlier, not disposed
        self.chunks = chunks      # [(chunk id, segno, offset, length)] to destroy

    @property
    def records(self):
        return self.expired + self.deleted

    @property
    def bytes(self):
        return sum(c[3] for c in self.chunks)

    def empty(self):
        return not self.records


def plan(ix, txn, now_us, keep=frozenset()):
    """What a dispose run at ``now_us`` would delete and reclaim. ``keep``: chunk ids that
    must stay whatever the index says (files being written)."""
    expired = []
    for _, serial in ix.expiring(txn, now_us + 1):
        rec = ix.inode(txn, ix.serial_ino(txn, serial))
        if rec is not None and rec.sealed and not rec.holds \
                and retention.expired(rec.retention, now_us):
            expired.append(rec)
    deleted = []
    for _, ino in ix.serials(txn):
        rec = ix.inode(txn, ino)
        if rec is not None and rec.state is State.DELETED and not rec.disposed:
            deleted.append(rec)
    dead = {r.serial for r in expired + deleted}
    candidates = {}
    for rec in expired + deleted:
        for _, length, cid in ix.manifest_from(txn, rec.serial, 0):
            if cid not in keep:
                candidates[cid] = length
    if candidates:
        candidates = still_unreferenced(ix, txn, candidates, dead)
    chunks = []
    for cid in sorted(candidates):
        loc = ix.chunk(txn, cid)
        if loc is not None:
            chunks.append((cid,) + tuple(loc))
    return Plan(expired, deleted, chunks)


def still_unreferenced(ix, txn, candidates, dead_serials):
    """The chunk ids of ``candidates`` that no record outside ``dead_serials`` refers to:
    one pass over every manifest entry (the mirror runs the same check on its own index)."""
    left = dict(candidates)
    for key, val in ix.items(txn, "manifests"):
        if U64.unpack(key[:8])[0] in dead_serials:
            continue
        left.pop(bytes(val[:32]), None)
        if not left:
            break
    return left


def certificate(store, p, dry_run, event=None):
    unit = store.unit
    now_deleted = {r.serial for r in p.expired}
    return {
        "dry_run": dry_run,
        "unit": unit["serial"], "mirror": unit.get("peer_serial"),
        "time": format_us(store.now()),
        "records": [{"serial": r.serial, "path": r.path, "blake3": r.blake3,
                     "size": r.size, "retain_until": retention.display(r.retention),
                     "deleted_now": r.serial in now_deleted} for r in p.records],
        "chunks": len(p.chunks), "bytes": p.bytes,
        "chunk_ids": [c[0].hex() for c in p.chunks],
        "event": event,
    }


def run(store, actor, dry_run=False):
    """Dispose (or with ``dry_run`` only report) what has expired; returns the certificate."""
    if dry_run:
        now = store.clock.now()
        if store.unit.get("role") == "primary" and store.mirror is not None:
            peer = store.mirror.peer_clock()
            now = min(now, peer[0]) if peer is not None else now
        with store.ix.read() as txn:
            p = plan(store.ix, txn, now, store.streamed_chunk_ids())
        return certificate(store, p, True)
    if store.unit.get("role") != "primary":
        raise Refused(f"{store.path} is a {store.unit.get('role')} unit: disposal runs on the "
                      f"primary, which disposes on both units")
    with store.disposing:
        return _run(store, actor)


def _run(store, actor):
    store.clock_refusal("dispose", actor)
    peer = None
    if store.mirror is not None:
        store.mirror_poll()
        state, reason, _ = store.mirror_state()
        if state != "synced" or not store.mirror.connected:
            raise StoreError(f"the mirror is {state} ({reason}): disposal changes both units "
                             f"at once, so it waits until the mirror is back (wormfs status)")
        _finish_pending(store, actor)
        peer = store.peer_deletion_time("dispose", actor)
    # Judged once, before the transaction: the duplicate's clock is asked outside the
    # index's write lock, and an earlier time only ever disposes of less.
    now = store.clock.now(strict=True)
    now = now if peer is None else min(now, peer)

    def fn(j):
        p = plan(store.ix, j.txn, now, store.streamed_chunk_ids())
        if p.empty():
            return p, None
        for rec in p.expired:
            j.event("delete", actor, ino=rec.ino, serial=rec.serial,
                    path=j.path_of(rec.ino), blake3=rec.blake3, size=rec.size,
                    cause="dispose")
        ev = j.event(
            "dispose", actor,
            serials=[r.serial for r in p.records],
            records=[{"serial": r.serial, "path": r.path, "blake3": r.blake3,
                      "size": r.size} for r in p.records],
            chunks=[[c[0].hex(), c[1], c[2], c[3]] for c in p.chunks],
            bytes=p.bytes)
        store.disposals += 1   # seals that matched chunks before now check them again
        return p, ev
    p, ev = store.transact(fn, durable=True, essential=True)
    cert = certificate(store, p, False, ev["seq"] if ev else None)
    if ev is not None:
        if _mirror_holds(store, ev["seq"]):
            _destroy_here(store, actor, p, ev, cert)
        else:
            cert["destroyed_on"] = []
            store.dispose_pending = ev["seq"]
            cert["pending"] = (f"the mirror has not acknowledged the dispose event "
                               f"{ev['seq']} (wormfs status says why): the chunks are "
                               f"destroyed on both units once it has, by the next open or "
                               f"'wormfs dispose'")
            log.warning("dispose event %s: %s", ev["seq"], cert["pending"])
    _expire_bucket(store, actor, cert)
    return cert


def _mirror_holds(store, seq):
    """Whether the primary may destroy what dispose event ``seq`` names: it has no mirror,
    or the mirror holds the event and applied it (after one more shipment, in case it
    reconnected meanwhile)."""
    if store.mirror is None:
        return True
    if store.mirror.holds_event(seq):
        return True
    store.duplicate.poll()
    return store.mirror.holds_event(seq)


def finish_pending(store, actor=None):
    """On a primary with a mirror: destroy here what the last dispose event names once the
    mirror holds it (a crash, or a mirror lost between the event and the destruction, left
    it undone). Nothing happens when it was done already. Until the mirror holds it,
    ``store.dispose_pending`` names the event, and the mount's mirror poll tries again."""
    with store.disposing:
        return _finish_pending(store, actor)


def _finish_pending(store, actor):
    with store.ix.read() as txn:
        seq = store.ix.meta(txn, "last_dispose")
    store.dispose_pending = None
    if not seq:
        return 0
    if not store.mirror.holds_event(seq):
        store.dispose_pending = seq
        return 0
    n, ev = _finish(store.log, seq, lambda s: event_at(store.log, store.ix, s))
    if n:
        store.note("disposal_done", actor, dispose_seq=seq, frames=n, bytes=ev.get("bytes"),
                   units=[store.unit["serial"]], finished=True)
    return n


def _on_s3_unit(store, fn):
    """``fn(target)`` on the primary's S3 unit, while nothing ships to it; None if the
    mirror is not an S3 unit or is not connected."""
    if store.mirror is None:
        return None
    return store.mirror.exclusive(lambda t: fn(t) if hasattr(t, "expire") else None)


def _destroy_here(store, actor, p, ev, cert):
    destroyed = destroy(store.log, ev)
    units = [store.unit["serial"]]
    # An S3 unit destroys nothing before its objects' locks end: say where the data still
    # is, and until when (the shipping cache destroyed its copy like any unit).
    kept = _on_s3_unit(store, lambda t: t.objects_holding([(c[1], c[2]) for c in p.chunks],
                                                          ev["seq"]))
    if kept is None and store.mirror is not None and store.mirror.state == "synced":
        units.append(store.unit.get("peer_serial"))
    fields = {"still_held": kept} if kept else {}
    store.note("disposal_done", actor, dispose_seq=ev["seq"], frames=destroyed,
               bytes=p.bytes, units=units, **fields)
    cert["destroyed_on"] = units
    if kept:
        cert["still_held"] = {"unit": store.unit.get("peer_serial"), "objects": kept}


def _expire_bucket(store, actor, cert):
    """On an S3 unit, delete the objects that a segment object or a redacted copy replaced
    once their locks have ended (the bytes of records disposed of earlier go with them),
    and record it: a ``bucket_destroyed`` event names each object and version."""
    # The dispose event, if any, reached the bucket (and its redacted copies were made)
    # before its durable commit returned.
    gone = _on_s3_unit(store, lambda t: t.expire())
    if not gone:
        return
    store.note("bucket_destroyed", actor, unit=store.unit.get("peer_serial"), objects=gone)
    store.mirror.exclusive(lambda t: t.forget(gone))
    cert["bucket_destroyed"] = {"unit": store.unit.get("peer_serial"), "objects": gone}


def destroy(seglog, ev):
    """Destroy the chunk frames a dispose event names, on one unit; returns how many frames
    changed (0 when it was done already)."""
    by_segment = defaultdict(list)
    for cid_hex, segno, offset, length in ev["chunks"]:
        by_segment[segno].append((offset, bytes.fromhex(cid_hex), length))
    return sum(seglog.destroy(segno, frames) for segno, frames in sorted(by_segment.items()))


def finish_last(seglog, ix, read_event):
    """At open: finish destroying what the last dispose event names, if a crash stopped it.
    ``read_event(seq)`` -> event dict."""
    with ix.read() as txn:
        seq = ix.meta(txn, "last_dispose")
    if not seq:
        return 0
    return _finish(seglog, seq, read_event)[0]


def _finish(seglog, seq, read_event):
    """Destroy on this unit what dispose event ``seq`` names, if a crash (or a mirror that
    had not taken it yet) left that undone: (frames changed, the event); (0, None) when it
    cannot be read or destroyed (logged; verify and scrub report it)."""
    try:
        ev = read_event(seq)
        n = destroy(seglog, ev)
    except (IntegrityError, OSError) as e:
        log.error("could not finish the disposal of event %s: %s (verify and scrub report "
                  "it)", seq, e)
        return 0, None
    if n:
        log.warning("finished destroying %d chunk frames of dispose event %s", n, seq)
    return n, ev
