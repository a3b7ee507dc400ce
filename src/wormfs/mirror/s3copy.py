"""An S3 unit read back into a local unit directory, and the bucket's own check.

``fetch`` lays the bucket's objects out as a mirror unit on local disk (the same files a local
mirror has: unit.json, segments/, index/), so that every read-only command (mount, verify,
export, audit, ls, info) and ``mirror promote`` work on a bucket exactly as on a directory.
Each object is checked against its BLAKE3 before it is used. A second fetch into the same
directory downloads only the segments it does not have yet.

``check_bucket`` is the bucket's part of verify and scrub: every object the unit needs is
there, locked in COMPLIANCE mode long enough (the records it holds: their retain-until, a
legal hold where they are held or retained indefinitely), and with ``deep`` its bytes match
their BLAKE3. With ``repair`` a frame of the local copy that differs from the bucket's is put
back from the bucket, so that the usual scrub then repairs the primary from sound bytes.
"""
import json
import os
import shutil

import blake3

from .. import retention
from ..errors import IntegrityError, StoreError
from ..store import frames as F
from ..store.hostfs import atomic_write, fsync_dir, unit_in_use
from ..store.index import Index
from ..store.maintenance import rebuild_index
from ..store.segments import seg_name
from ..store.unit import SUBDIRS, format_doc, log_uuid_bytes
from . import s3bucket
from .s3state import STATE_FILE, S3State

DEFAULT_CACHE = "~/.cache/wormfs/s3"


def read_cache_dir(url):
    """Where read-only commands keep their local copy of an S3 unit (WORMFS_S3_CACHE, else
    ~/.cache/wormfs/s3/BUCKET/PREFIX)."""
    bucket, prefix = s3bucket.parse_url(url)
    base = os.environ.get("WORMFS_S3_CACHE") or os.path.expanduser(DEFAULT_CACHE)
    return os.path.join(base, bucket, prefix)


def inventory(bucket, state):
    """Fill ``state`` (s3state.py) from the bucket: one HEAD per object. Returns
    (finished segment numbers, {segno: [tail offsets]})."""
    segs, tails = [], {}
    for rel, size in bucket.list():
        parts = rel.split("/")
        if parts[0] == "seg" and len(parts) == 2 and parts[1].isdigit():
            segno, off = int(parts[1]), 0
            segs.append(segno)
        elif parts[0] == "tail" and len(parts) == 3 and parts[1].isdigit() and \
                parts[2].isdigit():
            segno, off = int(parts[1]), int(parts[2])
            tails.setdefault(segno, []).append(off)
        elif rel == "unit.json":
            segno, off = 0, 0   # no log position: kept locked with the rest (the sweep)
        else:
            continue
        h = bucket.head(rel)
        state.add(rel, segno, off, size, h["version"], h["b3"] or "", h["retain_until"] or 0,
                  h["legal_hold"])
    for segno in segs:
        state.supersede(segno)
    return sorted(segs), {s: sorted(o) for s, o in tails.items()}


def fetch(bucket, dest, progress=None):
    """Lay the bucket's unit out as a local mirror unit in ``dest`` (created if absent) and
    build its index. Returns the S3State of the bucket's objects (kept in dest)."""
    unit = read_bucket_unit(bucket)
    segdir = os.path.join(dest, "segments")
    if os.path.exists(os.path.join(dest, "unit.json")):
        with open(os.path.join(dest, "unit.json")) as f:
            if json.load(f).get("serial") != unit["serial"]:
                raise StoreError(f"{dest} holds another unit than {bucket.url}")
    else:
        os.makedirs(dest, exist_ok=True)
        for d in SUBDIRS:
            os.makedirs(os.path.join(dest, d), exist_ok=True)
        atomic_write(os.path.join(dest, "FORMAT.md"), format_doc())
        atomic_write(os.path.join(dest, "unit.json"),
                     json.dumps(unit, indent=2).encode() + b"\n")
    statefile = os.path.join(dest, STATE_FILE)
    S3State.remove(statefile)   # rebuilt from the bucket below
    state = S3State(statefile)
    segs, tails = inventory(bucket, state)
    uuid_bytes = log_uuid_bytes(unit)
    total = sum(o.length for o in state.live())
    done = 0
    for segno in segs:
        path = os.path.join(segdir, seg_name(segno))
        o = state.obj(f"seg/{segno:010d}")
        if not (os.path.exists(path) and os.path.getsize(path) == o.length):
            data = _checked_get(bucket, o)
            atomic_write(path, data)
        done += o.length
        if progress:
            progress(done, total)
    last = segs[-1] if segs else 0
    opened = [s for s in tails if s > last]
    for name in os.listdir(segdir):
        if name.endswith(".open"):
            os.unlink(os.path.join(segdir, name))
    if opened:
        segno = min(opened)
        buf = bytearray(F.encode_segment_header(segno, uuid_bytes))
        for off in tails[segno]:
            o = state.obj(f"tail/{segno:010d}/{off:012d}")
            if off != len(buf):
                break  # a gap: nothing after it continues the log
            buf += _checked_get(bucket, o)
            done += o.length
            if progress:
                progress(done, total)
        atomic_write(os.path.join(segdir, seg_name(segno, open_=True)), buf)
        end = [segno, len(buf)]
    else:
        end = [last + 1, F.SEG_HEADER_LEN]
    index = os.path.join(dest, "index")
    shutil.rmtree(index, ignore_errors=True)
    os.makedirs(index)
    rebuild_index(dest)
    ix = Index(index, readonly=True)
    try:
        with ix.read() as txn:
            seq = ix.meta(txn, "last_seq", 0)
            head = [seq, ix.meta(txn, "last_hash")] if seq else [0, None]
    finally:
        ix.close()
    with state.transaction():
        state.put("end", end)
        state.put("head", head)
    fsync_dir(segdir)
    return state


def fetch_for_reading(url, endpoint=None, progress=None):
    """The local copy of an S3 unit for a read-only command, brought up to date unless a
    mount is using it. Returns its directory."""
    from ..progress import Progress
    dest = read_cache_dir(url)
    if os.path.exists(os.path.join(dest, "unit.json")) and unit_in_use(dest):
        return dest   # mounted from this copy: it is what the mount serves
    bar = progress or Progress(f"fetch {url}")
    try:
        state = fetch(s3bucket.Bucket(url, endpoint), dest, bar)
    finally:
        if progress is None:
            bar.done()
    state.close()
    return dest


def read_bucket_unit(bucket):
    try:
        unit = json.loads(bucket.get("unit.json"))
    except FileNotFoundError:
        raise StoreError(f"{bucket.url} holds no wormfs unit (no unit.json)") from None
    except ValueError as e:
        raise StoreError(f"{bucket.url}/unit.json cannot be read: {e}") from None
    if unit.get("kind") != "wormfs-unit":
        raise StoreError(f"{bucket.url}/unit.json does not describe a wormfs unit")
    return unit


def _checked_get(bucket, o):
    data = bucket.get(o.rel, o.version)
    if len(data) != o.length or blake3.blake3(data).hexdigest() != o.b3:
        raise IntegrityError(f"{bucket.url}/{o.rel} (version {o.version}) does not match its "
                             f"BLAKE3: the bucket's copy is damaged")
    return data


# -- the bucket's part of verify and scrub ------------------------------------------------

def record_needs(ix, txn, rec):
    """What a sealed record asks of the objects holding it: (the log places of its chunks
    and its seal event, the retain-until they must reach (0: none), whether they need a legal
    hold: held, retained indefinitely or waiting for its event date)."""
    kind, until = retention.effective(rec["retention"])
    places = set()
    for _, _, cid in ix.manifest_from(txn, rec["serial"], -1):
        loc = ix.chunk(txn, cid)
        if loc is not None:
            places.add((loc[0], loc[1]))
    pos = ix.event_pos(txn, rec.get("seal_seq") or 0)
    if pos is not None:
        places.add(tuple(pos))
    return places, until or 0, bool(rec.get("holds")) or kind != "until"


def required_locks(ix, state):
    """{rel: (retain-until needed, legal hold needed)} for the objects holding each sealed
    record's chunks and seal, from the unit's index."""
    need = {}
    with ix.read() as txn:
        for _, ino in ix.serials(txn):
            rec = ix.inode(txn, ino)
            if rec is None or rec.get("state") != "sealed":
                continue
            places, until, hold = record_needs(ix, txn, rec)
            for segno, off in places:
                o = state.carrier(segno, off)
                key = o.rel if o is not None else f"segment {segno} offset {off}"
                u, h = need.get(key, (0, False))
                need[key] = (max(u, until), h or hold)
    return need


def check_bucket(bucket, state, ix, rep, unit, *, deep=False, log=None, repair=False,
                 on_repair=None):
    """Findings about the bucket go into ``rep`` (scrub.Report) under ``unit``."""
    live = {o.rel: o for o in state.live()}
    listed = dict(bucket.list())
    if "unit.json" not in listed:
        rep.add(unit, "s3", f"{bucket.url}/unit.json is missing")
    for o in live.values():
        if o.rel not in listed:
            rep.add(unit, "s3", f"{bucket.url}/{o.rel} is missing from the bucket",
                    segment=o.segno, offset=o.offset)
            continue
        try:
            h = bucket.head(o.rel, o.version)
        except FileNotFoundError:
            rep.add(unit, "s3", f"{bucket.url}/{o.rel}: version {o.version} is gone",
                    segment=o.segno, offset=o.offset)
            continue
        # Here any retain-until will do: required_locks below says how long each must be.
        problems = s3bucket.lock_problems(h, 0, None)
        if h["size"] != o.length:
            problems.append(f"{h['size']} bytes, not {o.length}")
        if problems:
            rep.add(unit, "s3", f"{bucket.url}/{o.rel}: {'; '.join(problems)}",
                    segment=o.segno, offset=o.offset)
        o.retain_until, o.legal_hold = h["retain_until"] or 0, h["legal_hold"]
        if deep:
            _deep_object(bucket, o, rep, unit, log, repair, on_repair)
    for key, (until, hold) in required_locks(ix, state).items():
        o = live.get(key)
        if o is None:
            rep.add(unit, "s3", f"no object of {bucket.url} holds {key}, which a "
                    f"record needs")
            continue
        if until and o.retain_until < until:
            rep.add(unit, "s3", f"{bucket.url}/{o.rel} is locked until "
                    f"{s3bucket.to_datetime(o.retain_until):%Y-%m-%d}, before a record it "
                    f"holds expires ({s3bucket.to_datetime(until):%Y-%m-%d})",
                    segment=o.segno, offset=o.offset)
        if hold and not o.legal_hold:
            rep.add(unit, "s3", f"{bucket.url}/{o.rel} holds a record that is held or "
                    f"retained indefinitely, but has no legal hold",
                    segment=o.segno, offset=o.offset)


def _deep_object(bucket, o, rep, unit, log, repair, on_repair):
    try:
        data = bucket.get(o.rel, o.version)
    except FileNotFoundError:
        rep.add(unit, "s3", f"{bucket.url}/{o.rel} cannot be read")
        return
    rep.bytes += len(data)
    if blake3.blake3(data).hexdigest() != o.b3:
        rep.add(unit, "s3", f"{bucket.url}/{o.rel} does not match its BLAKE3: the "
                f"bucket's copy is damaged", segment=o.segno, offset=o.offset)
        return
    if log is None or o.segno == 0:
        return
    # The local copy must hold the same frames: put back any that differ.
    base = o.offset
    mv = memoryview(data)
    off = F.SEG_HEADER_LEN if o.offset == 0 else 0
    while off < len(mv):
        try:
            ftype, key, payload, length = F.read_frame(mv, off, len(mv))
        except F.FrameError:
            return  # cannot happen for bytes that match their digest as written
        try:
            mine = log.read(o.segno, base + off, length)
        except OSError:
            mine = b""
        if bytes(mine) != bytes(mv[off:off + length]) and not _disposed_here(mine, ftype, key):
            f = rep.add(unit, "s3", f"segment {o.segno} offset {base + off}: the local "
                        f"copy differs from {bucket.url}/{o.rel}", segment=o.segno,
                        offset=base + off)
            if repair and len(mine) == length:
                log.patch(o.segno, base + off, bytes(mv[off:off + length]))
                f.update(repaired=True, length=length, source=bucket.url)
                if on_repair:
                    on_repair(f)
        off += length


def _disposed_here(mine, ftype, key):
    """A chunk the local copy has destroyed (disposal) that the bucket keeps until its lock
    ends: not damage."""
    if ftype != F.T_CHUNK or len(mine) < F.HEADER_PEEK:
        return False
    try:
        t, k, _, _, _ = F.parse_header(bytes(mine[:F.HEADER_PEEK]))
    except F.FrameError:
        return False
    return t == F.T_DISPOSED and k == key
