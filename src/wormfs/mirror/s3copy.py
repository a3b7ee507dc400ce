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
import sys

import blake3

from .. import retention
from ..errors import IntegrityError, StoreError
from ..store import events as E
from ..store import frames as F
from ..store.hostfs import atomic_write, fsync_dir, unit_in_use
from ..store.index import Index
from ..store import heads
from ..store.maintenance import rebuild_index
from ..store.segments import SegmentLog, seg_name
from ..store.unit import SUBDIRS, format_doc, log_uuid_bytes
from . import s3bucket
from .s3state import STATE_FILE, S3State
from .s3survey import survey

DEFAULT_CACHE = "~/.cache/wormfs/s3"


def read_cache_dir(url):
    """Where read-only commands keep their local copy of an S3 unit (WORMFS_S3_CACHE, else
    ~/.cache/wormfs/s3/BUCKET/PREFIX)."""
    bucket, prefix = s3bucket.parse_url(url)
    base = os.environ.get("WORMFS_S3_CACHE") or os.path.expanduser(DEFAULT_CACHE)
    return os.path.join(base, bucket, prefix)


def inventory(bucket, state, sv):
    """Fill ``state`` (s3state.py) from the first version of each key of the survey ``sv``:
    one HEAD per object (its lock and BLAKE3)."""
    for e in sv.entries.values():
        h = bucket.head(e.rel, e.first.version)
        state.add(e.rel, e.segno, e.offset, e.size, e.first.version, h["b3"] or "",
                  h["retain_until"] or 0, h["legal_hold"])


class SegPlan:
    """What the bucket holds of one segment: its ``seg`` Entry (or None), its redacted
    copies (``dsegs``, by dispose seq) and its tails (by offset)."""
    __slots__ = ("segno", "seg", "dsegs", "tails")

    def __init__(self, segno, seg, dsegs, tails):
        self.segno, self.seg, self.dsegs, self.tails = segno, seg, dsegs, tails

    def entries(self):
        return ([self.seg] if self.seg else []) + self.dsegs + self.tails

    def ident(self):
        """Which versions of which keys the bucket holds of this segment."""
        return sorted(f"{e.rel}@{e.first.version}" for e in self.entries())


def plan_log(sv):
    """The segments of the survey, from segment 1 on: [SegPlan]. A segment after a missing
    one is a finding in ``sv`` and left out."""
    segs, dsegs, tails = sv.segs(), sv.dsegs(), sv.tails()
    numbers = sorted(set(segs) | set(dsegs) | set(tails))
    plan = []
    for segno in numbers:
        if segno != len(plan) + 1:
            for n in numbers[numbers.index(segno):]:
                for e in ([segs[n]] if n in segs else []) + dsegs.get(n, []) + \
                        tails.get(n, []):
                    sv.find(e.rel, f"segment {n} does not follow the log, which ends at "
                            f"segment {len(plan)}: left out")
            break
        plan.append(SegPlan(segno, segs.get(segno), dsegs.get(segno, []),
                            tails.get(segno, [])))
    return plan


class _Candidate:
    """One way to read a segment from its start: a whole object (seg/S, dseg/S/Q) or the
    header followed by the tails that continue one another from offset 48."""
    __slots__ = ("entries", "data", "rank")

    def __init__(self, entries, data, rank):
        self.entries, self.data, self.rank = entries, data, rank

    @property
    def name(self):
        e = self.entries[0]
        return e.rel if e.kind != "tail" else f"tail/{e.segno:010d}/*"

    def written_at(self, off):
        """When the object holding offset ``off`` was first written."""
        for e in self.entries:
            if e.kind != "tail" or e.offset <= off < e.end:
                return e.first.modified_us
        return self.entries[-1].first.modified_us


def disagreement(a, b):
    """Where two readings of one segment's start differ other than by what a disposal
    destroyed (a chunk frame in one, the disposed frame of the same chunk and length in the
    other, §2): the offset, or None if they agree over the bytes both hold."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return None
    if a[:F.SEG_HEADER_LEN] != b[:F.SEG_HEADER_LEN]:
        return 0
    return frames_disagree(a, b, F.SEG_HEADER_LEN, n)


def frames_disagree(a, b, off, n):
    """As ``disagreement``, for the frames of ``a`` and ``b`` from ``off`` (a frame's start
    in both) to ``n``."""
    while off < n:
        try:
            ta, ka, pa, _, ha = F.parse_header(a[off:off + F.HEADER_PEEK])
        except F.FrameError:
            return None if a[off:n] == b[off:n] else off
        length = ha + pa
        if off + length > n:
            return None if a[off:n] == b[off:n] else off
        if a[off:off + length] != b[off:off + length]:
            try:
                tb, kb, pb, _, hb = F.parse_header(b[off:off + F.HEADER_PEEK])
            except F.FrameError:
                return off
            if {ta, tb} != {F.T_CHUNK, F.T_DISPOSED} or ka != kb or hb + pb != length:
                return off
        off += length
    return None


def _segment_bytes(bucket, state, sv, sp, uuid_bytes, exclude):
    """Read segment ``sp`` as the bucket's truth has it. Every object of it that can be read
    from its start is a candidate; they must agree but for what a disposal destroyed. The
    newest redacted copy is read first, then the segment object, then the tails (so no
    disposed chunk is read in plaintext where a copy without it exists). Two that disagree
    otherwise: the one written first is the truth (a forger can only add, later), the other
    a finding, ignored. The tails past the chosen one's end continue it. Returns (bytes, the
    Entries that carry them, the Entries ignored)."""
    def usable(e):   # not excluded, nor dropped as ignored by an earlier pass
        return e.rel not in exclude and state.obj(e.rel) is not None
    tails = {t.offset: t for t in sp.tails if usable(t)}
    header = F.encode_segment_header(sp.segno, uuid_bytes)
    cands = []
    for e in sorted(sp.dsegs, key=lambda e: -e.seq):
        if usable(e):
            cands.append(_Candidate([e], _checked_get(bucket, state.obj(e.rel)), 0))
    if sp.seg is not None and usable(sp.seg):
        cands.append(_Candidate([sp.seg], _checked_get(bucket, state.obj(sp.seg.rel)), 1))
    chain, pos, buf = [], F.SEG_HEADER_LEN, bytearray(header)
    while pos in tails:
        chain.append(tails[pos])
        buf += _checked_get(bucket, state.obj(tails[pos].rel))
        pos = tails[pos].end
    if chain:
        cands.append(_Candidate(chain, bytes(buf), 2))
    ignored = []
    # A redacted copy of the open segment is a prefix: one shorter than the segment object
    # was superseded by it and is not a reading of the whole (nor a finding).
    whole = [c for c in cands if c.rank == 1]
    if whole:
        cands = [c for c in cands if c.rank != 0 or len(c.data) >= len(whole[0].data)]
    # A redacted copy ends where the bucket's log ended when it was made: where a tail ends
    # or the next one starts, or where the segment object ends. One that ends elsewhere
    # (frames appended past them) is not one.
    ends = {t.end for t in tails.values()} | {t.offset for t in tails.values()} | \
        {len(c.data) for c in whole}
    for c in cands:
        if c.rank == 0 and ends and len(c.data) not in ends:
            sv.find(c.name, f"ends at offset {len(c.data)}, where neither a tail nor the "
                    f"segment object of segment {sp.segno} ends: ignored")
            ignored.append(c)
    cands = [c for c in cands if c not in ignored]
    for c in cands:
        if c.data[:F.SEG_HEADER_LEN] != header[:len(c.data)]:
            sv.find(c.name, f"does not start with segment {sp.segno}'s header: ignored")
            ignored.append(c)
    cands = [c for c in cands if c not in ignored]
    while True:
        chosen = None
        for c in cands:
            clash = None
            for o in cands:
                if o is not c:
                    at = disagreement(c.data, o.data)
                    if at is not None:
                        clash = (o, at)
                        break
            if clash is None:
                chosen = c
                break
            o, at = clash
            # The one written first is the truth; at a tie the tails, then the segment
            # object (the older kinds).
            older, newer = sorted((c, o), key=lambda x: (x.written_at(at), -x.rank))
            what = ("tails" if newer.rank == 2 else "object")
            sv.find(newer.name, f"segment {sp.segno} offset {at}: this {what} disagrees with "
                    f"{older.name}, written before it, other than by a disposal: ignored; "
                    f"{older.name} is read")
            ignored.append(newer)
            cands.remove(newer)
            break
        if chosen is not None or not cands:
            break
    if chosen is None:
        return None, [], [e for c in ignored for e in c.entries]
    data, carriers = bytearray(chosen.data), list(chosen.entries)
    pos = len(data)
    for c in ignored:
        for e in c.entries:
            if tails.get(e.offset) is e:
                del tails[e.offset]
    # Nothing continues a finished segment (one whose segment object exists).
    while sp.seg is None and pos in tails and tails[pos] not in carriers:
        t = tails[pos]
        data += _checked_get(bucket, state.obj(t.rel))
        carriers.append(t)
        pos = t.end
    used = {e.rel for c in cands for e in c.entries} | {e.rel for e in carriers}
    for t in sp.tails:
        if t.rel in used or not usable(t):
            continue
        if t.end <= len(data):
            # Inside what was read (its neighbours were deleted once their locks ended):
            # superseded if it agrees with it, else a finding.
            mine = _checked_get(bucket, state.obj(t.rel))
            at = frames_disagree(bytes(data[t.offset:t.end]), mine, 0, len(mine))
            if at is None:
                continue
            sv.find(t.rel, f"segment {sp.segno} offset {t.offset + at}: this tail disagrees "
                    f"with {chosen.name} other than by a disposal: ignored")
        else:
            sv.find(t.rel, f"does not continue segment {sp.segno} at offset {pos}: left out")
        ignored.append(_Candidate([t], b"", 2))
    return bytes(data), carriers, [e for c in ignored for e in c.entries]


CHECKED_FILE = "s3checked.json"   # {segno: {objects, chosen, size}} read and compared once


def _write_segments(bucket, state, sv, plan, dest, uuid_bytes, progress, head_end,
                    exclude=frozenset(), only=None):
    """Assemble the segments of ``plan`` (those in ``only``, if given) into dest/segments.
    Returns ({segno: [rel of its carriers]}, {segno: the log's end if it ends there})."""
    segdir = os.path.join(dest, "segments")
    checked = _read_json(os.path.join(dest, CHECKED_FILE), {})
    total = sum(e.size for sp in plan for e in sp.entries())
    done, chosen, ends = 0, {}, {}
    for i, sp in enumerate(plan):
        segno, last = sp.segno, i == len(plan) - 1
        if only is not None and segno not in only:
            continue
        path = os.path.join(segdir, seg_name(segno))
        if only is None:
            seen = checked.get(str(segno))
        else:   # a second pass reads its segments again, whatever was recorded
            checked.pop(str(segno), None)
            seen = None
        if isinstance(seen, dict) and seen.get("objects") == sp.ident() and \
                os.path.exists(path) and os.path.getsize(path) == seen.get("size"):
            # Read and compared before, and the bucket holds the same objects of it.
            done += sum(e.size for e in sp.entries())
            chosen[segno] = seen.get("carriers") or []
            _mark(state, sp, chosen[segno])
            ends[segno] = [segno + 1, F.SEG_HEADER_LEN]
            continue
        data, carriers, ignored = _segment_bytes(bucket, state, sv, sp, uuid_bytes, exclude)
        done += sum(e.size for e in sp.entries())
        if progress:
            progress(done, total)
        for e in ignored:
            state.drop(e.rel)   # never a carrier of the log (repairs read carriers)
        if data is None:
            sv.find(f"seg/{segno:010d}", f"no object of segment {segno} can be read from "
                    f"its start: the log read ends before it")
            break
        chosen[segno] = [e.rel for e in carriers]
        _mark(state, sp, chosen[segno])
        # Finished: a later segment exists, or its segment object does, or the newest head
        # object says the log went on (a finished segment whose objects were replaced by a
        # redacted copy, with nothing written after it yet).
        finished = not last or carriers[0].kind == "seg" or sp.seg is not None or \
            (carriers[0].kind == "dseg" and len(carriers) == 1 and head_end and
             tuple(head_end) >= (segno + 1, F.SEG_HEADER_LEN))
        for name in (seg_name(segno), seg_name(segno, open_=True)):
            if os.path.exists(os.path.join(segdir, name)):
                os.unlink(os.path.join(segdir, name))   # read again: replaced below
        if finished:
            atomic_write(path, data)
            ends[segno] = [segno + 1, F.SEG_HEADER_LEN]
            if len(carriers) == 1:
                checked[str(segno)] = {"objects": sp.ident(), "size": len(data),
                                       "carriers": chosen[segno]}
        else:
            atomic_write(os.path.join(segdir, seg_name(segno, open_=True)), data)
            ends[segno] = [segno, len(data)]
    atomic_write(os.path.join(dest, CHECKED_FILE), json.dumps(checked).encode())
    return chosen, ends


def _mark(state, sp, carriers):
    """The carriers of a segment are its live objects; the rest of it is superseded."""
    keep = set(carriers)
    for e in sp.entries():
        if e.rel not in keep and state.obj(e.rel) is not None:
            state.mark_superseded(e.rel)


def fetch(bucket, dest, progress=None):
    """Lay the bucket's unit out as a local mirror unit in ``dest`` (created if absent) and
    build its index, from the first version of each object (s3survey.py). Returns
    (S3State of the bucket's objects, kept in dest; the findings, one line each: what the
    bucket holds besides the unit's truth, which was not read)."""
    sv = survey(bucket)
    unit = read_bucket_unit(bucket, sv)
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
    inventory(bucket, state, sv)
    plan = plan_log(sv)
    uuid_bytes = log_uuid_bytes(unit)
    for name in os.listdir(segdir):
        if name.endswith(".open"):
            os.unlink(os.path.join(segdir, name))
    head_end = _newest_head(bucket, sv).get("end")
    chosen, ends = _write_segments(bucket, state, sv, plan, dest, uuid_bytes, progress,
                                   head_end)
    _rebuild(dest)
    # A redacted copy may destroy only what a dispose event of the log names: one that
    # destroys more is forged (it would hide a record's bytes) and the segment is read again
    # without it.
    disposals, unnamed = _disposals(dest, unit)
    forged = {}
    for segno, off in unnamed:
        for rel in chosen.get(segno, []):
            if rel.startswith("dseg/"):
                forged.setdefault(rel, (segno, off))
    if forged:
        for rel, (segno, off) in sorted(forged.items()):
            sv.find(rel, f"destroys the frame at segment {segno} offset {off}, which no "
                    f"dispose event names: ignored (forged)")
            state.drop(rel)
        only = {segno for segno, _ in forged.values()}
        _, again = _write_segments(bucket, state, sv, plan, dest, uuid_bytes, None, head_end,
                                   exclude=set(forged), only=only)
        ends.update(again)
        _rebuild(dest)
    end = ends[max(ends)] if ends else [1, F.SEG_HEADER_LEN]
    _destroy_disposed(dest, unit, disposals)
    ix = Index(os.path.join(dest, "index"), readonly=True)
    try:
        with ix.read() as txn:
            seq = ix.meta(txn, "last_seq", 0)
            head = [seq, ix.meta(txn, "last_hash")] if seq else [0, None]
        log = SegmentLog(segdir, uuid_bytes, unit["segment_size"], readonly=True)
        try:
            for text in head_problems(bucket, sv, log, ix):
                sv.find("head/", text)
        finally:
            log.close()
    finally:
        ix.close()
    with state.transaction():
        state.put("end", end)
        state.put("head", head)
    fsync_dir(segdir)
    findings = [text for _, text in sv.findings]
    atomic_write(os.path.join(dest, FINDINGS_FILE), json.dumps(findings, indent=1).encode())
    return state, findings


def _newest_head(bucket, sv):
    """The newest head object's content ({} if none or unreadable)."""
    e = sv.last_head()
    if e is None:
        return {}
    try:
        h = json.loads(bucket.get(e.rel, e.first.version))
        return h if isinstance(h, dict) else {}
    except (ValueError, FileNotFoundError):
        return {}


def _rebuild(dest):
    index = os.path.join(dest, "index")
    shutil.rmtree(index, ignore_errors=True)
    os.makedirs(index)
    rebuild_index(dest)


def _disposals(dest, unit):
    """One pass over dest's log: its dispose events, and the (segno, offset) of every
    disposed frame that none of them names. A second reading of a segment changes only
    chunk frames, so the events stay what they are."""
    log = SegmentLog(os.path.join(dest, "segments"), log_uuid_bytes(unit),
                     unit["segment_size"], readonly=True)
    try:
        events, named, seen = [], set(), []
        for fr in log.scan():
            if fr.ftype == F.T_EVENT:
                ev = E.decode(fr.payload)
                if ev.get("type") == "dispose" and ev.get("chunks"):
                    events.append(ev)
                    named.update((c[1], c[2]) for c in ev["chunks"])
            elif fr.ftype == F.T_DISPOSED:
                seen.append((fr.segno, fr.offset))
        return events, [p for p in seen if p not in named]
    finally:
        log.close()


FINDINGS_FILE = "s3findings.json"   # what the last fetch found besides the truth


def read_findings(dest):
    return _read_json(os.path.join(dest, FINDINGS_FILE), [])


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _destroy_disposed(dest, unit, disposals):
    """The bucket keeps a disposed chunk until its object's lock ends; the local copy
    destroys it as every unit does (disposal.py), so it holds no plaintext of a record that
    was disposed. ``disposals``: the log's dispose events (``_disposals``)."""
    from ..store import disposal
    log = SegmentLog(os.path.join(dest, "segments"), log_uuid_bytes(unit),
                     unit["segment_size"])
    try:
        for ev in disposals:
            disposal.destroy(log, ev)
        log.sync()
    finally:
        log.close()


def head_problems(bucket, sv, log, ix):
    """The newest head object (the chain head the unit once held) against the log that was
    read: a log that ends before it, or holds another event there, lost or changed events."""
    e = sv.last_head()
    if e is None:
        return []
    try:
        h = json.loads(bucket.get(e.rel, e.first.version))
        seq, want = int(h["event_seq"]), h["event_hash"]
    except (ValueError, KeyError, TypeError) as err:
        return [f"{bucket.url}/{e.rel} cannot be read as a head: {err}"]
    c = heads.contradiction(log, ix, seq, want)
    if c is None:
        return []
    kind, what, have = c
    if kind == "short":
        return [f"{bucket.url}/{e.rel} says the unit held event {seq} on {h.get('time')}, "
                f"but the log read from the bucket ends at event {have}: events {what} "
                f"are missing"]
    if kind == "unreadable":
        return [f"event {seq}, which {bucket.url}/{e.rel} names, cannot be read: {what}"]
    return [f"event {seq} of the log read from the bucket is not the one "
            f"{bucket.url}/{e.rel} names (its hash differs)"]


def bucket_for(url, endpoint=None):
    """The Bucket of an S3 unit for a command: at ``endpoint``, or AWS_ENDPOINT_URL, if the
    command names one; else where the local copy of the unit says it lives (unit.json's
    s3_endpoint); else the AWS configuration's (~/.aws/config, AWS's own). Without an
    endpoint named, ``read_bucket_unit`` refuses a unit that says it lives elsewhere than
    where it was reached: a bucket of the same name elsewhere is not the unit."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    explicit = endpoint is not None
    if endpoint is None:
        endpoint = _read_json(os.path.join(read_cache_dir(url), "unit.json"), {}) \
            .get("s3_endpoint") or None
    b = s3bucket.Bucket(url, endpoint)
    b.explicit_endpoint = explicit
    return b


def _check_endpoint(bucket, unit):
    want = (unit.get("s3_endpoint") or "").rstrip("/")
    got = (bucket.s3.meta.endpoint_url or "").rstrip("/")
    if want and got != want and not getattr(bucket, "explicit_endpoint", False):
        raise StoreError(f"{bucket.url} was reached at {got}, but the unit there says it "
                         f"lives at {want}: a bucket of the same name elsewhere is not "
                         f"trusted (set AWS_ENDPOINT_URL={want} to read it there)")


def fetch_for_reading(url, endpoint=None, progress=None):
    """The local copy of an S3 unit for a read-only command, brought up to date unless a
    mount is using it. Returns its directory."""
    from ..progress import Progress
    dest = read_cache_dir(url)
    if os.path.exists(os.path.join(dest, "unit.json")) and unit_in_use(dest):
        return dest   # mounted from this copy: it is what the mount serves
    bar = progress or Progress(f"fetch {url}")
    try:
        state, findings = fetch(bucket_for(url, endpoint), dest, bar)
    finally:
        if progress is None:
            bar.done()
    state.close()
    for text in findings:
        print(f"warning: {text}", file=sys.stderr)
    return dest


def read_bucket_unit(bucket, sv):
    e = sv.get("unit.json")
    if e is None:
        raise StoreError(f"{bucket.url} holds no wormfs unit (no unit.json)")
    try:
        unit = json.loads(bucket.get("unit.json", e.first.version))
    except FileNotFoundError:
        raise StoreError(f"{bucket.url} holds no wormfs unit (no unit.json)") from None
    except ValueError as e:
        raise StoreError(f"{bucket.url}/unit.json cannot be read: {e}") from None
    if unit.get("kind") != "wormfs-unit":
        raise StoreError(f"{bucket.url}/unit.json does not describe a wormfs unit")
    _check_endpoint(bucket, unit)
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
    kind, until = retention.effective(rec.retention)
    places = set()
    for _, _, cid in ix.manifest_from(txn, rec.serial, -1):
        loc = ix.chunk(txn, cid)
        if loc is not None:
            places.add((loc[0], loc[1]))
    pos = ix.event_pos(txn, rec.seal_seq or 0)
    if pos is not None:
        places.add(tuple(pos))
    return places, until or 0, bool(rec.holds) or kind != "until"


def required_locks(ix, state):
    """{rel: (retain-until needed, legal hold needed)} for the objects holding each sealed
    record's chunks and seal, from the unit's index."""
    need = {}
    with ix.read() as txn:
        for _, ino in ix.serials(txn):
            rec = ix.inode(txn, ino)
            if rec is None or not rec.sealed:
                continue
            places, until, hold = record_needs(ix, txn, rec)
            for segno, off in places:
                o = state.carrier(segno, off)
                key = o.rel if o is not None else f"segment {segno} offset {off}"
                u, h = need.get(key, (0, False))
                need[key] = (max(u, until), h or hold)
    return need


def check_bucket(bucket, state, ix, rep, unit, *, deep=False, log=None, repair=False,
                 on_repair=None, copy=None):
    """Findings about the bucket go into ``rep`` (scrub.Report) under ``unit``.

    On a primary (``copy`` None) ``state`` is what this primary wrote and verified: the
    bucket's first version of each key must be that one, and nothing else may be there. For
    a bucket read alone, ``copy`` is the local copy that ``fetch`` assembled, whose findings
    (what it found besides the truth and did not read) are reported."""
    for text in bucket.config_problems():
        rep.add(unit, "s3", f"{bucket.url}: {text}")
    if copy is None:
        sv = survey(bucket)
        for _, text in sv.findings:
            rep.add(unit, "s3", text)
        _check_versions(bucket, sv, state, rep, unit)
        if log is not None:
            for text in head_problems(bucket, sv, log, ix):
                rep.add(unit, "tamper", text)
    else:
        for text in read_findings(copy):
            rep.add(unit, "s3", text)
    live = {o.rel: o for o in state.live()}
    for o in live.values():
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
            f = rep.add(unit, "s3", f"{bucket.url}/{o.rel} is locked until "
                        f"{s3bucket.to_datetime(o.retain_until):%Y-%m-%d}, before a record it "
                        f"holds expires ({s3bucket.to_datetime(until):%Y-%m-%d})",
                        segment=o.segno, offset=o.offset)
            if repair and copy is None:
                _restore(f, lambda: state.set_lock(
                    o.rel, retain_until=bucket.extend(o.rel, o.version, until)), bucket,
                    on_repair, "lock lengthened")
        if hold and not o.legal_hold:
            f = rep.add(unit, "s3", f"{bucket.url}/{o.rel} holds a record that is held, "
                        f"retained indefinitely or waiting for its event, but its legal hold "
                        f"is off", segment=o.segno, offset=o.offset)
            if repair and copy is None:
                def put_back(o=o):
                    bucket.legal_hold(o.rel, o.version, True)
                    state.set_lock(o.rel, legal_hold=True)
                _restore(f, put_back, bucket, on_repair, "legal hold put back")


def _restore(finding, fn, bucket, on_repair, what):
    """A protection found missing on the bucket, put back (scrub --repair), audited."""
    try:
        fn()
    except (StoreError, OSError) as e:
        finding["detail"] += f"; could not be put back: {e}"
        return
    finding.update(repaired=True, source=bucket.url)
    finding["detail"] += f" ({what})"
    if on_repair:
        on_repair(finding)


def _check_versions(bucket, sv, state, rep, unit):
    """The primary's record of what it wrote against the bucket's versions."""
    mine = {o.rel: o for o in state.all()}
    for rel, o in mine.items():
        e = sv.get(rel)
        if e is None:
            rep.add(unit, "s3", f"{bucket.url}/{rel}: no version of it is listed, but "
                    f"wormfs wrote version {o.version}", segment=o.segno, offset=o.offset)
        elif e.first.version != o.version:
            rep.add(unit, "s3", f"{bucket.url}/{rel}: its first version is "
                    f"{e.first.version}, not version {o.version} which wormfs wrote and "
                    f"verified: another writer was first", segment=o.segno, offset=o.offset)
    for rel in sv.entries:
        if rel not in mine:
            rep.add(unit, "s3", f"{bucket.url}/{rel}: an object this primary never wrote "
                    f"(forged, or from another writer): ignored")


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
