"""What the primary knows about the objects it wrote to its S3 unit (a SQLite file beside the
shipping cache, ``s3state.db``). It can be rebuilt from the bucket (a listing and a HEAD per
object), so it is a cache like the index, never the truth.

    objects   rel TEXT PRIMARY KEY   key under the unit's prefix: 'seg/S', 'dseg/S/Q', 'tail/S/O'
                                     or 'head/Q'
              segno, offset, length  the log bytes it holds (a whole segment or a redacted
                                     one: offset 0; a head object: segment 0)
              version TEXT           the version wormfs wrote and verified
              b3 TEXT                BLAKE3 of its bytes
              retain_until INTEGER   its COMPLIANCE retain-until (us), as read back
              legal_hold INTEGER     1 while a legal hold is on it
              superseded INTEGER     1 once a later object carries its bytes: a tail once its
                                     segment's object or a redacted copy is stored, a seg/S or
                                     dseg/S/Q once a newer redacted copy of S is. A superseded
                                     object is no longer lengthened, and once its lock ends
                                     a later dispose deletes it (s3target.expire)
    holds     rel, ino               records that keep a legal hold on the object
    meta      k TEXT PRIMARY KEY, v TEXT (JSON)
              end        [segno, offset] just past the last frame the bucket holds (verified)
              head       [seq, hash] the last event the bucket holds
              floor_us   every live object is locked at least until this (see s3target.py)
"""
import json
import os
import sqlite3

STATE_FILE = "s3state.db"   # beside the unit copy it describes

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    rel TEXT PRIMARY KEY, segno INTEGER NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, version TEXT NOT NULL, b3 TEXT NOT NULL,
    retain_until INTEGER NOT NULL, legal_hold INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS objects_place ON objects (segno, offset);
CREATE TABLE IF NOT EXISTS holds (rel TEXT NOT NULL, ino INTEGER NOT NULL,
    PRIMARY KEY (rel, ino));
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


def seg_rel(segno):
    return f"seg/{segno:010d}"


def tail_rel(segno, offset):
    return f"tail/{segno:010d}/{offset:012d}"


def dseg_rel(segno, seq):
    """Segment S from its start, as it is once dispose event ``seq`` destroyed its frames."""
    return f"dseg/{segno:010d}/{seq:012d}"


class Obj:
    __slots__ = ("rel", "segno", "offset", "length", "version", "b3", "retain_until",
                 "legal_hold", "superseded")

    def __init__(self, row):
        for name, v in zip(self.__slots__, row):
            setattr(self, name, v)

    @property
    def end(self):
        return self.offset + self.length


_COLS = ", ".join(Obj.__slots__)


class S3State:
    def __init__(self, path, readonly=False):
        uri = f"file:{path}{'?mode=ro' if readonly else ''}"
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10,
                                  check_same_thread=False)
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)

    def close(self):
        self.db.close()

    @staticmethod
    def remove(path):
        """Delete a state file with its SQLite journal files."""
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)

    # -- meta -----------------------------------------------------------------------------

    def get(self, k, default=None):
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, k, v):
        self.db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (k, json.dumps(v)))

    # -- objects --------------------------------------------------------------------------

    def add(self, rel, segno, offset, length, version, b3, retain_until, legal_hold):
        self.db.execute(f"INSERT OR REPLACE INTO objects ({_COLS}) VALUES (?,?,?,?,?,?,?,?,0)",
                        (rel, segno, offset, length, version, b3, retain_until,
                         int(legal_hold)))

    def obj(self, rel):
        row = self.db.execute(f"SELECT {_COLS} FROM objects WHERE rel=?", (rel,)).fetchone()
        return None if row is None else Obj(row)

    def carrier(self, segno, offset):
        """The live object holding log position (segno, offset). The live objects of a
        segment never overlap: its segment object or its newest redacted copy, and the
        tails past the end of that (all of them before there is one)."""
        row = self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE segno=? AND offset<=? AND superseded=0 "
            f"AND rel NOT LIKE 'head/%' ORDER BY offset DESC, length DESC LIMIT 1",
            (segno, offset)).fetchone()
        if row is None:
            return None
        o = Obj(row)
        return o if offset < o.end else None

    def holding(self, segno, offset):
        """Every object still in the bucket that holds log position (segno, offset),
        superseded ones included: where a disposed chunk's bytes still are."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE segno=? AND offset<=? AND offset+length>? "
            f"AND rel NOT LIKE 'head/%' ORDER BY rel", (segno, offset, offset))]

    def live_in(self, segno, end):
        """The live objects of a segment that lie before ``end``."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE segno=? AND superseded=0 AND offset+length<=? "
            f"AND rel NOT LIKE 'head/%' ORDER BY offset", (segno, end))]

    def expirable(self, now_us, limit):
        """Superseded objects whose locks have ended by ``now_us`` and that no legal hold
        keeps: nothing of the log needs them any more."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE superseded=1 AND legal_hold=0 AND "
            f"retain_until<=? ORDER BY segno, offset, rel LIMIT ?", (now_us, limit))]

    def live(self):
        """Every object that must keep its data: segment objects and the tails not yet
        superseded by one."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE superseded=0 ORDER BY segno, offset")]

    def all(self):
        """Every object wormfs wrote, superseded tails included."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects ORDER BY segno, offset, rel")]

    def locked_short(self, until, limit):
        """Up to ``limit`` live objects locked short of ``until``."""
        return [Obj(r) for r in self.db.execute(
            f"SELECT {_COLS} FROM objects WHERE superseded=0 AND retain_until<? "
            f"ORDER BY segno, offset LIMIT ?", (until, limit))]

    def set_lock(self, rel, retain_until=None, legal_hold=None):
        if retain_until is not None:
            self.db.execute("UPDATE objects SET retain_until=? WHERE rel=?",
                            (retain_until, rel))
        if legal_hold is not None:
            self.db.execute("UPDATE objects SET legal_hold=? WHERE rel=?",
                            (int(legal_hold), rel))

    def drop(self, rel):
        """Forget an object: one that is not the unit's (a forged one a reader ignored), or
        one deleted once its lock ended."""
        self.db.execute("DELETE FROM objects WHERE rel=?", (rel,))

    def supersede(self, segno, end, keep):
        """Mark the objects of segment ``segno`` that end at or before ``end`` superseded,
        but ``keep`` (the object that now carries their bytes)."""
        self.db.execute("UPDATE objects SET superseded=1 WHERE segno=? AND offset+length<=? "
                        "AND rel<>? AND rel NOT LIKE 'head/%'", (segno, end, keep))

    def mark_superseded(self, rel):
        self.db.execute("UPDATE objects SET superseded=1 WHERE rel=?", (rel,))

    # -- legal holds ----------------------------------------------------------------------

    def holders(self, rel):
        return {r[0] for r in self.db.execute("SELECT ino FROM holds WHERE rel=?", (rel,))}

    def set_holder(self, rel, ino, on):
        if on:
            self.db.execute("INSERT OR IGNORE INTO holds (rel, ino) VALUES (?, ?)", (rel, ino))
        else:
            self.db.execute("DELETE FROM holds WHERE rel=? AND ino=?", (rel, ino))

    def move_holders(self, from_rels, to_rel):
        for rel in from_rels:
            for ino in self.holders(rel):
                self.set_holder(to_rel, ino, True)

    def transaction(self):
        return _Txn(self.db)


class _Txn:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, et, e, tb):
        self.db.execute("COMMIT" if et is None else "ROLLBACK")
