"""Applying frames to the index: the one place where the log's meaning is defined.

The live store and ``rebuild-index`` both go through ``apply_chunk`` and ``apply_event``, so a
rebuilt index answers exactly like the live one. Functions here trust the event: the store
checked the rules before appending it. They must be deterministic: only the event and the
index may be read (no clock, no staging, no settings outside the log).
"""
from .. import retention
from ..errors import IntegrityError
from . import events as E
from .index import CHUNK_LOC, LAYOUT, MANIFEST_VAL, U32, U64, U64x2, k64, k64x2
from .inode import Inode, Kind, State

ROOT_INO = 1


class Replayer:
    def __init__(self, index, skip=frozenset()):
        """``skip``: the seqs of events a mirror refused but kept in its log so the chain
        runs on (its local chain lists them, localchain.kept_refusals): they take their place
        in the chain and change nothing else. The set may grow while the replayer lives."""
        self.ix = index
        self.db = index.db
        self.skip = skip

    # -- chunks ---------------------------------------------------------------------------

    def apply_chunk(self, txn, chunk_id, segno, offset, length):
        return self.apply_chunks(txn, [(chunk_id, segno, offset, length)]) == 1

    def apply_chunks(self, txn, located):
        """Index chunk frames given as (id, segno, offset, length); returns how many were
        new. The first copy of a chunk wins; a later duplicate frame is dead weight."""
        db = self.db["chunks"]
        new = stored = 0
        for chunk_id, segno, offset, length in located:
            if txn.get(chunk_id, db=db) is not None:
                continue
            txn.put(chunk_id, CHUNK_LOC.pack(segno, offset, length), db=db)
            new += 1
            stored += length
        if new:
            stats = self.ix.meta(txn, "stats")
            stats["chunks"] += new
            stats["stored_bytes"] += stored
            self.ix.put_meta(txn, "stats", stats)
        return new

    # -- events ---------------------------------------------------------------------------

    def apply_event(self, txn, ev, ev_hash, segno, offset):
        last_seq = self.ix.meta(txn, "last_seq", 0)
        last_hash = self.ix.meta(txn, "last_hash", E.GENESIS)
        if ev["seq"] != last_seq + 1 or ev["prev"] != last_hash:
            raise IntegrityError(
                f"event chain broken at seq {ev['seq']} (segment {segno} offset {offset}): "
                f"expected seq {last_seq + 1} after {last_hash[:16]}")
        if ev["seq"] not in self.skip:
            handler = getattr(self, "_ev_" + ev["type"], None)
            if handler is not None:
                handler(txn, ev)
        self._index_subjects(txn, ev)
        txn.put(k64(ev["seq"]), U64x2.pack(segno, offset), db=self.db["events"])
        self.ix.put_meta(txn, "last_seq", ev["seq"])
        self.ix.put_meta(txn, "last_hash", ev_hash)
        t = ev.get("time_us")
        if isinstance(t, int):  # a kept refused event may lack it
            if t < self.ix.meta(txn, "last_time", 0):
                # Logs written before the journal kept times in order can step back where
                # the clock was held at a bucket's time: then searches by time may not
                # bisect (Index.times_in_order).
                self.ix.put_meta(txn, "time_went_back", ev["seq"])
            self.ix.put_meta(txn, "last_time", t)

    # -- helpers --------------------------------------------------------------------------

    def _index_subjects(self, txn, ev):
        # Every event, a kept refusal too: the audit trail holds it, so a record's history
        # does. Called after the handler, which is what maps a new serial to its inode.
        seq, db = ev["seq"], self.db["subjects"]
        for ino in self.ix.inos_about(txn, ev):
            txn.put(k64x2(ino, seq), b"", db=db)

    def _link(self, txn, parent, name, ino, cookie):
        nb = E.name_bytes(name)
        txn.put(k64(parent) + nb, U64x2.pack(ino, cookie), db=self.db["dirents"])
        txn.put(k64x2(parent, cookie), nb, db=self.db["dirlist"])

    def _unlink(self, txn, parent, name):
        nb = E.name_bytes(name)
        v = txn.pop(k64(parent) + nb, db=self.db["dirents"])
        if v is not None:
            _, cookie = U64x2.unpack(v)
            txn.delete(k64x2(parent, cookie), db=self.db["dirlist"])

    def _dir_changed(self, txn, ino, t, subdirs=0):
        """An entry was added to or removed from directory ``ino`` at ``t``: its mtime and
        ctime move (POSIX), and its count of subdirectories (for st_nlink) by ``subdirs``."""
        rec = self.ix.inode(txn, ino)
        if rec is None:
            return
        rec.mtime = rec.ctime = t
        if subdirs:
            rec.subdirs = max(0, rec.subdirs + subdirs)
        self.ix.put_inode(txn, rec)

    def _bump_ino(self, txn, ino):
        if ino >= self.ix.meta(txn, "next_ino", ROOT_INO + 1):
            self.ix.put_meta(txn, "next_ino", ino + 1)

    def _set_expiry(self, txn, rec, old_ret):
        if rec.serial is None:
            return
        serial = rec.serial
        if old_ret is not None:
            kind, until = retention.effective(old_ret)
            if kind == "until" and until is not None:
                txn.delete(k64x2(until, serial), db=self.db["expiry"])
        if rec.sealed:
            kind, until = retention.effective(rec.retention)
            if kind == "until" and until is not None:
                txn.put(k64x2(until, serial), b"", db=self.db["expiry"])

    def _add_refs(self, txn, chunk_ids, delta):
        """Count a record in (``delta`` 1) or out (-1) of ``chunkrefs`` for each distinct
        chunk it lists. Counted from manifests alone, whether or not the chunk is indexed:
        a log replayed after its frames were destroyed gives the same counts."""
        db = self.db["chunkrefs"]
        for cid in chunk_ids:
            v = txn.get(cid, db=db)
            n = (0 if v is None else U32.unpack(v)[0]) + delta
            if n > 0:
                txn.put(cid, U32.pack(n), db=db)
            elif v is not None:
                txn.delete(cid, db=db)

    def _set_unsealed(self, txn, ino, state):
        if state is State.OPEN or state is State.SCRATCH:
            txn.put(k64(ino), state.value.encode(), db=self.db["unsealed"])
        else:
            txn.delete(k64(ino), db=self.db["unsealed"])

    def _new_inode(self, ev, kind, **fields):
        t = ev["time_us"]
        return Inode(ino=ev["ino"], kind=kind, parent=ev["parent"], name=ev["name"],
                     mode=ev["mode"], uid=ev["uid"], gid=ev["gid"], size=0, ctime=t, mtime=t,
                     atime=t, cookie=ev["seq"], creator=ev.get("actor"), **fields)

    # -- one method per event type that changes the index (docs/FORMAT.md "Events") -------

    def _ev_unit_init(self, txn, ev):
        self.ix.put_meta(txn, "unit", {k: ev[k] for k in ev
                                       if k not in ("seq", "prev", "time", "time_us", "type")})
        self.ix.put_meta(txn, "settings", ev["settings"])
        self.ix.put_meta(txn, "stats", {"records": 0, "logical_bytes": 0, "chunks": 0,
                                        "stored_bytes": 0})
        self.ix.put_meta(txn, "next_ino", ROOT_INO + 1)
        self.ix.put_meta(txn, "next_serial", 1)
        self.ix.put_meta(txn, "layout", LAYOUT)
        t = ev["time_us"]
        self.ix.put_inode(txn, Inode(ino=ROOT_INO, kind=Kind.DIR, parent=ROOT_INO, name="",
                                     mode=0o755, ctime=t, mtime=t, atime=t))

    def _ev_mkdir(self, txn, ev):
        self.ix.put_inode(txn, self._new_inode(ev, Kind.DIR))
        self._link(txn, ev["parent"], ev["name"], ev["ino"], ev["seq"])
        self._bump_ino(txn, ev["ino"])
        self._dir_changed(txn, ev["parent"], ev["time_us"], subdirs=1)

    def _ev_create(self, txn, ev):
        # retention: None until set on the open file, or resolved at seal
        state = State(ev["state"])
        self.ix.put_inode(txn, self._new_inode(ev, Kind.FILE, state=state))
        self._link(txn, ev["parent"], ev["name"], ev["ino"], ev["seq"])
        self._bump_ino(txn, ev["ino"])
        self._set_unsealed(txn, ev["ino"], state)
        self._dir_changed(txn, ev["parent"], ev["time_us"])

    def _ev_rmdir(self, txn, ev):
        self._unlink(txn, ev["parent"], ev["name"])
        self.ix.drop_inode(txn, ev["ino"])
        self._dir_changed(txn, ev["parent"], ev["time_us"], subdirs=-1)

    def _ev_unlink(self, txn, ev):
        # An open or scratch file given up before it became a record.
        self._unlink(txn, ev["parent"], ev["name"])
        self.ix.drop_inode(txn, ev["ino"])
        self._set_unsealed(txn, ev["ino"], None)
        self._dir_changed(txn, ev["parent"], ev["time_us"])

    def _ev_rename(self, txn, ev):
        t = ev["time_us"]
        if ev.get("replaced"):
            gone = self.ix.inode(txn, ev["replaced"])
            self.ix.drop_inode(txn, ev["replaced"])
            self._set_unsealed(txn, ev["replaced"], None)
            self._unlink(txn, ev["new_parent"], ev["new_name"])
            if gone is not None and gone.is_dir:
                self._dir_changed(txn, ev["new_parent"], t, subdirs=-1)
        self._unlink(txn, ev["parent"], ev["name"])
        self._link(txn, ev["new_parent"], ev["new_name"], ev["ino"], ev["seq"])
        rec = self.ix.inode(txn, ev["ino"])
        rec.parent, rec.name, rec.cookie = ev["new_parent"], ev["new_name"], ev["seq"]
        rec.ctime = t
        self.ix.put_inode(txn, rec)
        moved = 1 if rec.is_dir and ev["parent"] != ev["new_parent"] else 0
        self._dir_changed(txn, ev["parent"], t, subdirs=-moved)
        if ev["new_parent"] != ev["parent"]:
            self._dir_changed(txn, ev["new_parent"], t, subdirs=moved)

    def _ev_state(self, txn, ev):
        # scratch <-> open, when a rename changes whether the name is a scratch name
        rec = self.ix.inode(txn, ev["ino"])
        rec.state = State(ev["state"])
        self.ix.put_inode(txn, rec)
        self._set_unsealed(txn, ev["ino"], rec.state)

    def _ev_setattr(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        for k in ("mode", "uid", "gid", "mtime", "atime"):
            if k in ev:
                setattr(rec, k, ev[k])
        rec.ctime = ev["time_us"]
        self.ix.put_inode(txn, rec)

    def _ev_seal(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        serial = ev["serial"]
        t = ev["time_us"]
        rec.state, rec.serial, rec.size, rec.blake3 = State.SEALED, serial, ev["size"], \
            ev["blake3"]
        rec.committed, rec.retention, rec.mode = t, ev["retention"], ev["mode"]
        rec.uid, rec.gid, rec.mtime, rec.atime, rec.ctime = ev["uid"], ev["gid"], \
            ev["mtime"], t, t
        rec.path, rec.writer, rec.seal_seq = ev["path"], ev.get("writer"), ev["seq"]
        if ev.get("recovered_from"):
            rec.recovered_from = ev["recovered_from"]
        end, ids = 0, {}
        for cid_hex, length in ev["chunks"]:
            cid = bytes.fromhex(cid_hex)
            end += length
            txn.put(k64x2(serial, end), MANIFEST_VAL.pack(cid, length), db=self.db["manifests"])
            ids[cid] = None
        if end != ev["size"]:
            raise IntegrityError(f"seal event {ev['seq']}: chunks add up to {end}, not "
                                 f"{ev['size']}")
        self._add_refs(txn, ids, 1)
        txn.put(k64(serial), U64.pack(ev["ino"]), db=self.db["serials"])
        self.ix.put_inode(txn, rec)
        self._set_unsealed(txn, ev["ino"], None)
        self._set_expiry(txn, rec, None)
        if serial >= self.ix.meta(txn, "next_serial", 1):
            self.ix.put_meta(txn, "next_serial", serial + 1)
        stats = self.ix.meta(txn, "stats")
        stats["records"] += 1
        stats["logical_bytes"] += ev["size"]
        self.ix.put_meta(txn, "stats", stats)

    def _ev_retention(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        old = rec.retention
        rec.retention = ev["after"]
        self.ix.put_inode(txn, rec)
        if rec.sealed:
            self._set_expiry(txn, rec, old)

    _ev_event_date = _ev_retention

    def _ev_hold(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        rec.holds[ev["name"]] = ev["reason"]
        self.ix.put_inode(txn, rec)

    def _ev_release(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        rec.holds.pop(ev["name"], None)
        self.ix.put_inode(txn, rec)

    def _ev_dir_retention(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        rec.retention = ev["value"]
        self.ix.put_inode(txn, rec)

    def _ev_delete(self, txn, ev):
        rec = self.ix.inode(txn, ev["ino"])
        old = rec.retention
        self._unlink(txn, rec.parent, rec.name)
        rec.state = State.DELETED
        rec.deleted = ev["time_us"]
        self.ix.put_inode(txn, rec)
        self._dir_changed(txn, rec.parent, ev["time_us"])
        self._set_expiry(txn, rec, old)
        txn.put(k64(rec.serial), b"", db=self.db["undisposed"])
        stats = self.ix.meta(txn, "stats")
        stats["records"] -= 1
        stats["logical_bytes"] -= rec.size
        self.ix.put_meta(txn, "stats", stats)

    def _ev_dispose(self, txn, ev):
        # The records were deleted by earlier events; what goes now is their manifests and
        # the chunks no retained record refers to (disposal.py chose them). A chunk is only
        # dropped if the index has it where the event says: replaying a log whose chunk
        # frames are already destroyed never indexed them, and gives the same index.
        for serial in ev["serials"]:
            ino = self.ix.serial_ino(txn, serial)
            rec = self.ix.inode(txn, ino)
            rec.disposed = ev["time_us"]
            self.ix.put_inode(txn, rec)
            self._add_refs(txn, self.ix.manifest_ids(txn, serial), -1)
            cur = txn.cursor(db=self.db["manifests"])
            prefix = k64(serial)
            if cur.set_range(k64x2(serial, 0)):
                while cur.key()[:8] == prefix:
                    if not cur.delete():
                        break
            txn.delete(k64(serial), db=self.db["undisposed"])
        db, n, freed = self.db["chunks"], 0, 0
        for cid_hex, segno, offset, length in ev["chunks"]:
            cid = bytes.fromhex(cid_hex)
            if self.ix.chunk(txn, cid) == (segno, offset, length):
                txn.delete(cid, db=db)
                n += 1
                freed += length
        stats = self.ix.meta(txn, "stats")
        stats["chunks"] -= n
        stats["stored_bytes"] -= freed
        self.ix.put_meta(txn, "stats", stats)
        self.ix.put_meta(txn, "last_dispose", ev["seq"])

    def _ev_verify(self, txn, ev):
        if ev.get("resume") is not None:
            # A piece of a pass (the background scrub): its event says where to go on from
            # (Store.scrub_resume reads it there). Not a verification yet: the last one
            # stays what status shows.
            self.ix.put_meta(txn, "scrub_resume", ev["seq"])
            return
        self.ix.put_meta(txn, "clock_file", None)  # that verify reported it (clock_findings)
        self.ix.put_meta(txn, "last_verify", {
            "time": ev["time"], "kind": ev["type"], "ok": ev["ok"], "deep": ev.get("deep"),
            "findings": ev["findings"], "repaired": ev.get("repaired", 0)})
        # A whole pass ends any pass in pieces (the next begins an interval after this one);
        # the key is dropped, not set to null, so that an index of a store that never
        # scrubbed in pieces is what it was. The last event of a pass in pieces is kept as
        # ``scrub_ended``: no piece before it is a pass to go on with.
        self.ix.drop_meta(txn, "scrub_resume")
        if "pieces" in ev:
            self.ix.put_meta(txn, "scrub_ended", ev["seq"])

    _ev_scrub = _ev_verify

    def _ev_clock(self, txn, ev):
        # The clock's state lives in the log (clock.py): its newest checkpoint, and whether
        # its sources disagree (from a 'disagree' until a 'settled').
        kind = ev.get("kind")
        if kind == "checkpoint" and isinstance(ev.get("readings"), dict):
            self.ix.put_meta(txn, "clock_checkpoint", [ev["time_us"], ev["readings"]])
        elif kind == "disagree":
            self.ix.put_meta(txn, "clock_trouble", [ev["seq"], ev.get("detail")])
        elif kind == "settled":
            self.ix.put_meta(txn, "clock_trouble", None)
        elif kind == "file":
            # An edited clock.json: reported until a verify has reported it too.
            self.ix.put_meta(txn, "clock_file", [ev["seq"], ev.get("detail")])

    def _ev_setting(self, txn, ev):
        settings = self.ix.meta(txn, "settings")
        settings[ev["name"]] = ev["new"]
        self.ix.put_meta(txn, "settings", settings)
