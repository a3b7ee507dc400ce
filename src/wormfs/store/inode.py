"""An inode as the index keeps it: a typed record instead of a dict of literals.

``Inode`` has one slot per field of docs/FORMAT.md "Inodes"; ``Kind`` and ``State`` name the
values a kind and a state can take (their ``value`` is what the index stores, and what
``user.worm.state`` shows). Only replay.py changes inodes that are stored; everyone else reads
them, and a record read from the index is the reader's own copy (Index.inode), so changing
it (the live size of an open file, say) changes nothing stored.

Stored form: the JSON object FORMAT.md describes, keys sorted. ``to_json`` writes the fields
that hold something (a field that is None, an empty hold list or ``subdirs`` 0 is left
out); ``from_json`` takes any subset and fills in those defaults, so an index written with
every key present (wormfs before this module) reads the same.
"""
import enum


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
