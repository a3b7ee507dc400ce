"""Disposal of expired records (SPEC ``wormfs dispose``, R11, R12).

One run, on the primary, in batches of BATCH_RECORDS records, one index transaction under
the store's write lock each (seals wait for one batch at most, whatever the number expiring):
1. records deleted earlier and not disposed yet (the index's ``undisposed``), then records
   whose retain-until has passed by the compliance clock and that hold no legal hold (its
   ``expiry``, earliest first), which are deleted (a ``delete`` event each, cause
   ``dispose``), like an ``unlink`` after expiry;
2. the chunks of the batch's records that no other record that is not disposed lists are
   chosen, from the index's reference counts (``chunkrefs``: the count equals the number of
   the batch's records listing the chunk), not a pass over every manifest: a chunk shared
   with a retained record stays (and one shared with a record of a later batch, until that
   batch), and so does one that a file being written has streamed or matched (dedup-aware);
3. one ``dispose`` event, the certificate of destruction of the batch, names the records
   (serial, path, digest, size), the chunks (id, place, length) and the bytes reclaimed, and
   the run's previous dispose event (``continues``). It is durable and on the mirror before
   anything is destroyed, and the batch is destroyed on both units before the next is
   planned, so at most one dispose event is ever pending.

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
from .maintenance import event_at
from .inode import State

log = logging.getLogger("wormfs.dispose")


BATCH_RECORDS = 500     # records per dispose event: one batch's write transaction is short
BATCH_CHUNKS = 5000     # and its event bounded (a record larger than this is one batch)
LISTED = 1000           # records and chunk ids a certificate lists; the events list them all


class Position:
    """Where the next batch of a run starts: the last undisposed serial and the last expiry
    key (until, serial) already judged. Records skipped (held, not yet expired) are not
    judged again in the same run; ones that change meanwhile wait for the next run."""
    __slots__ = ("undisposed", "expiry", "done")

    def __init__(self):
        self.undisposed, self.expiry, self.done = 0, None, False


class Plan:
    def __init__(self, expired, deleted, chunks, position):
        self.expired = expired    # Inodes of records to delete now
        self.deleted = deleted    # Inodes of records deleted earlier, not disposed
        self.chunks = chunks      # [(chunk id, segno, offset, length)] to destroy
        self.position = position  # where the next batch starts

    @property
    def records(self):
        return self.expired + self.deleted

    @property
    def bytes(self):
        return sum(c[3] for c in self.chunks)

    def empty(self):
        return not self.records


def plan(ix, txn, now_us, keep=frozenset(), position=None, carried=None):
    """One batch of what a dispose run at ``now_us`` deletes and reclaims: up to
    BATCH_RECORDS records (deleted earlier and not disposed first, then expired ones without holds) and
    the chunks of theirs that no other record that is not disposed lists (``chunkrefs``),
    nor a file being written (``keep``). Reads only what the batch names: its records'
    manifests and their chunks' counts.

    ``carried`` (a dry run, which changes nothing between batches): {chunk id: how many
    records of earlier batches list it}; those records count as disposed, as they would be
    by then, and the dict keeps the chunks still shared after this batch."""
    ix.need_layout(txn, "disposal")
    limit, chunk_limit = BATCH_RECORDS, BATCH_CHUNKS   # read here: a test may lower them
    old = position or Position()
    pos = Position()
    pos.undisposed, pos.expiry = old.undisposed, old.expiry
    dead, deleted, expired, scanned = {}, [], [], [0]

    def full():
        # Records judged and skipped (held, or not expired by their own rule) count too, so
        # that a batch's transaction stays short when most of what the expiry index offers
        # is held: such a batch may be empty without the run being over.
        scanned[0] += 1
        return (len(deleted) + len(expired) >= limit or len(dead) >= chunk_limit
                or scanned[0] > 4 * limit)

    for serial in ix.undisposed(txn, after=old.undisposed):
        if full():
            break
        pos.undisposed = serial
        rec = ix.inode(txn, ix.serial_ino(txn, serial))
        if rec is not None and rec.state is State.DELETED and not rec.disposed:
            deleted.append(rec)
            _count_listings(ix, txn, rec.serial, dead)
    else:
        for key in ix.expiring(txn, now_us + 1, after=old.expiry):
            if full():
                break
            pos.expiry = key
            rec = ix.inode(txn, ix.serial_ino(txn, key[1]))
            if rec is not None and rec.sealed and not rec.holds \
                    and retention.expired(rec.retention, now_us):
                expired.append(rec)
                _count_listings(ix, txn, rec.serial, dead)
        else:
            pos.done = True
    chunks = []
    for cid in sorted(dead):
        if cid in keep:
            continue
        n = dead[cid] + (carried.pop(cid, 0) if carried is not None else 0)
        if n < ix.chunk_refs(txn, cid):
            if carried is not None:
                carried[cid] = n
            continue
        loc = ix.chunk(txn, cid)
        if loc is not None:
            chunks.append((cid,) + tuple(loc))
    return Plan(expired, deleted, chunks, pos)


def _count_listings(ix, txn, serial, counts):
    """Add record ``serial`` to ``counts`` {chunk id: how many of the records counted list
    it}: the number ``chunkrefs`` must not exceed for a chunk only those records use."""
    for cid in ix.manifest_ids(txn, serial):
        counts[cid] = counts.get(cid, 0) + 1


def unreferenced_but_by(ix, txn, chunk_ids, serials):
    """Of ``chunk_ids``, those that no record that is not disposed lists, other than the
    records ``serials`` (the mirror's check of a dispose event, on its own index)."""
    ix.need_layout(txn, "a dispose event's check")
    dead = {}
    for serial in serials:
        _count_listings(ix, txn, serial, dead)
    return {cid for cid in chunk_ids if ix.chunk_refs(txn, cid) <= dead.get(cid, 0)}


class Certificate:
    """What a run did, for the caller: every batch's counts, the first LISTED records and
    chunk ids (the audit trail's dispose events name every one)."""

    def __init__(self, store, dry_run):
        unit = store.unit
        self.d = {"dry_run": dry_run, "unit": unit["serial"], "mirror": unit.get("peer_serial"),
                  "time": format_us(store.now()), "records": [], "unlisted_records": 0,
                  "chunks": 0, "bytes": 0, "chunk_ids": [], "unlisted_chunks": 0,
                  "event": None, "events": []}

    def add(self, p, ev=None):
        d, now_deleted = self.d, {r.serial for r in p.expired}
        for r in p.records:
            if len(d["records"]) < LISTED:
                d["records"].append({
                    "serial": r.serial, "path": r.path, "blake3": r.blake3, "size": r.size,
                    "retain_until": retention.display(r.retention),
                    "deleted_now": r.serial in now_deleted})
            else:
                d["unlisted_records"] += 1
        for c in p.chunks:
            if len(d["chunk_ids"]) < LISTED:
                d["chunk_ids"].append(c[0].hex())
            else:
                d["unlisted_chunks"] += 1
        d["chunks"] += len(p.chunks)
        d["bytes"] += p.bytes
        if ev is not None:
            d["event"] = ev["seq"]
            d["events"].append(ev["seq"])


def _dry_run(store):
    now = store.clock.now()
    if store.unit.get("role") == "primary" and store.mirror is not None:
        peer = store.mirror.peer_clock()
        now = min(now, peer[0]) if peer is not None else now
    cert, pos, carried = Certificate(store, True), None, {}
    keep = store.streamed_chunk_ids()
    with store.ix.read() as txn:
        while pos is None or not pos.done:
            p = plan(store.ix, txn, now, keep, pos, carried)
            cert.add(p)
            pos = p.position
    return cert.d


def run(store, actor, dry_run=False):
    """Dispose (or with ``dry_run`` only report) what has expired; returns the certificate."""
    if dry_run:
        return _dry_run(store)
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
    # Judged once, before the first transaction: the duplicate's clock is asked outside the
    # index's write lock, and an earlier time only ever disposes of less.
    now = store.clock.now(strict=True)
    now = now if peer is None else min(now, peer)
    cert = Certificate(store, False)
    # An S3 unit makes its redacted copies once at the end, not once per batch.
    _on_s3_unit(store, lambda t: t.hold_redaction())
    try:
        units = _batches(store, actor, now, cert)
    finally:
        _release_redaction(store)
    held = cert.d.get("still_held")
    if held:
        # Each batch listed the objects as they were then; the run's later batches
        # lengthened some of them (they stayed live until the copies made at its end).
        now_held = _on_s3_unit(store, lambda t: t.locks_now(held["objects"]))
        if now_held is not None:
            held["objects"] = now_held
    if cert.d["event"] is not None:
        cert.d["destroyed_on"] = units or []
    _expire_bucket(store, actor, cert.d)
    return cert.d


def _release_redaction(store):
    try:
        _on_s3_unit(store, lambda t: t.release_redaction())
    except (StoreError, OSError) as e:
        # Kept in the S3 unit's state: made at its next batch or open.
        log.warning("the S3 unit's redacted copies wait for its next batch: %s", e)


def _batches(store, actor, now, cert):
    """Dispose batch after batch; returns the units every batch was destroyed on."""
    pos, units = None, None
    while pos is None or not pos.done:
        # One batch per write transaction, so seals wait for one batch at most; each
        # batch is destroyed on both units before the next is planned, so at most one
        # dispose event is ever pending (finish_pending).
        p, ev = store.transact(lambda j: _batch(store, j, actor, now, pos, cert),
                               durable=True, essential=True)
        pos = p.position
        if ev is None:
            continue
        cert.add(p, ev)
        if not _mirror_holds(store, ev["seq"]):
            units = []
            store.dispose_pending = ev["seq"]
            cert.d["pending"] = (
                f"the mirror has not acknowledged the dispose event {ev['seq']} (wormfs "
                f"status says why): its chunks are destroyed on both units once it has, by "
                f"the next open or 'wormfs dispose', which then disposes of the rest")
            log.warning("dispose event %s: %s", ev["seq"], cert.d["pending"])
            break
        done = _destroy_here(store, actor, p, ev, cert.d)
        units = done if units is None else [u for u in units if u in done]
    return units


def _batch(store, j, actor, now, pos, cert):
    p = plan(store.ix, j.txn, now, store.streamed_chunk_ids(), pos)
    if p.empty():
        return p, None
    for rec in p.expired:
        j.event("delete", actor, ino=rec.ino, serial=rec.serial,
                path=j.path_of(rec.ino), blake3=rec.blake3, size=rec.size, cause="dispose")
    fields = {"continues": cert.d["event"]} if cert.d["event"] is not None else {}
    ev = j.event(
        "dispose", actor,
        serials=[r.serial for r in p.records],
        records=[{"serial": r.serial, "path": r.path, "blake3": r.blake3,
                  "size": r.size} for r in p.records],
        chunks=[[c[0].hex(), c[1], c[2], c[3]] for c in p.chunks],
        bytes=p.bytes, **fields)
    store.disposals += 1   # seals that matched chunks before now check them again
    return p, ev


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
    """Destroy one batch here (and say where it is destroyed); returns those units."""
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
    if kept:
        held = cert.setdefault("still_held", {"unit": store.unit.get("peer_serial"),
                                              "objects": []})
        listed = {o["rel"] for o in held["objects"]}   # a run's batches share segments
        held["objects"].extend(o for o in kept if o["rel"] not in listed)
    return units


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
