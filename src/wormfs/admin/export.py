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
                  records/ instead if the store's top level has an entry named like one of
                  the above

Everything is written under a temporary name beside the target, checked by reading it back
(every record's SHA-256 and BLAKE3 against what was computed while writing it, and its BLAKE3
against the store's digest), and only then renamed into place: a failed export leaves nothing
that looks complete. Only reading the store is needed, so it works on a mounted store, on one
that is not mounted and on a mirror unit alone.
"""
import csv
import dataclasses
import hashlib
import html
import io
import json
import os
import pickle
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from urllib.parse import quote

import blake3

from .. import __version__
from ..errors import IntegrityError, InvalidValue, StoreError
from ..store.hostfs import fsync_dir, syncfs
from ..store.replay import ROOT_INO
from ..timeutil import format_us, from_us
from . import auditlog, records

READ_BLOCK = 4 << 20
META_FILES = ("README.txt", "index.csv", "index.json", "index.html", "audit.jsonl",
              "SHA256SUMS", "B3SUMS")
SUMS_FILES = ("SHA256SUMS", "B3SUMS")


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
    """A zip's central directory lists every file at its end. zipfile keeps an entry per
    file for it until it is closed (about 1 KiB each: a GiB for a million records), and
    reading a zip back with zipfile loads the whole directory again. Here the entries go to
    a spool file beside the archive as each member is written (``_SpooledEntries`` stands
    in for zipfile's list; zipfile's own code writes the directory from it at close), and
    the read-back walks the directory from the file, an entry at a time (``_zip_members``):
    the memory of a zip export is the same for a million records as for ten."""
    kind = "zip"

    def __init__(self, final):
        super().__init__(final)
        self.archive = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        # zipfile.ZipFile appends each finished entry to ``filelist``, files it under its
        # name in ``NameToInfo`` (only to warn of a duplicate: the scratch database already
        # refuses one), and iterates ``filelist`` and takes its len() for the directory.
        self.archive.filelist = _SpooledEntries(final + ".entries")
        self.archive.NameToInfo = _NoNames()

    def add(self, name, chunks, mtime_us=None, mode=0o444, size=None):
        info = zipfile.ZipInfo(name, _zip_time(mtime_us))
        info.external_attr = (0o100000 | mode) << 16
        with self.archive.open(info, "w", force_zip64=True) as f:
            for piece in chunks:
                f.write(piece)

    def close_writing(self):
        super().close_writing()
        self.archive.filelist.close()

    def abort(self):
        super().abort()
        self.archive.filelist.close()

    def read_back(self):
        with open(self.tmp, "rb") as f:
            yield from _zip_members(f)


class _SpooledEntries:
    """The part of a list zipfile uses for its central directory (append, len, iteration
    in order), kept in a file: each entry pickled as it is appended, read back one at a
    time. The file is removed by ``close``."""

    def __init__(self, path):
        self.path, self.n = path, 0
        self.f = open(path, "wb")

    def append(self, info):
        pickle.dump(info, self.f, protocol=pickle.HIGHEST_PROTOCOL)
        self.n += 1

    def __len__(self):
        return self.n

    def __iter__(self):
        self.f.flush()
        with open(self.path, "rb") as r:
            for _ in range(self.n):
                yield pickle.load(r)

    def close(self):
        if not self.f.closed:
            self.f.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _NoNames(dict):
    """zipfile's name -> entry map, keeping nothing (see _Zip)."""

    def __setitem__(self, name, info):
        pass


# The zip records read back (PKWARE APPNOTE 4.3: end of central directory, its zip64 form,
# the central directory's headers, each member's local header). Only what _Zip writes is
# read: stored members, no data descriptors, no encryption, one disk.
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_UTF8_NAME = 0x800


def _zip_members(f):
    """(name, iterator of its bytes) of every member of the zip in ``f``, in the central
    directory's order, reading one directory entry at a time; the bytes are checked
    against the entry's CRC-32 as they are read (ExportFailed)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(size - _EOCD.size)
    sig, _, _, _, count, cd_size, cd_offset, comment = _EOCD.unpack(f.read(_EOCD.size))
    if sig != b"PK\x05\x06" or comment:
        raise ExportFailed("the zip does not end with its directory")
    if size >= _EOCD.size + _ZIP64_LOCATOR.size:
        f.seek(size - _EOCD.size - _ZIP64_LOCATOR.size)
        loc = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
        if loc[0] == b"PK\x06\x07":
            f.seek(loc[2])
            z = _ZIP64_EOCD.unpack(f.read(_ZIP64_EOCD.size))
            if z[0] != b"PK\x06\x06":
                raise ExportFailed("the zip's zip64 directory record is not where it says")
            count, cd_size, cd_offset = z[7], z[8], z[9]
    at = cd_offset
    for _ in range(count):
        f.seek(at)
        h = _CENTRAL.unpack(f.read(_CENTRAL.size))
        if h[0] != b"PK\x01\x02":
            raise ExportFailed(f"the zip's directory is damaged at offset {at}")
        flags, method, crc = h[5], h[6], h[9]
        csize, nlen, elen, clen, offset = h[10], h[12], h[13], h[14], h[18]
        raw_name = f.read(nlen)
        csize, offset = _zip64_sizes(f.read(elen), h[11], csize, offset)
        at += _CENTRAL.size + nlen + elen + clen
        name = raw_name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
        if method != zipfile.ZIP_STORED:
            raise ExportFailed(f"{name} is compressed in the zip")
        f.seek(offset)
        lh = _LOCAL.unpack(f.read(_LOCAL.size))
        if lh[0] != b"PK\x03\x04" or f.read(lh[10]) != raw_name:
            raise ExportFailed(f"{name}: the zip's local header does not match its directory")
        yield name, _stored_bytes(f, offset + _LOCAL.size + lh[10] + lh[11], csize, crc, name)
    if at != cd_offset + cd_size:
        raise ExportFailed("the zip's directory is not the size its end record says")


def _zip64_sizes(extra, usize, csize, offset):
    """The compressed size and local header offset, from the zip64 extra field where the
    header's own say 0xFFFFFFFF (its fields come in this order, each only if needed)."""
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, i)
        if tag == 1:
            vals = iter(struct.unpack_from(f"<{n // 8}Q", extra, i + 4))
            if usize == 0xFFFFFFFF:
                next(vals)
            if csize == 0xFFFFFFFF:
                csize = next(vals)
            if offset == 0xFFFFFFFF:
                offset = next(vals)
        i += 4 + n
    return csize, offset


def _stored_bytes(f, start, length, crc, name):
    pos, end, got = start, start + length, 0
    while pos < end:
        f.seek(pos)
        b = f.read(min(READ_BLOCK, end - pos))
        if not b:
            raise ExportFailed(f"{name} is cut short in the zip")
        pos += len(b)
        got = zlib.crc32(b, got)
        yield b
    if got != crc:
        raise ExportFailed(f"{name} does not match its CRC-32 in the zip")


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
        # tarfile keeps every member it wrote (for nothing a writer needs): memory would
        # grow with the production.
        self.archive.members.clear()

    def read_back(self):
        with tarfile.open(self.tmp) as tf:
            while True:
                m = tf.next()     # not iteration, which keeps every member read
                if m is None:
                    return
                if m.isfile():
                    f = tf.extractfile(m)
                    yield m.name, iter(lambda: f.read(READ_BLOCK), b"")
                tf.members.clear()


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
    (also what the export event records). ExportFailed if it cannot be verified.

    Memory stays bounded whatever the number of records: records are described and written
    one at a time, the metadata files grow in a scratch directory beside ``out`` (their
    digests, every file's, and the seqs of the audit events in a SQLite file there), and
    the sums files and the read-back are checked against that."""
    out = os.path.abspath(out)
    now = store.now()
    mirror_of = records.mirror_view(store)
    with store.ix.read() as txn:
        top = store.ix.meta(txn, "next_serial", 1) - 1
    # A fixed set of serials, so that the pre-pass (for progress) and the writing agree
    # while the mount seals more; the caller's selection is left as it was.
    asked = sel
    sel = dataclasses.replace(sel, last=top if sel.last is None else min(sel.last, top))
    prefix = "records/" if _top_level_clash(store) else ""
    counter = _NoProgress()
    if progress:
        counter = _Counter(sum(r.size for r in records.select(store, sel)), progress)
    target = open_output(out)
    scratch = None
    try:
        scratch = _Scratch(os.path.dirname(out))
        summary = _write(store, target, scratch, sel, asked, mirror_of, prefix, counter, now)
        target.close_writing()
        _read_back(target, scratch)
        target.finish()
    except BaseException:
        target.abort()
        raise
    finally:
        if scratch is not None:
            scratch.close()
    summary["out"] = out
    return summary


def _top_level_clash(store):
    """Whether a record's path could begin with one of the metadata files' names: then the
    records go under records/ (decided before the first is written)."""
    with store.ix.read() as txn:
        return any(store.ix.lookup(txn, ROOT_INO, n.encode()) is not None for n in META_FILES)


class _Scratch:
    """An export's bookkeeping on disk, so that its memory does not grow with the number of
    records: the metadata files as they grow (``path``), the SHA-256 and BLAKE3 of every
    file written (for the sums files and the read-back), and the seqs of the audit events
    about the exported records (for audit.jsonl, in seq order, each once). Removed at the
    end; beside the production, so on a file system with room for it."""

    def __init__(self, beside):
        self.dir = tempfile.mkdtemp(prefix=".wormfs-export-", dir=beside)
        self.db = sqlite3.connect(os.path.join(self.dir, "scratch.db"), isolation_level=None)
        for sql in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF",
                    "CREATE TABLE files (name BLOB PRIMARY KEY, sha256 TEXT, blake3 TEXT, "
                    "seen INTEGER NOT NULL DEFAULT 0)",
                    "CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB)",
                    "CREATE TABLE about (ino INTEGER, seq INTEGER, PRIMARY KEY (ino, seq))",
                    "BEGIN"):
            self.db.execute(sql)

    def path(self, name):
        return os.path.join(self.dir, name)

    @staticmethod
    def _key(name):
        # Byte order of this encoding is code point order, so ORDER BY gives sorted(names).
        return name.encode("utf-8", "surrogatepass")

    def expect(self, name, sha256, b3):
        self.db.execute("INSERT INTO files (name, sha256, blake3) VALUES (?, ?, ?)",
                        (self._key(name), sha256, b3))

    def expected(self, name):
        """(sha256, blake3) written for ``name``, marking it seen; None if none was."""
        key = self._key(name)
        row = self.db.execute("SELECT sha256, blake3 FROM files WHERE name=?",
                              (key,)).fetchone()
        if row is not None:
            self.db.execute("UPDATE files SET seen=1 WHERE name=?", (key,))
        return row

    def unseen(self):
        """(how many files were written and not read back, the first of their names)."""
        n = self.db.execute("SELECT count(*) FROM files WHERE seen=0").fetchone()[0]
        row = self.db.execute("SELECT name FROM files WHERE seen=0 ORDER BY name LIMIT 1") \
            .fetchone()
        return n, (bytes(row[0]).decode("utf-8", "surrogatepass") if row else None)

    def files(self):
        """(name, sha256, blake3) of every file written so far, by name."""
        for name, sha, b3 in self.db.execute(
                "SELECT name, sha256, blake3 FROM files ORDER BY name"):
            yield bytes(name).decode("utf-8", "surrogatepass"), sha, b3

    def note_events(self, events):
        """[(seq, event, stored bytes)] about an exported record (kept once each)."""
        self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?)",
                            ((s, p) for s, _, p in events))

    def event_payloads(self):
        """The stored bytes of every event noted, in seq order."""
        for (payload,) in self.db.execute("SELECT payload FROM events ORDER BY seq"):
            yield bytes(payload)

    def note_about(self, ino, seq):
        self.db.execute("INSERT OR IGNORE INTO about VALUES (?, ?)", (ino, seq))

    def about(self, ino):
        return [s for (s,) in self.db.execute(
            "SELECT seq FROM about WHERE ino=? ORDER BY seq", (ino,))]

    def close(self):
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _History:
    """The seqs of the events about a record: from the index's ``subjects`` table, or, in
    an index an older wormfs made that lacks it, from one pass over the whole trail into
    the scratch database (never held in memory)."""

    def __init__(self, store, scratch):
        self.store, self.scratch = store, scratch
        self.indexed = store.ix.has_table("subjects")
        if not self.indexed:
            for ev, _ in auditlog.iter_events(store.log, store.ix):
                with store.ix.read() as txn:
                    inos = store.ix.inos_about(txn, ev)
                for ino in inos:
                    if ino < 1 << 63:   # SQLite's integers; no record has a larger inode
                        scratch.note_about(ino, ev["seq"])

    def of(self, rec):
        """(seq, event, stored bytes) of every event about ``rec``, in seq order."""
        if self.indexed:
            with self.store.ix.read() as txn:
                seqs = list(self.store.ix.events_about(txn, rec.ino))
        else:
            seqs = self.scratch.about(rec.ino)
        return [(s, *auditlog.event(self.store.log, self.store.ix, s)) for s in seqs]


class _Ranges:
    """Serials seen in increasing order -> '1-3,7', built as they come."""

    def __init__(self):
        self.out, self.start, self.prev = [], None, None

    def add(self, s):
        if self.start is not None and s == self.prev + 1:
            self.prev = s
            return
        self._close()
        self.start = self.prev = s

    def _close(self):
        if self.start is not None:
            self.out.append(f"{self.start}-{self.prev}" if self.prev != self.start
                            else str(self.start))

    def text(self):
        self._close()
        self.start = None
        return ",".join(self.out)


def _write(store, target, scratch, sel, asked, mirror_of, prefix, counter, now):
    history = _History(store, scratch)
    csv_f = open(scratch.path("index.csv"), "w", encoding="utf-8", errors="surrogateescape",
                 newline="")
    spools = {n: open(scratch.path(n), "wb") for n in ("records.json", "rows.html",
                                                        "sections.html")}
    w = csv.writer(csv_f)
    cols = ("file", "sha256") + records.FIELDS
    w.writerow(cols)
    n = total = 0
    ranges = _Ranges()
    try:
        for rec in records.select(store, sel):
            d = records.describe(store, rec, now, mirror_of)
            name = prefix + d["path"].lstrip("/")
            sha, b3 = hashlib.sha256(), blake3.blake3()
            target.add(name, _record_chunks(store, rec, (sha, b3), counter), rec.mtime,
                       size=rec.size)
            if b3.hexdigest() != rec.blake3:
                raise ExportFailed(f"record {rec.serial} ({d['path']}) does not match its "
                                   f"digest; run 'wormfs verify' and 'wormfs scrub --repair'")
            d["file"], d["sha256"] = name, sha.hexdigest()
            scratch.expect(name, d["sha256"], rec.blake3)
            evs = history.of(rec)
            scratch.note_events(evs)
            d["audit_events"] = [s for s, _, _ in evs]
            row = dict(d, holds="; ".join(f"{k}: {v}" if v else k
                                          for k, v in d["holds"].items()))
            w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
            sep = b"" if n == 0 else b"\n"
            spools["records.json"].write((b"," if n else b"") + b"\n    " + _indented(
                json.dumps(d, indent=2, ensure_ascii=False), 4))
            spools["rows.html"].write(sep + _html_row(d, len(evs)))
            spools["sections.html"].write(sep + _html_section(d, [ev for _, ev, _ in evs]))
            n += 1
            total += rec.size
            ranges.add(rec.serial)
    finally:
        csv_f.close()
        for f in spools.values():
            f.close()

    unit = store.unit
    about = {"store_unit": unit["serial"], "role": unit["role"], "label": unit.get("label", ""),
             "mode": unit["mode"], "peer_unit": unit.get("peer_serial"),
             "exported_at": format_us(now), "wormfs_version": __version__,
             "selection": {k: v for k, v in vars(asked).items() if v not in (None, False)},
             "records": n, "bytes": total,
             "layout": f"records under {prefix or 'the top level'}"}

    def put(name, parts):
        """Add a metadata file made of ``parts`` (bytes, the path of a scratch file, or an
        iterator of bytes), hashed as it is written out; returns its SHA-256."""
        path = scratch.path("final-" + name)
        sha, b3 = hashlib.sha256(), blake3.blake3()
        with open(path, "wb") as f:
            for piece in _pieces(parts):
                sha.update(piece)
                b3.update(piece)
                f.write(piece)
        target.add(name, _file_chunks(path), size=os.path.getsize(path))
        scratch.expect(name, sha.hexdigest(), b3.hexdigest())
        os.unlink(path)
        return sha.hexdigest()

    head = _indented(json.dumps(about, indent=2, ensure_ascii=False), 2)
    index_sha = put("index.json", [b'{\n  "export": ' + head + b',\n  "records": ['] + (
        [scratch.path("records.json"), b"\n  ]\n}\n"] if n else [b"]\n}\n"]))
    put("index.csv", [scratch.path("index.csv")])
    # Each event about an exported record once, in seq order, its stored bytes unchanged.
    put("audit.jsonl", [(p + b"\n" for p in scratch.event_payloads())])
    put("index.html", [_html_head(about), scratch.path("rows.html"), _HTML_MIDDLE,
                       scratch.path("sections.html"), _HTML_TAIL])
    put("README.txt", [_readme(about, prefix).encode()])
    # The sums list every file but themselves.
    for name, which in (("SHA256SUMS", 1), ("B3SUMS", 2)):
        put(name, [(sums_line(row[which], row[0]).encode("utf-8", "surrogateescape")
                    for row in scratch.files() if row[0] not in SUMS_FILES)])
    return {"records": n, "bytes": total, "format": target.kind,
            "index_sha256": index_sha, "serials": ranges.text()}


def _pieces(parts):
    for p in parts:
        if isinstance(p, bytes):
            yield p
        elif isinstance(p, str):
            yield from _file_chunks(p)
        else:
            yield from p


def _indented(text, n):
    """A json.dumps(indent=2) text placed n spaces deep, as json.dumps of the whole would."""
    return text.replace("\n", "\n" + " " * n).encode("utf-8", "surrogateescape")


def _read_back(target, scratch):
    """Every file of the production, read back, must hash to what was written."""
    for name, chunks in target.read_back():
        sha, b3 = hashlib.sha256(), blake3.blake3()
        for piece in chunks:
            sha.update(piece)
            b3.update(piece)
        want = scratch.expected(name)
        if want is None:
            raise ExportFailed(f"the export holds an unexpected file {name!r}")
        if (sha.hexdigest(), b3.hexdigest()) != tuple(want):
            raise ExportFailed(f"{name} does not read back as written")
    missing, first = scratch.unseen()
    if missing:
        raise ExportFailed(f"{missing} files did not read back, e.g. {first}")


# -- index.html, a record at a time ------------------------------------------------------------

def _html_row(d, n_events):
    e = html.escape
    holds = ", ".join(d["holds"]) or "—"
    return (
        f"<tr><td>{d['serial']}</td><td><a href=\"{e(_href(d['file']))}\">{e(d['path'])}"
        f"</a></td><td class=n>{d['size']}</td><td>{e(d['committed'])}</td>"
        f"<td>{e(d['retain_until'])}</td><td>{e(holds)}</td>"
        f"<td>{e(str(d['writer_user']))} ({e(str(d['writer_program']))})</td>"
        f"<td><a href=\"#audit-{d['serial']}\">{n_events} events</a></td>"
        f"<td class=h>{d['blake3']}<br>{d['sha256']}</td></tr>").encode(
            "utf-8", "surrogateescape")


def _html_section(d, events):
    e = html.escape
    evs = "".join(
        f"<tr><td>{ev['seq']}</td><td>{e(ev['time'])}</td><td>{e(ev['type'])}</td>"
        f"<td>{e(auditlog.outcome(ev))}</td><td>{e(_who(ev))}</td>"
        f"<td>{e(auditlog.details(ev))}</td></tr>" for ev in events)
    return (
        f"<h3 id=\"audit-{d['serial']}\">Record {d['serial']}: {e(d['path'])}</h3>"
        f"<table><tr><th>seq</th><th>time (UTC)</th><th>event</th><th>outcome</th>"
        f"<th>who</th><th>details</th></tr>{evs}</table>").encode("utf-8", "surrogateescape")


def _html_head(about):
    e = html.escape
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
""".encode("utf-8", "surrogateescape")


_HTML_MIDDLE = b"""
</table>
<h2>Audit history of each record</h2>
"""
_HTML_TAIL = b"""
</body></html>
"""


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
