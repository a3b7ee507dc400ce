"""An inode as the index keeps it: a typed record instead of a dict of literals.

``Inode`` has one slot per field of docs/FORMAT.md "Inodes"; ``Kind`` and ``State`` name the
values a kind and a state can take (their ``value`` is what the index stores, and what
``user.worm.state`` shows). Only replay.py changes inodes that are stored; everyone else reads
them, and a record read from the index is the reader's own copy (Index.inode), so changing
it (the live size of an open file, say) changes nothing stored.

Stored form (docs/FORMAT.md "Inodes"): ``to_bytes`` writes the binary record, a fixed
header and the optional fields it flags; ``from_bytes`` reads it, and reads the JSON object
older wormfs wrote (its first byte is ``{``, never the binary record's version byte), so an
index need not be rebuilt to be read. An inode whose values the binary record cannot hold
(an integer out of range, a digest that is not 64 hex digits: only a forged event could
make one) is stored as that JSON object instead. ``to_json`` writes the fields that hold
something (a field that is None, an empty hold list or ``subdirs`` 0 is left out);
``from_json`` takes any subset and fills in those defaults, so an index written with every
key present (wormfs before the typed record) reads the same.

Why binary: the JSON object was 670 bytes of a 2.5 KiB record's 1.5 KB of index per unit
(bench/RESULTS.md, "A million records"), and every walk of the store reads it from disk.
"""
import enum
import json
import struct


class _Text(str, enum.Enum):
    """A str whose text is its value everywhere (str(), format(), JSON), on every Python we
    support (3.10's and 3.12's Enum formatting differ)."""

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)


class Kind(_Text):
    FILE = "f"
    DIR = "d"


class State(_Text):
    """A file's state; directories have none (None)."""
    OPEN = "open"        # being written; becomes a record when closed
    SCRATCH = "scratch"  # a temporary name (scratch patterns): never a record
    SEALED = "sealed"    # a record
    DELETED = "deleted"  # a record deleted after its retention (kept for the audit trail)


UNSEALED = frozenset((State.OPEN, State.SCRATCH))

# (field, default) in the order of docs/FORMAT.md. A default is what a stored inode that
# lacks the field means; ``holds`` is a fresh dict per file (see __init__).
_FIELDS = (
    ("ino", None), ("kind", None), ("parent", None), ("name", None), ("mode", 0),
    ("uid", 0), ("gid", 0), ("size", 0), ("ctime", 0), ("mtime", 0), ("atime", 0),
    ("cookie", 0), ("creator", None),
    # files
    ("state", None), ("retention", None), ("holds", None),
    # records
    ("serial", None), ("committed", None), ("blake3", None), ("path", None),
    ("writer", None), ("seal_seq", None), ("recovered_from", None), ("deleted", None),
    ("disposed", None),
    # directories
    ("subdirs", 0),
)
_NAMES = tuple(f for f, _ in _FIELDS)
_KINDS = {k.value: k for k in Kind}     # a stored value that is none of these: KeyError
_STATES = {s.value: s for s in State}
_new = object.__new__


class Inode:
    """One file or directory. ``orphan`` is not stored: True for the view of a file
    unlinked while the mount still had it open (st_nlink 0)."""
    __slots__ = _NAMES + ("orphan",)

    def __init__(self, **fields):
        for name, default in _FIELDS:
            setattr(self, name, fields.pop(name, default))
        self.orphan = fields.pop("orphan", False)
        if fields:
            raise TypeError(f"Inode has no field {', '.join(sorted(fields))}")
        if self.kind is Kind.FILE and self.holds is None:
            self.holds = {}

    # -- what it is ------------------------------------------------------------------------

    @property
    def is_dir(self):
        return self.kind is Kind.DIR

    @property
    def is_file(self):
        return self.kind is Kind.FILE

    @property
    def sealed(self):
        """A record (sealed, not deleted)."""
        return self.state is State.SEALED

    @property
    def unsealed(self):
        """A file that is not a record yet (open or scratch)."""
        return self.state in UNSEALED

    @property
    def ever_sealed(self):
        """A record, or one deleted after its retention (it has a serial and a manifest
        until disposed)."""
        return self.state is State.SEALED or self.state is State.DELETED

    # -- copies and the stored form -------------------------------------------------------
    # Written out field by field: these run a dozen times per seal, and a loop over the
    # slots with getattr/setattr cost three times as much; even a loop over to_json's
    # optional fields alone cost 1.1% of a file's instructions (bench/instructions.py).
    # test_inode_record_fields_all_survive_copy_and_storage keeps them complete.

    def copy(self, **changes):
        """A copy that shares nothing a caller may change in place (holds, retention)."""
        n = _new(Inode)
        n.ino, n.kind, n.parent, n.name = self.ino, self.kind, self.parent, self.name
        n.mode, n.uid, n.gid, n.size = self.mode, self.uid, self.gid, self.size
        n.ctime, n.mtime, n.atime, n.cookie = self.ctime, self.mtime, self.atime, self.cookie
        n.creator, n.state, n.serial = self.creator, self.state, self.serial
        r = self.retention
        n.retention = r.copy() if type(r) is dict else r
        h = self.holds
        n.holds = None if h is None else h.copy()
        n.committed, n.blake3, n.path = self.committed, self.blake3, self.path
        n.writer, n.seal_seq, n.recovered_from = self.writer, self.seal_seq, self.recovered_from
        n.deleted, n.disposed, n.subdirs = self.deleted, self.disposed, self.subdirs
        n.orphan = self.orphan
        for name, value in changes.items():
            setattr(n, name, value)
        return n

    def to_json(self):
        """The dict stored as JSON (docs/FORMAT.md "Inodes"): a field holding nothing is
        left out (None, an empty ``holds``, ``subdirs`` 0)."""
        d = {"ino": self.ino, "kind": self.kind.value, "parent": self.parent,
             "name": self.name, "mode": self.mode, "uid": self.uid, "gid": self.gid,
             "size": self.size, "ctime": self.ctime, "mtime": self.mtime,
             "atime": self.atime, "cookie": self.cookie}
        if self.creator is not None:
            d["creator"] = self.creator
        if self.state is not None:
            d["state"] = self.state.value
        if self.retention is not None:
            d["retention"] = self.retention
        if self.holds:
            d["holds"] = self.holds
        if self.serial is not None:
            d["serial"] = self.serial
        if self.committed is not None:
            d["committed"] = self.committed
        if self.blake3 is not None:
            d["blake3"] = self.blake3
        if self.path is not None:
            d["path"] = self.path
        if self.writer is not None:
            d["writer"] = self.writer
        if self.seal_seq is not None:
            d["seal_seq"] = self.seal_seq
        if self.recovered_from is not None:
            d["recovered_from"] = self.recovered_from
        if self.deleted is not None:
            d["deleted"] = self.deleted
        if self.disposed is not None:
            d["disposed"] = self.disposed
        if self.subdirs:
            d["subdirs"] = self.subdirs
        return d

    def to_bytes(self):
        """The stored form: the binary record (FORMAT.md), or JSON where it cannot be."""
        try:
            return _pack(self)
        except (struct.error, TypeError, ValueError, KeyError, AttributeError):
            return _ENCODE(self.to_json()).encode()

    @classmethod
    def from_bytes(cls, v, listing=False):
        """The Inode stored as ``v``. With ``listing``, a directory listing's view: the
        stat fields only (kind, state, mode, owner, size, times, retention, subdirs); name,
        path, holds and the actors are left None. It is for building stat attributes and
        nothing else: never stored, never handed on."""
        if v[:1] == b"{":
            return cls.from_json(json.loads(v))
        return _unpack(cls, v, listing)

    @classmethod
    def from_json(cls, d):
        """An Inode from its stored dict; a field it lacks takes its default."""
        g = d.get
        n = _new(cls)
        n.ino, n.kind, n.parent, n.name = g("ino"), _KINDS[g("kind")], g("parent"), g("name")
        n.mode, n.uid, n.gid, n.size = g("mode", 0), g("uid", 0), g("gid", 0), g("size", 0)
        n.ctime, n.mtime, n.atime = g("ctime", 0), g("mtime", 0), g("atime", 0)
        n.cookie, n.creator = g("cookie", 0), g("creator")
        state = g("state")
        n.state = None if state is None else _STATES[state]
        n.retention, n.holds = g("retention"), g("holds")
        if n.holds is None and n.kind is Kind.FILE:
            n.holds = {}
        n.serial, n.committed, n.blake3, n.path = g("serial"), g("committed"), g("blake3"), \
            g("path")
        n.writer, n.seal_seq, n.recovered_from = g("writer"), g("seal_seq"), \
            g("recovered_from")
        n.deleted, n.disposed, n.subdirs = g("deleted"), g("disposed"), g("subdirs", 0)
        n.orphan = False
        return n

    def __eq__(self, other):
        if not isinstance(other, Inode):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in Inode.__slots__)

    __hash__ = None  # mutable

    def __repr__(self):
        return f"Inode({', '.join(f'{k}={v!r}' for k, v in self.to_json().items())})"


# -- the binary record (docs/FORMAT.md "Inodes") ---------------------------------------------
# version, kind, state, flags, then ino, parent, mode, uid, gid, size, ctime, mtime, atime,
# cookie; little-endian. Then each optional field whose flag bit is set: first the ones of a
# fixed size, in the order of _FIXED; then name and path (a u16 or u32 length and UTF-8),
# and the JSON ones (a u32 length and the JSON), in _pack's order.

VERSION = 1
_HEAD = struct.Struct("<BBBHQQIIIQqqqQ")
_H, _I = struct.Struct("<H"), struct.Struct("<I")
_STATE_CODES = {None: 0, State.OPEN: 1, State.SCRATCH: 2, State.SEALED: 3, State.DELETED: 4}
_CODE_STATES = {c: s for s, c in _STATE_CODES.items()}
_KIND_CODES = {Kind.FILE: ord("f"), Kind.DIR: ord("d")}
_CODE_KINDS = {c: k for k, c in _KIND_CODES.items()}
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

# (flag bit, field, struct format) of the optional fields of a fixed size, in stored order.
F_SERIAL, F_COMMITTED, F_BLAKE3, F_SEAL_SEQ = 1, 2, 4, 8
F_DELETED, F_DISPOSED, F_SUBDIRS, F_UNTIL = 16, 32, 64, 128
F_NAME, F_PATH, F_RETENTION, F_HOLDS = 256, 512, 1024, 2048
F_CREATOR, F_WRITER, F_WRITER_IS_CREATOR, F_RECOVERED = 4096, 8192, 16384, 32768
_FIXED = ((F_SERIAL, "serial", "Q"), (F_COMMITTED, "committed", "q"),
          (F_BLAKE3, "blake3", "32s"), (F_SEAL_SEQ, "seal_seq", "Q"),
          (F_DELETED, "deleted", "q"), (F_DISPOSED, "disposed", "q"),
          (F_SUBDIRS, "subdirs", "I"), (F_UNTIL, "until", "q"))
_FIXED_MASK = 255
_A_RECORD = F_SERIAL | F_COMMITTED | F_BLAKE3 | F_SEAL_SEQ | F_UNTIL   # a record, retained
_fixed_structs = {}   # the fixed fields' flags -> (Struct of them, their names): at most 256


def _fixed(flags):
    got = _fixed_structs.get(flags)
    if got is None:
        fields = [(name, fmt) for bit, name, fmt in _FIXED if flags & bit]
        got = _fixed_structs[flags] = (struct.Struct("<" + "".join(f for _, f in fields)),
                                       tuple(name for name, _ in fields))
    return got


# The retention most records have: a date, nothing else. Stored as one integer (F_UNTIL).
_UNTIL_KEYS = ("event_date", "event_period", "indefinite", "until")


def _until(value):
    """The retention a record with only a retain-until date has (F_UNTIL)."""
    return {"event_date": None, "event_period": None, "indefinite": False, "until": value}


def _texts(v, off, flags):
    """(name bytes or None, path bytes or None, the offset past them) of a record whose
    name starts at ``off``, if it has one."""
    name = path = None
    if flags & F_NAME:
        ln = _H.unpack_from(v, off)[0]
        name, off = v[off + 2:off + 2 + ln], off + 2 + ln
    if flags & F_PATH:
        ln = _I.unpack_from(v, off)[0]
        path, off = v[off + 4:off + 4 + ln], off + 4 + ln
    return name, path, off


def _int(v):
    if type(v) is not int:
        raise TypeError("not an int")
    return v


def _json(v):
    b = _ENCODE(v).encode()
    return _I.pack(len(b)) + b


def _pack(n):
    # Written out field by field, as Inode.copy is: this runs at every put_inode (several
    # per seal), and a loop over a field table with getattr costs more than the packing.
    # test_any_record_reads_back_exactly keeps it and _unpack in step.
    flags, fixed, tail = 0, [], []
    if n.serial is not None:
        flags |= F_SERIAL
        fixed.append(_int(n.serial))
    if n.committed is not None:
        flags |= F_COMMITTED
        fixed.append(_int(n.committed))
    if n.blake3 is not None:
        digest = bytes.fromhex(n.blake3)
        if len(digest) != 32 or digest.hex() != n.blake3:
            raise ValueError("not a digest in lowercase hex")
        flags |= F_BLAKE3
        fixed.append(digest)
    if n.seal_seq is not None:
        flags |= F_SEAL_SEQ
        fixed.append(_int(n.seal_seq))
    if n.deleted is not None:
        flags |= F_DELETED
        fixed.append(_int(n.deleted))
    if n.disposed is not None:
        flags |= F_DISPOSED
        fixed.append(_int(n.disposed))
    if n.subdirs:
        flags |= F_SUBDIRS
        fixed.append(_int(n.subdirs))
    r = n.retention
    if r is not None:
        if type(r) is dict and len(r) == 4 and r.get("event_date") is None and \
                r.get("event_period") is None and r.get("indefinite") is False and \
                type(r.get("until")) is int and all(k in r for k in _UNTIL_KEYS):
            flags |= F_UNTIL
            fixed.append(r["until"])
        else:
            flags |= F_RETENTION
    if n.name is not None:
        b = n.name.encode("utf-8", "surrogatepass")
        flags |= F_NAME
        tail.append(_H.pack(len(b)) + b)
    if n.path is not None:
        b = n.path.encode("utf-8", "surrogatepass")
        flags |= F_PATH
        tail.append(_I.pack(len(b)) + b)
    if flags & F_RETENTION:
        tail.append(_json(r))
    if n.holds:
        flags |= F_HOLDS
        tail.append(_json(n.holds))
    creator = None
    if n.creator is not None:
        flags |= F_CREATOR
        creator = _json(n.creator)
        tail.append(creator)
    if n.writer is not None:
        writer = _json(n.writer)
        if writer == creator:     # the same JSON, not only equal values (1 == True)
            flags |= F_WRITER_IS_CREATOR
        else:
            flags |= F_WRITER
            tail.append(writer)
    if n.recovered_from is not None:
        flags |= F_RECOVERED
        tail.append(_json(n.recovered_from))
    head = _HEAD.pack(VERSION, _KIND_CODES[n.kind], _STATE_CODES[n.state], flags,
                      _int(n.ino), _int(n.parent), _int(n.mode), _int(n.uid), _int(n.gid),
                      _int(n.size), _int(n.ctime), _int(n.mtime), _int(n.atime),
                      _int(n.cookie))
    return head + _fixed(flags & _FIXED_MASK)[0].pack(*fixed) + b"".join(tail)


def _unpack(cls, v, listing=False):
    (version, kind, state, flags, ino, parent, mode, uid, gid, size, ctime, mtime, atime,
     cookie) = _HEAD.unpack_from(v)
    if version != VERSION:
        raise ValueError(f"inode record version {version}")
    n = _new(cls)
    n.kind, n.state = _CODE_KINDS[kind], _CODE_STATES[state]
    n.ino, n.parent, n.mode, n.uid, n.gid, n.size = ino, parent, mode, uid, gid, size
    n.ctime, n.mtime, n.atime, n.cookie = ctime, mtime, atime, cookie
    n.serial = n.committed = n.blake3 = n.seal_seq = n.deleted = n.disposed = None
    n.name = n.path = n.retention = n.creator = n.writer = n.recovered_from = None
    n.holds = {} if n.kind is Kind.FILE else None
    n.subdirs, n.orphan = 0, False
    fixed = flags & _FIXED_MASK
    st, names = _fixed(fixed)
    off = _HEAD.size + st.size
    if fixed == _A_RECORD:    # most of a store: written out, not looped over
        n.serial, n.committed, digest, n.seal_seq, until = st.unpack_from(v, _HEAD.size)
        n.blake3 = digest.hex()
        n.retention = _until(until)
    elif names:
        for name, value in zip(names, st.unpack_from(v, _HEAD.size)):
            if name == "until":
                n.retention = _until(value)
            elif name == "blake3":
                n.blake3 = value.hex()
            else:
                setattr(n, name, value)
    name, path, off = _texts(v, off, flags)
    if listing:
        # The JSON parts are most of a decode's time; a listing of a big directory needs
        # none of them but an odd retention.
        if flags & F_RETENTION:
            n.retention = _unjson(v, off)[0]
        return n
    if name is not None:
        n.name = name.decode("utf-8", "surrogatepass")
    if path is not None:
        n.path = path.decode("utf-8", "surrogatepass")
    if flags & F_RETENTION:
        n.retention, off = _unjson(v, off)
    if flags & F_HOLDS:
        n.holds, off = _unjson(v, off)
    if flags & F_CREATOR:
        n.creator, off = _unjson(v, off)
        if flags & F_WRITER_IS_CREATOR:
            n.writer = n.creator   # shared, as Inode.copy shares them: neither is changed
    if flags & F_WRITER:
        n.writer, off = _unjson(v, off)
    if flags & F_RECOVERED:
        n.recovered_from, off = _unjson(v, off)
    if off != len(v):
        raise ValueError("inode record has bytes past its last field")
    return n


_DECODE = json.JSONDecoder().decode   # json.loads less its checks of the bytes' encoding


def _unjson(v, off):
    ln = _I.unpack_from(v, off)[0]
    return _DECODE(v[off + 4:off + 4 + ln].decode()), off + 4 + ln


def stored_path(v):
    """(whether it is a record, its path) of a stored inode, without decoding the rest: a
    search by path reads every inode, and decodes only those whose path matches."""
    if v[:1] == b"{":
        n = Inode.from_bytes(v)
        return n.state is State.SEALED, n.path
    flags = _H.unpack_from(v, 3)[0]
    _, path, _ = _texts(v, _HEAD.size + _fixed(flags & _FIXED_MASK)[0].size, flags)
    sealed = v[2] == _STATE_CODES[State.SEALED]
    return sealed, None if path is None else path.decode("utf-8", "surrogatepass")
