"""The LMDB index of one unit: a cache of the segments, rebuildable from them at any time.

Schema (every named database, its keys and values; integers are unsigned big-endian so that
LMDB's byte order is numeric order). docs/FORMAT.md repeats this for readers without our code.

    meta       ASCII name -> JSON
               applied      [segno, offset] just past the last frame applied
               last_seq     seq of the last event applied (0: none)
               last_hash    hex BLAKE3 of the last event applied (the chain head)
               next_ino     next inode number to hand out
               next_serial  next record serial to hand out
               unit         the unit_init event's fields (identity, mode, defaults)
               settings     current store settings (scratch patterns, scratch TTL)
               stats        {"records", "logical_bytes", "chunks", "stored_bytes"}
               last_time    time of the last event (us): a floor for the compliance clock
               last_verify  result of the last verify or scrub (time, kind, ok, findings)
               last_dispose seq of the last dispose event (its frames are destroyed again
                            at open if a crash interrupted that)
               time_went_back  seq of the last event whose time is earlier than the one
                            before it (absent: the log's times never go back, so a search
                            by time may bisect; the journal keeps them so since 2026-12)
               layout       2 once the index holds ``chunkrefs``, ``undisposed`` and
                            ``subjects`` (absent in an index made before them, which a
                            writable open rebuilds: maintenance.open_index)
    inodes     u64 ino -> JSON inode (inode.py; fields in docs/FORMAT.md "Inodes")
    dirents    u64 parent ino | name bytes -> u64 child ino | u64 cookie
    dirlist    u64 parent ino | u64 cookie -> name bytes   (readdir order; cookies only grow:
               the seq of the event that made the entry)
    chunks     32-byte BLAKE3 chunk id -> u64 segno | u64 frame offset | u32 length
               (removed when disposal destroys the chunk)
    manifests  u64 serial | u64 end offset of a chunk in the record -> 32-byte chunk id | u32 len
               (removed when the record is disposed)
    serials    u64 serial -> u64 ino
    expiry     u64 effective retain-until (us) | u64 serial -> empty (finite retention only)
    events     u64 seq -> u64 segno | u64 offset of the event's frame
    unsealed   u64 ino -> state ("open" or "scratch"): files that are not records yet, so that
               mount-time recovery and the scratch sweep never walk the records
    chunkrefs  32-byte chunk id -> u32 how many records that are not disposed list the chunk
               in their manifest (each record once; no key at 0), so that disposal knows what
               no retained record uses without reading every manifest
    undisposed u64 serial -> empty: records deleted and not disposed yet
    subjects   u64 ino | u64 seq -> empty: the events about each file (events.subjects: its
               ino, the ino it replaced, or its serial), so that an export finds a record's
               audit events without reading the whole trail

Only ``replay.py`` writes to these, so that a live store and a rebuilt index cannot differ.

The counters and the chain head (``HOT_META``) are read and written many times per change
(every event reads and writes ``last_seq`` and ``last_hash``). In a write transaction
(``WriteTxn``) they are kept as Python values and written once, at commit; the values last
committed are remembered, so the next transaction does not decode them again, and a value
equal to the one committed is not written again. ``unit`` is among them because every seal
reads it (the default retention), though only ``unit_init`` writes it. The bytes on disk are
the same as if every put had gone to LMDB.
"""
import json
import os
import struct

import lmdb

from ..errors import StoreError
from .events import loads, subjects
from .inode import Inode, State, stored_path

DBS = ("meta", "inodes", "dirents", "dirlist", "chunks", "manifests", "serials", "expiry",
       "events", "unsealed", "chunkrefs", "undisposed", "subjects")
LAYOUT = 2          # meta "layout": what an index made by this code holds (FORMAT.md §7)
LAYOUT_2_DBS = ("chunkrefs", "undisposed", "subjects")
MAP_SIZE = 1 << 40  # address space only; the file grows with use
INODE_MEMO = 1024   # decoded inodes kept (Index.inode): ~2 MiB at most

U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
U64x2 = struct.Struct(">QQ")
CHUNK_LOC = struct.Struct(">QQI")
MANIFEST_VAL = struct.Struct(">32sI")


HOT_META = frozenset(("applied", "last_seq", "last_hash", "last_time", "next_ino",
                      "next_serial", "stats",
                      "unit"))  # not hot to write, but read by every seal (the default floor)


def _copy(v):
    # Hot values are scalars, flat lists or flat dicts (``unit`` holds a dict, ``settings``,
    # that nobody changes in place): a shallow copy keeps a caller's change to what it read
    # out of the cache until it puts it back.
    return v.copy() if isinstance(v, (list, dict)) else v


class WriteTxn:
    """An LMDB write transaction whose hot meta values wait in ``dirty`` until commit.
    Everything else goes straight to LMDB (the methods are the transaction's own)."""
    __slots__ = ("_t", "_ix", "dirty", "get", "put", "pop", "delete", "cursor", "replace")

    def __init__(self, ix, t):
        self._t, self._ix, self.dirty = t, ix, {}
        self.get, self.put, self.pop = t.get, t.put, t.pop
        self.delete, self.cursor, self.replace = t.delete, t.cursor, t.replace

    def commit(self):
        db, committed = self._ix.db["meta"], self._ix._committed
        for key, value in self.dirty.items():
            old = committed.get(key)
            if old is not None and type(old) is type(value) and old == value:
                continue  # LMDB holds this very value (a create leaves next_serial alone)
            self._t.put(key.encode(), _encode(value), db=db)
        self._t.commit()
        committed.update(self.dirty)  # only once LMDB has them

    def abort(self):
        self.dirty.clear()
        self._t.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


_ENCODE = json.JSONEncoder(sort_keys=True).encode  # json.dumps(v, sort_keys=True), built once


def _encode(value):
    if type(value) is int:  # most hot values; JSON writes an int as int.__repr__ does
        return b"%d" % value
    return _ENCODE(value).encode()


def k64(n):
    return U64.pack(n)


def k64x2(a, b):
    return U64x2.pack(a, b)


class Index:
    def __init__(self, path, readonly=False):
        os.makedirs(path, exist_ok=True) if not readonly else None
        self.env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=len(DBS), subdir=True,
                             readonly=readonly, lock=True, sync=False, metasync=False,
                             readahead=False)
        self._committed = {}  # hot meta values as last committed (WriteTxn)
        self._inodes = {}     # ino -> (stored bytes, Inode decoded from them): see inode()
        self.db = {}
        for name in DBS:
            try:
                self.db[name] = self.env.open_db(name.encode(), create=not readonly)
            except lmdb.NotFoundError:
                # Read-only, an index made before this table: what needs it says so
                # (need_layout); a writable open rebuilds it (maintenance.open_index).
                self.db[name] = None

    def close(self):
        self.env.close()

    def sync(self):
        self.env.sync(True)

    def write(self):
        return WriteTxn(self, self.env.begin(write=True))

    def read(self):
        return self.env.begin(write=False)

    # -- typed accessors (work on any txn) -----------------------------------------------

    def meta(self, txn, key, default=None):
        if key in HOT_META and type(txn) is WriteTxn:
            if key in txn.dirty:
                v = txn.dirty[key]
            elif key in self._committed:
                v = self._committed[key]
            else:
                raw = txn.get(key.encode(), db=self.db["meta"])
                v = self._committed[key] = None if raw is None else loads(raw)
            return default if v is None else _copy(v)
        v = txn.get(key.encode(), db=self.db["meta"])
        return default if v is None else loads(v)

    def committed_meta(self, *wanted):
        """Meta values as last committed, for the process that writes this index: one
        ``(key, default)`` pair each, their values in that order, from one state of the
        index (the values a WriteTxn of ours last saw when it saw them all: no transaction,
        no decoding; else one read transaction), so a head's seq and hash always match."""
        committed, out = self._committed, []
        for k, d in wanted:
            if k not in HOT_META or k not in committed:
                break
            v = committed[k]
            out.append(d if v is None else _copy(v))
        else:
            return tuple(out)
        with self.read() as txn:
            return tuple(self.meta(txn, k, d) for k, d in wanted)

    def put_meta(self, txn, key, value):
        if key in HOT_META and type(txn) is WriteTxn:
            txn.dirty[key] = _copy(value)
            return
        txn.put(key.encode(), _encode(value), db=self.db["meta"])

    def drop_meta(self, txn, key):
        assert key not in HOT_META
        txn.delete(key.encode(), db=self.db["meta"])

    def inode(self, txn, ino):
        """The Inode stored for ``ino`` in ``txn`` (None if none), the caller's own copy.
        A seal reads the same inode about a dozen times over its transactions (the
        mirror's replay too), so the record last decoded (or written) for each inode is
        kept beside its bytes and used again while the stored bytes are those bytes: no
        invalidation to get wrong, in any transaction of any process."""
        v = txn.get(k64(ino), db=self.db["inodes"])
        if v is None:
            return None
        memo = self._inodes.get(ino)
        if memo is None or memo[0] != v:
            memo = (v, Inode.from_bytes(v))
            self._remember(ino, memo)
        return memo[1].copy()

    def listing_inode(self, txn, ino):
        """Inode ``ino`` as a directory listing shows it (Inode.from_bytes ``listing``: the
        stat fields only), or None. Not memoized: a listing reads each entry once."""
        v = txn.get(k64(ino), db=self.db["inodes"])
        return None if v is None else Inode.from_bytes(v, listing=True)

    def inode_path(self, txn, ino):
        """(whether it is a record, its path) of inode ``ino`` without decoding the rest of
        it (inode.stored_path); None if there is no such inode."""
        v = txn.get(k64(ino), db=self.db["inodes"])
        return None if v is None else stored_path(v)

    def put_inode(self, txn, rec):
        raw = rec.to_bytes()
        txn.put(k64(rec.ino), raw, db=self.db["inodes"])
        self._remember(rec.ino, (raw, rec.copy()))

    def drop_inode(self, txn, ino):
        txn.delete(k64(ino), db=self.db["inodes"])
        self._inodes.pop(ino, None)

    def _remember(self, ino, memo):
        if len(self._inodes) >= INODE_MEMO and ino not in self._inodes:
            self._inodes.clear()  # a bound, not a policy: the next reads decode again
        self._inodes[ino] = memo

    def lookup(self, txn, parent, name):
        v = txn.get(k64(parent) + name, db=self.db["dirents"])
        return None if v is None else U64x2.unpack(v)  # (ino, cookie)

    def items(self, txn, name):
        """Every (key, value) of database ``name`` in key order, as raw bytes: for checks
        that walk a whole database (scrub's index comparison) without reaching for LMDB
        themselves. Nothing for a table an older index lacks."""
        db = self.db[name]
        return iter(()) if db is None else iter(txn.cursor(db=db))

    def has_table(self, name):
        return self.db[name] is not None

    def layout(self, txn):
        return self.meta(txn, "layout", 1)

    def times_in_order(self, txn):
        """Whether every event's time is at or after the one before it (and so every
        record's commit time at or after the one of the serial before): searches by time
        may then bisect. Known only to an index of this layout (its replay checked)."""
        return self.layout(txn) >= LAYOUT and self.meta(txn, "time_went_back") is None

    def need_layout(self, txn, what):
        if self.layout(txn) < LAYOUT or not all(self.has_table(n) for n in LAYOUT_2_DBS):
            raise StoreError(
                f"{what} needs the index's reference counts, which this unit's index (made by "
                f"an older wormfs) lacks: mount the store once (its daemon opens both units "
                f"writable) and the index is rebuilt with them from the log")

    def chunk_refs(self, txn, chunk_id):
        """How many records that are not disposed list ``chunk_id`` (0 if none)."""
        v = txn.get(chunk_id, db=self.db["chunkrefs"])
        return 0 if v is None else U32.unpack(v)[0]

    def undisposed(self, txn, after=0):
        """Yield the serials of records deleted and not disposed yet, above ``after``."""
        cur = txn.cursor(db=self.db["undisposed"])
        if not cur.set_range(k64(after + 1)):
            return
        for key in cur.iternext(values=False):
            yield U64.unpack(key)[0]

    def inos_about(self, txn, ev):
        """The inodes event ``ev`` is about (events.subjects), its serials mapped to their
        records' inodes: what ``subjects`` holds for it. Numbers out of a key's range (a kept
        refusal can be malformed) name nothing."""
        inos, serials = subjects(ev)
        for serial in serials:
            ino = self.serial_ino(txn, serial) if 0 <= serial < 1 << 64 else None
            if ino is not None:
                inos.add(ino)
        return {i for i in inos if 0 <= i < 1 << 64}

    def events_about(self, txn, ino):
        """Yield the seqs of the events about file ``ino`` (``subjects``), in order."""
        cur = txn.cursor(db=self.db["subjects"])
        prefix = k64(ino)
        if not cur.set_range(prefix):
            return
        for key in cur.iternext(values=False):
            if key[:8] != prefix:
                break
            yield U64.unpack(key[8:])[0]

    def manifest_ids(self, txn, serial):
        """The distinct chunk ids a record lists, in the order they first appear."""
        return list(dict.fromkeys(cid for _, _, cid in self.manifest_from(txn, serial, 0)))

    def list_dir(self, txn, parent, after_cookie=0):
        """Yield (cookie, name, ino) in cookie order, strictly after ``after_cookie``."""
        cur = txn.cursor(db=self.db["dirlist"])
        prefix = k64(parent)
        if not cur.set_range(k64x2(parent, after_cookie + 1)):
            return
        for key, name in cur:
            if key[:8] != prefix:
                break
            ino, _ = self.lookup(txn, parent, name)
            yield U64.unpack(key[8:])[0], name, ino

    def dir_is_empty(self, txn, parent):
        cur = txn.cursor(db=self.db["dirlist"])
        return not (cur.set_range(k64x2(parent, 0)) and cur.key()[:8] == k64(parent))

    def holds_records(self, txn, dir_ino):
        """Whether any record (sealed, not deleted) lies below a directory."""
        stack = [dir_ino]
        while stack:
            for _, _, ino in self.list_dir(txn, stack.pop()):
                rec = self.inode(txn, ino)
                if rec.is_dir:
                    stack.append(ino)
                elif rec.sealed:
                    return True
        return False

    def chunk(self, txn, chunk_id):
        v = txn.get(chunk_id, db=self.db["chunks"])
        return None if v is None else CHUNK_LOC.unpack(v)  # (segno, offset, length)

    def manifest_from(self, txn, serial, offset):
        """Yield (start, length, chunk_id) of the record's chunks from the one holding
        ``offset`` onward."""
        cur = txn.cursor(db=self.db["manifests"])
        if not cur.set_range(k64x2(serial, offset + 1)):
            return
        for key, val in cur:
            s, end = U64x2.unpack(key)
            if s != serial:
                break
            cid, length = MANIFEST_VAL.unpack(val)
            yield end - length, length, cid

    def serial_ino(self, txn, serial):
        v = txn.get(k64(serial), db=self.db["serials"])
        return None if v is None else U64.unpack(v)[0]

    def serials(self, txn, first=1, last=None):
        """Yield (serial, ino) of every record ever sealed, in serial order, within
        [first, last]."""
        cur = txn.cursor(db=self.db["serials"])
        if not cur.set_range(k64(first)):
            return
        for key, val in cur:
            serial = U64.unpack(key)[0]
            if last is not None and serial > last:
                break
            yield serial, U64.unpack(val)[0]

    def event_pos(self, txn, seq):
        v = txn.get(k64(seq), db=self.db["events"])
        return None if v is None else U64x2.unpack(v)

    def expiring(self, txn, before_us, after=None):
        """Yield (retain_until_us, serial) of records whose retention ends before a time, in
        that order; with ``after`` (such a pair), only those past it."""
        cur = txn.cursor(db=self.db["expiry"])
        if after is None:
            if not cur.first():
                return
        elif not cur.set_range(k64x2(after[0], after[1] + 1)):
            return
        for key, _ in cur:
            until, serial = U64x2.unpack(key)
            if until >= before_us:
                break
            yield until, serial

    def latest_expiry(self, txn):
        """The latest finite retain-until (us) of any record, or 0 if none has one."""
        cur = txn.cursor(db=self.db["expiry"])
        return U64.unpack(cur.key()[:8])[0] if cur.last() else 0

    def unsealed(self, txn):
        """Yield (ino, state) of every file that is not a record yet."""
        for key, state in txn.cursor(db=self.db["unsealed"]):
            yield U64.unpack(key)[0], State(state.decode())

    def dump(self):
        """Every key and value of every database: what ``rebuild-index`` must reproduce."""
        out = {}
        with self.read() as txn:
            for name in DBS:
                out[name] = list(self.items(txn, name))
        return out
