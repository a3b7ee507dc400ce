"""``wormfs export``: a production for a regulator (SPEC, R25, R26, R28).

Layout of a production (a directory, a .zip or a .tar; the same names in each):

    README.txt    what is inside and how to verify it with stock tools
    index.csv     one row per record: every field of ``wormfs info``, plus file and sha256
    index.json    the same, plus the store's identity and the selection
    index.html    a readable report: one table of records, each linking to its history
    audit.jsonl   the stored audit events about the exported records, byte for byte
    SHA256SUMS    ``sha256sum -c SHA256SUMS`` checks every file above and every record
    B3SUMS        ``b3sum -c B3SUMS`` the same with BLAKE3 (a record's is its wormfs digest)
    <records>     each record bit-exact under its path in the store (a/b/c.eml); under
                  records/ instead if a record's name at the top would clash with the above

Everything is written under a temporary name beside the target, checked by reading it back
(every record's SHA-256 and BLAKE3 against what was computed while writing it, and its BLAKE3
against the store's digest), and only then renamed into place: a failed export leaves nothing
that looks complete. Only reading the store is needed, so it works on a mounted store, on one
that is not mounted and on a mirror unit alone.
"""
import csv
import hashlib
import html
import io
import json
import os
import shutil
import tarfile
import time
import zipfile
from urllib.parse import quote

import blake3

from .. import __version__
from ..errors import IntegrityError, InvalidValue, StoreError
from ..store.hostfs import fsync_dir, syncfs
from ..timeutil import format_us, from_us
from . import auditlog, records

READ_BLOCK = 4 << 20
META_FILES = ("README.txt", "index.csv", "index.json", "index.html", "audit.jsonl",
              "SHA256SUMS", "B3SUMS")


class ExportFailed(StoreError):
    pass


# -- where the production goes -------------------------------------------------------------------

class _Dir:
    kind = "directory"

    def __init__(self, final):
        if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
            raise InvalidValue(f"{final} exists and is not an empty directory; exports never "
                               f"overwrite")
        self.final = final
        self.tmp = final.rstrip("/") + ".partial"
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)

    def add(self, name, chunks, mtime_us=None, mode=0o444, size=None):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:   # made durable all at once in finish()
            for piece in chunks:
                f.write(piece)
        if mtime_us is not None:
            os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))
        os.chmod(path, mode)

    def read_back(self):
        """Yield (name, chunks iterator) of every file written."""
        for dirpath, _, files in os.walk(self.tmp):
            for f in files:
                path = os.path.join(dirpath, f)
                yield os.path.relpath(path, self.tmp), _file_chunks(path)

    def close_writing(self):
        syncfs(self.tmp)   # every file durable before the production gets its final name

    def finish(self):
        if os.path.isdir(self.final):
            os.rmdir(self.final)  # empty, checked at the start
        os.rename(self.tmp, self.final)
        fsync_dir(os.path.dirname(self.final) or ".")

    def abort(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def _file_chunks(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(READ_BLOCK)
            if not b:
                return
            yield b


class _Archive:
    """A production in one archive file; ``self.archive`` is the open zipfile or tarfile."""

    def __init__(self, final):
        if os.path.exists(final):
            raise InvalidValue(f"{final} exists; exports never overwrite")
        parent = os.path.dirname(final) or "."
        if not os.path.isdir(parent):
            raise InvalidValue(f"{parent} is not a directory")
        self.final, self.tmp = final, final + ".partial"

    def close_writing(self):
        self.archive.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())

    def finish(self):
        os.rename(self.tmp, self.final)

    def abort(self):
        try:
            self.archive.close()
        except Exception:  # closing a half-written archive we are about to delete
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _zip_time(mtime_us):
    if mtime_us is None:
        return time.gmtime()[:6]
    t = from_us(max(mtime_us, 315532800 * 1_000_000))  # zip cannot say before 1980
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


class _Zip(_Archive):
    kind = "zip"

    def __init__(self, final):
        super().__init__(final)
        self.archive = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name, chunks, mtime_us=None, mode=0o444, size=None):
        info = zipfile.ZipInfo(name, _zip_time(mtime_us))
        info.external_attr = (0o100000 | mode) << 16
        with self.archive.open(info, "w", force_zip64=True) as f:
            for piece in chunks:
                f.write(piece)

    def read_back(self):
        with zipfile.ZipFile(self.tmp) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    yield info.filename, iter(lambda: f.read(READ_BLOCK), b"")


class _Tar(_Archive):
    kind = "tar"

    def __init__(self, final):
        super().__init__(final)
        self.archive = tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)

    def add(self, name, chunks, mtime_us=None, mode=0o444, size=None):
        if size is None:  # metadata files: small, built in memory
            data = b"".join(chunks)
            size, chunks = len(data), iter([data])
        info = tarfile.TarInfo(name)   # a tar header states the size before the bytes
        info.size, info.mode = size, mode
        info.mtime = time.time() if mtime_us is None else mtime_us / 1e6
        self.archive.addfile(info, _ChunkReader(chunks))

    def read_back(self):
        with tarfile.open(self.tmp) as tf:
            for m in tf:
                if m.isfile():
                    f = tf.extractfile(m)
                    yield m.name, iter(lambda: f.read(READ_BLOCK), b"")


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte strings (tarfile reads what it was told), in
    the small reads tarfile makes, without copying the pieces over and over."""

    def __init__(self, chunks):
        self.chunks, self.piece, self.off = chunks, b"", 0

    def readable(self):
        return True

    def read(self, n=-1):
        out = []
        while n < 0 or n > 0:
            if self.off >= len(self.piece):
                nxt = next(self.chunks, None)
                if nxt is None:
                    break
                self.piece, self.off = memoryview(nxt), 0
                continue
            take = len(self.piece) - self.off if n < 0 else min(n, len(self.piece) - self.off)
            out.append(self.piece[self.off:self.off + take])
            self.off += take
            if n > 0:
                n -= take
        return b"".join(out)


def open_output(out):
    low = out.lower()
    if low.endswith(".zip"):
        return _Zip(out)
    if low.endswith(".tar"):
        return _Tar(out)
    return _Dir(out)


# -- sums files ------------------------------------------------------------------------------------

def sums_line(digest, name):
    """One line of a GNU-style sums file, escaped as sha256sum and b3sum expect for names
    holding a backslash or a newline."""
    if "\\" in name or "\n" in name:
        return "\\" + digest + "  " + name.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {name}\n"


# -- the export ------------------------------------------------------------------------------------

def _record_chunks(store, rec, hashes, progress):
    off, size = 0, rec.size
    while off < size:
        data = store.read(rec.ino, off, min(READ_BLOCK, size - off))
        if not data:
            raise IntegrityError(f"record {rec.serial} ended at {off} of {size} bytes")
        for h in hashes:
            h.update(data)
        off += len(data)
        progress.add(len(data))
        yield data


class _NoProgress:
    def add(self, n):
        pass


class _Counter:
    def __init__(self, total, fn):
        self.done, self.total, self.fn = 0, total, fn

    def add(self, n):
        self.done += n
        self.fn(self.done, self.total)


def run(store, out, sel, progress=None):
    """Write a production of the records ``sel`` selects to ``out``; returns the summary
    (also what the export event records). ExportFailed if it cannot be verified."""
    out = os.path.abspath(out)
    now = store.now()
    mirror_of = records.mirror_view(store)
    recs = list(records.select(store, sel))
    described = [records.describe(store, r, now, mirror_of) for r in recs]
    tops = {(d["path"] or "").lstrip("/").split("/")[0] for d in described}
    prefix = "records/" if tops & set(META_FILES) else ""
    total = sum(r.size for r in recs)
    counter = _Counter(total, progress) if progress else _NoProgress()
    target = open_output(out)
    try:
        summary = _write(store, target, recs, described, prefix, counter, sel, now)
        target.close_writing()
        _read_back(target, summary["expected"])
        target.finish()
    except BaseException:
        target.abort()
        raise
    del summary["expected"]
    summary["out"] = out
    return summary


def _write(store, target, recs, described, prefix, counter, sel, now):
    expected = {}   # name -> (sha256, blake3)

    def put(name, data):
        target.add(name, [data])
        expected[name] = (hashlib.sha256(data).hexdigest(), blake3.blake3(data).hexdigest())

    for rec, d in zip(recs, described):
        name = prefix + d["path"].lstrip("/")
        sha, b3 = hashlib.sha256(), blake3.blake3()
        target.add(name, _record_chunks(store, rec, (sha, b3), counter), rec.mtime,
                   size=rec.size)
        if b3.hexdigest() != rec.blake3:
            raise ExportFailed(f"record {rec.serial} ({d['path']}) does not match its "
                               f"digest; run 'wormfs verify' and 'wormfs scrub --repair'")
        d["file"], d["sha256"] = name, sha.hexdigest()
        expected[name] = (d["sha256"], rec.blake3)

    history, audit_lines = _histories(store, recs)
    for d in described:
        d["audit_events"] = [ev["seq"] for ev in history[d["serial"]]]

    unit = store.unit
    about = {"store_unit": unit["serial"], "role": unit["role"], "label": unit.get("label", ""),
             "mode": unit["mode"], "peer_unit": unit.get("peer_serial"),
             "exported_at": format_us(now), "wormfs_version": __version__,
             "selection": {k: v for k, v in vars(sel).items() if v not in (None, False)},
             "records": len(recs), "bytes": sum(r.size for r in recs),
             "layout": f"records under {prefix or 'the top level'}"}
    meta = {
        "index.json": json.dumps({"export": about, "records": described}, indent=2,
                                 ensure_ascii=False).encode() + b"\n",
        "index.csv": _index_csv(described),
        "audit.jsonl": b"".join(audit_lines),
        "index.html": _index_html(about, described, history),
        "README.txt": _readme(about, prefix).encode(),
    }
    for name, data in meta.items():
        put(name, data)
    listed = sorted(expected)   # every file so far; the sums files do not list themselves
    for sums, which in (("SHA256SUMS", 0), ("B3SUMS", 1)):
        put(sums, "".join(sums_line(expected[n][which], n) for n in listed)
            .encode("utf-8", "surrogateescape"))
    return {"records": len(recs), "bytes": about["bytes"], "format": target.kind,
            "index_sha256": expected["index.json"][0], "expected": expected,
            "serials": _ranges(sorted(history))}


def _histories(store, recs):
    """({serial: [event]}, [payload line]) of every event about the records, in seq order:
    from the index's ``subjects`` table (only the events asked for are read), or, in an
    index an older wormfs made and nobody has opened writable since, by reading the whole
    trail."""
    history = {r.serial: [] for r in recs}
    ino_serial = {r.ino: r.serial for r in recs}
    by_seq = {}   # seq -> serials it is about
    if store.ix.has_table("subjects"):
        with store.ix.read() as txn:
            for r in recs:
                for seq in store.ix.events_about(txn, r.ino):
                    by_seq.setdefault(seq, []).append(r.serial)
        found = ((seq, auditlog.event(store.log, store.ix, seq)) for seq in sorted(by_seq))
    else:
        found = []
        for ev, payload in auditlog.iter_events(store.log, store.ix):
            ev_inos, ev_serials = auditlog.subjects(ev)
            mine = {ino_serial[i] for i in ev_inos & ino_serial.keys()}
            mine |= ev_serials & history.keys()
            if mine:
                by_seq[ev["seq"]] = sorted(mine)
                found.append((ev["seq"], (ev, payload)))
    lines = []
    for seq, (ev, payload) in found:
        lines.append(payload + b"\n")
        for serial in by_seq[seq]:
            history[serial].append(ev)
    return history, lines


def _ranges(serials):
    """[1, 2, 3, 7] -> '1-3,7': the exported serials, compactly, for the export event."""
    out, start, prev = [], None, None
    for s in serials:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)


def _read_back(target, expected):
    seen = set()
    for name, chunks in target.read_back():
        sha, b3 = hashlib.sha256(), blake3.blake3()
        for piece in chunks:
            sha.update(piece)
            b3.update(piece)
        want = expected.get(name)
        if want is None:
            raise ExportFailed(f"the export holds an unexpected file {name!r}")
        if (sha.hexdigest(), b3.hexdigest()) != want:
            raise ExportFailed(f"{name} does not read back as written")
        seen.add(name)
    missing = set(expected) - seen
    if missing:
        raise ExportFailed(f"{len(missing)} files did not read back, e.g. {sorted(missing)[0]}")


def _index_csv(described):
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ("file", "sha256") + records.FIELDS
    w.writerow(cols)
    for d in described:
        row = dict(d, holds="; ".join(f"{k}: {v}" if v else k for k, v in d["holds"].items()))
        w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def _index_html(about, described, history):
    e = html.escape
    rows, sections = [], []
    for d in described:
        holds = ", ".join(d["holds"]) or "—"
        rows.append(
            f"<tr><td>{d['serial']}</td><td><a href=\"{e(_href(d['file']))}\">{e(d['path'])}"
            f"</a></td><td class=n>{d['size']}</td><td>{e(d['committed'])}</td>"
            f"<td>{e(d['retain_until'])}</td><td>{e(holds)}</td>"
            f"<td>{e(str(d['writer_user']))} ({e(str(d['writer_program']))})</td>"
            f"<td><a href=\"#audit-{d['serial']}\">{len(history[d['serial']])} events</a></td>"
            f"<td class=h>{d['blake3']}<br>{d['sha256']}</td></tr>")
        evs = "".join(
            f"<tr><td>{ev['seq']}</td><td>{e(ev['time'])}</td><td>{e(ev['type'])}</td>"
            f"<td>{e(auditlog.outcome(ev))}</td><td>{e(_who(ev))}</td>"
            f"<td>{e(auditlog.details(ev))}</td></tr>" for ev in history[d["serial"]])
        sections.append(
            f"<h3 id=\"audit-{d['serial']}\">Record {d['serial']}: {e(d['path'])}</h3>"
            f"<table><tr><th>seq</th><th>time (UTC)</th><th>event</th><th>outcome</th>"
            f"<th>who</th><th>details</th></tr>{evs}</table>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wormfs export of {e(about['store_unit'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #999;padding:3px 6px;vertical-align:top;font-size:90%}}
td.n{{text-align:right}}td.h{{font-family:monospace;font-size:75%}}</style></head><body>
<h1>Records exported from wormfs unit {e(about['store_unit'])}</h1>
<p>{about['records']} records, {about['bytes']} bytes, exported {e(about['exported_at'])} (compliance
clock, UTC) from the {e(about['role'])} unit{(' "' + e(about['label']) + '"') if about['label'] else ''},
mode {e(about['mode'])}. Each record's file is a bit-exact copy; BLAKE3 and SHA-256 below are of
its whole content (see README.txt to check them).</p>
<table><tr><th>serial</th><th>path</th><th>bytes</th><th>committed (UTC)</th>
<th>retain until</th><th>legal holds</th><th>written by</th><th>audit history</th>
<th>BLAKE3 / SHA-256</th></tr>
{chr(10).join(rows)}
</table>
<h2>Audit history of each record</h2>
{chr(10).join(sections)}
</body></html>
""".encode("utf-8", "surrogateescape")


def _href(name):
    return quote(name.encode("utf-8", "surrogateescape"))


def _who(ev):
    a = ev.get("actor")
    if not a:
        return "wormfs"
    return f"{a.get('user')} (uid {a.get('uid')}), {a.get('program')} (pid {a.get('pid')})"


def _readme(about, prefix):
    return f"""wormfs export
=============

Unit {about['store_unit']} ({about['role']}), exported {about['exported_at']} UTC by wormfs
{about['wormfs_version']}: {about['records']} records, {about['bytes']} bytes.

Contents
  {prefix or ''}<path>   each record, a bit-exact copy of its content, under its path in the store
  index.html     a readable report: every record with its fields and its audit history
  index.csv      one row per record: file, SHA-256, serial, path, size, BLAKE3 digest,
                 commit time, retain-until, state, legal holds, event date, the user, group,
                 process and program that wrote it, mode, owner, mtime, mirror state
  index.json     the same as JSON, with the identity of the store and the selection
  audit.jsonl    the audit events about these records, one per line, exactly as stored
  SHA256SUMS     SHA-256 of every file above (except the two sums files)
  B3SUMS         BLAKE3 of every file above; a record's BLAKE3 is the digest wormfs gave it
                 when it was sealed (index.csv "blake3", user.worm.blake3 on the mount)

How to verify (in this directory, or after unpacking the archive here)
  sha256sum -c SHA256SUMS        every line must say OK
  b3sum -c B3SUMS                (b3sum: Debian package "b3sum" or cargo install b3sum)

The audit trail
  Each line of audit.jsonl is one event as the store keeps it (canonical JSON). Its "prev"
  is the BLAKE3 of the event before it in the store's trail, so each line's BLAKE3 can be
  matched against the "prev" of the next event in the full trail, which
  'wormfs audit STORE --format jsonl' prints; 'wormfs audit STORE --verify' checks the whole
  chain on both units. Times are the store's compliance clock, in UTC.

The export checked itself before it was reported complete: every file was read back and
its SHA-256 and BLAKE3 compared, and every record's BLAKE3 compared with its stored digest.
"""
