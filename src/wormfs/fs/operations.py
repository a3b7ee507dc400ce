"""pyfuse3 request handlers: translate each kernel request into store calls.

Concurrency: pyfuse3 runs each request as a trio task on one thread. Index reads (lookup,
getattr, readdir, getxattr) are memory-mapped LMDB reads of a few microseconds and run inline.
Everything that writes to the log, touches file data or may fsync runs in a worker thread,
bounded by one CapacityLimiter (back-pressure: when all workers are busy, new requests wait
for one instead of piling up threads). The tables below (handles, writers, lookup counts) are
only touched on the trio thread, between awaits.

Sealing: a file becomes a record when the last handle opened for writing is closed. The seal
runs in FLUSH, so close(2) returns only after it (see closers.py for how a FLUSH that is not
the last close is told apart); RELEASE seals whatever a FLUSH left open.

Every handler is wrapped by ``_handler``: a WormError becomes its errno, anything unexpected is
logged and answered with EIO. The mount never dies of one bad request.
"""
import collections
import contextlib
import errno
import functools
import logging
import os
import stat

import pyfuse3
import trio

from ..actor import Actor
from ..errors import (InvalidValue, IsADirectory, NotADirectory, NotFound, NotPermitted,
                      WormError)
from ..store.inode import State
from . import attrs, closers, permissions, xattrs
from .permissions import R, W, X

log = logging.getLogger("wormfs.fs")

WORKER_THREADS = 8
# Entries read from the store per step of a READDIR. The kernel asks READDIRPLUS with a one-
# page buffer, which holds about 24 entries (each with its attributes); the entries of a
# batch that do not fit are read again by the next request, so a batch much bigger than a
# buffer's worth is mostly wasted (128 read five times over what a listing shows).
READDIR_BATCH = 32
DOT_ENTRIES = 2  # '.' and '..' take the first two readdir offsets
XATTR_PREFIX = xattrs.PREFIX.encode()


def forget_data(ino):
    """After a seal: drop every cached page and attribute of the file, so that readers get
    the record's bytes from the daemon (pages a reader cached while the file was written
    may predate later direct writes). No writeback cache, so nothing dirty to wait for."""
    try:
        pyfuse3.invalidate_inode(ino)
    except OSError:
        pass  # the kernel no longer knows the inode: nothing cached


class SealTurns:
    """One seal, or last-close check, of an inode at a time, in the order they come. A FLUSH
    that finds another under way waits for its turn and then looks again; it must not return
    at once. The one under way may be a child's FLUSH (its copy of the descriptor closing
    at exec) answered "the writer still holds it" a moment before the writer's own close:
    that close returning at once left the seal to RELEASE, after close() had returned
    (found with writers closing files while another of their threads started programs: 1
    file in 40 was not sealed when close returned)."""

    def __init__(self):
        self._turns = {}   # ino -> [trio.Lock, tasks holding or waiting for it]

    @contextlib.asynccontextmanager
    async def turn(self, ino):
        entry = self._turns.get(ino)
        if entry is None:
            entry = self._turns[ino] = [trio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._turns[ino]

    def __contains__(self, ino):
        return ino in self._turns


# Errors of the unit's disk, passed on to the caller as they are.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)
# The daemon is out of descriptors (a writer holds more files open than its hard limit):
# the caller gets ENFILE, the system's limit as the caller sees it, and the log one line.
LIMIT_ERRNOS = (errno.EMFILE, errno.ENFILE)
# The unit's file system is gone: the caller gets EIO, the log one line.
GONE_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED, errno.ESTALE, errno.ENXIO, errno.ENODEV)


def _handler(fn):
    @functools.wraps(fn)
    async def wrapper(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except WormError as e:
            log.debug("%s%r: %s", fn.__name__, args[:2], e)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                log.error("%s%r: %s", fn.__name__, args[:2], e)
                raise pyfuse3.FUSEError(e.errno) from None
            if e.errno in LIMIT_ERRNOS:
                log.error("%s%r: %s", fn.__name__, args[:2], e)
                raise pyfuse3.FUSEError(errno.ENFILE) from None
            if e.errno in GONE_ERRNOS:
                # The file system holding the unit went away under us (a network or FUSE
                # file system that died, a device pulled): the disk failed, not wormfs.
                log.error("%s%r: the unit's file system failed: %s", fn.__name__, args[:2], e)
                raise pyfuse3.FUSEError(errno.EIO) from None
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper


def _touch_probe(flags, actor):
    """The open(O_WRONLY|O_CREAT|O_NONBLOCK|O_NOCTTY) with which coreutils touch starts."""
    return (actor.program == "touch" and flags & os.O_ACCMODE == os.O_WRONLY
            and flags & os.O_NONBLOCK and not flags & (os.O_APPEND | os.O_TRUNC))


class Handle:
    __slots__ = ("ino", "writable", "actor", "pid", "closing", "failed", "wrote")

    def __init__(self, ino, writable, actor, pid):
        self.ino, self.writable, self.actor, self.pid = ino, writable, actor, pid
        self.closing = False   # its FLUSH found no other descriptor: this was the last close
        self.failed = None     # errno name of a write that failed: recover, do not seal
        self.wrote = False     # set-id bits were checked at its first write


class WormOperations(pyfuse3.Operations):
    # No writeback cache, and writable handles are direct I/O (FOPEN_DIRECT_IO): every
    # write(2) reaches the daemon, so a write through a descriptor that outlived the seal
    # (passed over a socket, kept by a daemonized child) is refused with EPERM and audited
    # instead of landing in the page cache, where readers would see it (SPEC "Life of a
    # file" 3). The kernel refuses shared mmaps of direct-I/O handles (ENODEV): no page of a
    # file opened for writing is ever shared with a reader. docs/REFERENCE.md says so.
    enable_writeback_cache = False
    supports_dot_lookup = True

    def __init__(self, store, mountpoint):
        super().__init__()
        self.store = store
        self.mountpoint = mountpoint
        self.mount = None                        # our MountEntry, once mounted (closers)
        self.handles = {}                        # fh -> Handle
        self.next_fh = 1
        self.writers = {}                        # ino -> set of writable fhs
        self.open_count = collections.Counter()  # ino -> handles of any kind
        self.lookups = collections.Counter()     # ino -> kernel lookup count
        self.sealing = SealTurns()               # one seal (or check) of an inode at a time
        # ino -> every name an unsealed file has had since this mount: what the kernel can
        # show for its descriptors in /proc, so the last-close check (closers.py) reads the
        # fdinfo of those alone, not of every descriptor a writer holds on the mount.
        self.names = {}
        self.limiter = trio.CapacityLimiter(WORKER_THREADS)
        store.keep_open = lambda ino: self.open_count.get(ino, 0) > 0

    # -- helpers --------------------------------------------------------------------------

    async def _run(self, fn, *args, **kwargs):
        """Run ``fn`` in a worker thread and wait for it. trio.to_thread.run_sync would do,
        but it renames the OS thread twice per call (two ctypes calls), a measurable share
        of a small file's cost; this is the same hand-off on trio's public low-level API.
        Not cancellable, like run_sync's default: a started store call always finishes."""
        async with self.limiter:
            task = trio.lowlevel.current_task()
            token = trio.lowlevel.current_trio_token()

            def deliver(result):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            trio.lowlevel.start_thread_soon(functools.partial(fn, *args, **kwargs), deliver)
            return await trio.lowlevel.wait_task_rescheduled(
                lambda _: trio.lowlevel.Abort.FAILED)

    @staticmethod
    def _actor(ctx):
        return Actor.from_pid(ctx.uid, ctx.gid, ctx.pid)

    def _new_handle(self, ino, writable, actor, pid, name):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = Handle(ino, writable, actor, pid)
        self.open_count[ino] += 1
        if writable:
            self.writers.setdefault(ino, set()).add(fh)
            self.names.setdefault(ino, set()).add(name)
        return fh

    def _handle(self, fh):
        h = self.handles.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return h

    async def _create(self, parent_inode, name, mode, actor):
        """store.create. It changes the index but waits for no disk: made on the event loop
        unless the store is busy (its lock held by a worker), which saves a thread hop per
        small file."""
        done, rec = self.store.at_once(self.store.create, parent_inode, name, mode, actor)
        if not done:
            rec = await self._run(self.store.create, parent_inode, name, mode, actor)
        return rec

    async def _refuse(self, op, reason, actor, ino):
        await self._run(self.store.refuse, op, reason, actor, ino=ino)

    async def _seal(self, ino, actor, cause, failed=None, last_close_of=None):
        """Seal an open file now (or recover it, if its writes failed); returns whether it
        did. With ``last_close_of`` (a pid) only if that process and its children hold no
        other writable descriptor on the file (closers.py), checked in the same worker
        thread hop as the seal."""
        async with self.sealing.turn(ino):
            rec = self.store.inode(ino)
            if rec.state is not State.OPEN or rec.orphan:
                return False
            done = await self._run(self._seal_now, ino, actor, cause, failed, last_close_of)
        if done:
            self.names.pop(ino, None)
        return done

    async def seal_scratch(self, ino):
        """Seal a scratch file whose TTL passed, even if handles are open on it (their later
        writes are refused). The record, or None if it was sealed or removed meanwhile."""
        try:
            async with self.sealing.turn(ino):
                rec = self.store.inode(ino)
                if rec.state is not State.SCRATCH or rec.orphan:
                    return None
                rec = await self._run(self.store.seal, ino, None, "scratch_ttl")
        except NotFound:
            return None
        forget_data(ino)
        return rec

    def _seal_now(self, ino, actor, cause, failed, last_close_of):
        """(worker thread)"""
        # The live set of names (not a copy): a rename under way adds its new name before the
        # kernel can show it, and a membership test is safe beside the loop's additions.
        if last_close_of is not None and closers.writable_fd_open(
                last_close_of, ino, self.mountpoint, self.mount, self.names.get(ino)):
            return False
        if failed:
            # Not sealed as if complete. Recovery needs room in the log, which a failed
            # write says may be short now: it runs at unmount or the next mount (SPEC).
            log.warning("inode %d: writes failed with %s before close; the file is recovered "
                        "under /.wormfs/recovered/ at unmount or the next mount", ino, failed)
            return True
        self.store.seal(ino, actor, cause)
        forget_data(ino)
        return True

    # -- names ----------------------------------------------------------------------------

    @_handler
    async def lookup(self, parent_inode, name, ctx):
        parent = self.store.inode(parent_inode)
        if ctx.uid != 0:
            permissions.check(self._actor(ctx), parent, X)
        if name == b".":
            rec = parent
        elif name == b"..":
            rec = self.store.inode(parent.parent)
        else:
            rec = self.store.lookup(parent_inode, name)
        self.lookups[rec.ino] += 1
        return attrs.entry(rec, uncached=attrs.private(parent))

    async def forget(self, inode_list):
        try:
            for ino, n in inode_list:
                left = self.lookups.get(ino, 0) - n
                if left > 0:
                    self.lookups[ino] = left
                else:
                    self.lookups.pop(ino, None)
        except Exception:
            log.exception("forget failed")

    @_handler
    async def getattr(self, inode, ctx):
        return attrs.entry(self.store.inode(inode))

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        actor = self._actor(ctx)
        rec = self.store.inode(inode)
        record = rec.is_file and rec.sealed
        if fields.update_size:
            if rec.is_dir:
                raise IsADirectory("is a directory")
            if record:
                await self._refuse("truncate", "the file is a sealed record", actor, inode)
            if fh is None:
                permissions.check(actor, rec, W)
            await self._run(self.store.truncate, inode, attr.st_size, actor)
        mode = attr.st_mode & 0o7777 if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        mtime = attr.st_mtime_ns // 1000 if fields.update_mtime else None
        atime = attr.st_atime_ns // 1000 if fields.update_atime else None
        if record and mtime == rec.mtime:
            # The writeback cache sends the cached mtime with every ctime update (after a
            # rename, say): not a change, so not a refusal.
            mtime = None
        if record and atime is not None and mode is uid is gid is mtime is None:
            # The atime convention: a future atime extends retain-until.
            await self._run(self.store.touch_atime, inode, atime, actor)
        elif not (mode is uid is gid is mtime is atime is None):
            if not record:
                mode, uid, gid = permissions.check_setattr(actor, rec, mode, uid, gid)
                if mtime is not None or atime is not None:
                    permissions.check_times(actor, rec, self._is_now(mtime, atime))
                if mode is uid is gid is None and rec.is_file and \
                        self.store.set_open_times(inode, mtime, atime):
                    # utimensat on a file open here (cp -p, rsync, tar): kept in memory
                    # until the seal, so no worker thread is needed.
                    return attrs.entry(self.store.inode(inode))
            await self._run(self.store.setattr, inode, actor, mode=mode, uid=uid, gid=gid,
                            mtime=mtime, atime=atime)
            if rec.is_dir and not (mode is uid is gid is None):
                self._forget_children(inode)
        return attrs.entry(self.store.inode(inode))

    def _forget_children(self, dir_ino):
        """Who may search a directory changed: drop the kernel's cached entries of its
        children, so the next path walk through it comes to ``lookup`` and its search check
        (the kernel checks nothing itself: no default_permissions). Only names the kernel
        holds can be cached, so only those are walked. Asynchronous: the kernel holds the
        directory's lock during this very setattr, and an invalidation takes it too."""
        for ino in list(self.lookups):
            try:
                child = self.store.inode(ino)
            except NotFound:
                continue
            if child.parent == dir_ino and ino != dir_ino:
                pyfuse3.invalidate_entry_async(dir_ino, os.fsencode(child.name),
                                               ignore_enoent=True)

    def _is_now(self, mtime, atime):
        """Whether a utimensat looks like 'set to now' (times NULL or UTIME_NOW), which
        write permission allows, rather than explicit times, which only the owner may set.
        pyfuse3 hands both over as times, so: both equal and within a second of now."""
        now = self.store.clock.wall_us()
        times = [t for t in (mtime, atime) if t is not None]
        return len(set(times)) == 1 and abs(times[0] - now) < 1_000_000

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        actor = self._actor(ctx)
        parent = self.store.inode(parent_inode)
        permissions.check(actor, parent, W | X)
        rec = await self._run(self.store.mkdir, parent_inode, name, mode, actor)
        self.lookups[rec.ino] += 1
        return attrs.entry(rec, uncached=attrs.private(parent))

    async def _check_delete(self, op, actor, dir_rec, victim):
        """POSIX's rules for taking a name out of a directory; the sticky-bit refusal is a
        refused attempt on the entry, so it is audited like a WORM refusal."""
        try:
            permissions.check_delete(actor, dir_rec, victim)
        except NotPermitted as e:
            await self._run(self.store.refuse, op, str(e), actor, ino=victim.ino)

    async def _remove(self, op, remover, parent_inode, name, ctx):
        actor = self._actor(ctx)
        await self._check_delete(op, actor, self.store.inode(parent_inode),
                                 self.store.lookup(parent_inode, name))
        await self._run(remover, parent_inode, name, actor)

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        await self._remove("rmdir", self.store.rmdir, parent_inode, name, ctx)

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        await self._remove("unlink", self.store.unlink, parent_inode, name, ctx)

    @_handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        actor = self._actor(ctx)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise InvalidValue("RENAME_EXCHANGE is not supported")
        src = self.store.lookup(parent_inode_old, name_old)
        try:
            dst = self.store.lookup(parent_inode_new, name_new)
        except NotFound:
            dst = None
        if dst is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if actor.uid != 0 and not src.sealed and \
                (dst is None or not dst.sealed):
            await self._check_delete("rename", actor, self.store.inode(parent_inode_old), src)
            new_dir = self.store.inode(parent_inode_new)
            if dst is not None:
                await self._check_delete("rename", actor, new_dir, dst)
            else:
                permissions.check(actor, new_dir, W | X)
            if src.is_dir and parent_inode_new != parent_inode_old:
                # A directory that moves rewrites its own '..': Linux asks for write
                # permission on it (vfs_rename), as pjdfstest rename/09 checks.
                permissions.check(actor, src, W)
        if src.is_file and not src.sealed:
            # Both names, before the store has the new one: until the kernel has moved its
            # entry, /proc shows the old name of the file's descriptors, then the new one.
            self.names.setdefault(src.ino, set()).update((os.fsdecode(name_old),
                                                          os.fsdecode(name_new)))
        rec = await self._run(self.store.rename, parent_inode_old, name_old, parent_inode_new,
                              name_new, actor)
        if rec.is_file and rec.state is State.OPEN and rec.ino not in self.writers:
            # A closed scratch file renamed to an ordinary name: it is finished (rsync,
            # "save as temp then rename"), so it becomes a record now.
            await self._seal(rec.ino, actor, "rename")

    @_handler
    async def link(self, inode, new_parent_inode, new_name, ctx):
        await self._refuse("link", "hard links are not supported: a record has one name",
                           self._actor(ctx), inode)

    @_handler
    async def symlink(self, parent_inode, name, target, ctx):
        await self._run(self.store.refuse, "symlink", "symbolic links cannot be records",
                        self._actor(ctx), path=self._child_path(parent_inode, name))

    @_handler
    async def readlink(self, inode, ctx):
        raise InvalidValue("not a symbolic link")

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        actor = self._actor(ctx)
        if not stat.S_ISREG(mode):
            await self._run(self.store.refuse, "mknod", "only regular files can be records "
                            "(no device nodes, FIFOs or sockets)", actor,
                            path=self._child_path(parent_inode, name))
        parent = self.store.inode(parent_inode)
        permissions.check(actor, parent, W | X)
        rec = await self._create(parent_inode, name, mode, actor)
        # Nobody holds it open, so nothing will close it: it is complete as it is.
        if rec.state is State.OPEN:
            await self._seal(rec.ino, actor, "mknod")
        self.lookups[rec.ino] += 1
        return attrs.entry(self.store.inode(rec.ino), uncached=attrs.private(parent))

    def _child_path(self, parent, name):
        base = self.store.path_of(parent) or "?"
        return base.rstrip("/") + "/" + os.fsdecode(name)

    # -- files ----------------------------------------------------------------------------

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        actor = self._actor(ctx)
        parent = self.store.inode(parent_inode)
        permissions.check(actor, parent, W | X)
        rec = await self._create(parent_inode, name, mode, actor)
        # The creator's handle is a writer whatever its flags: its close finishes the file.
        fh = self._new_handle(rec.ino, True, actor, ctx.pid, rec.name)
        self.lookups[rec.ino] += 1
        return pyfuse3.FileInfo(fh=fh, direct_io=True), attrs.entry(
            rec, uncached=attrs.private(parent))

    @_handler
    async def open(self, inode, flags, ctx):
        actor = self._actor(ctx)
        rec = self.store.inode(inode)
        if rec.is_dir:
            raise IsADirectory("is a directory")
        acc = flags & os.O_ACCMODE
        writable = acc != os.O_RDONLY
        # The kernel leaves O_TRUNC to us (atomic_o_trunc): with any access mode it is a
        # change of the file, so it needs write permission and is refused on a record.
        trunc = bool(flags & os.O_TRUNC)
        sealed = rec.sealed
        if sealed and (writable or trunc):
            if _touch_probe(flags, actor) and not trunc:
                # coreutils touch opens the file for writing first and, refused, sets the
                # times by name: the atime convention working as designed, not a refusal
                # worth an examiner's attention. Still refused.
                raise pyfuse3.FUSEError(errno.EPERM)
            await self._refuse("open", "the file is a sealed record; it cannot be opened "
                               "for writing or truncated", actor, inode)
        if writable or trunc:
            permissions.check(actor, rec, W | (R if acc in (os.O_RDWR, os.O_RDONLY) else 0))
            await self._run(self.store.open_for_write, inode, actor)
            if trunc:
                await self._run(self.store.truncate, inode, 0, actor)
        else:
            permissions.check(actor, rec, R)
        fh = self._new_handle(inode, writable, actor, ctx.pid, rec.name)
        # Records keep their cached pages across opens (their bytes never change); a file
        # still being written is read fresh by each new reader.
        return pyfuse3.FileInfo(fh=fh, direct_io=writable, keep_cache=sealed)

    @_handler
    async def read(self, fh, off, size):
        ino = self._handle(fh).ino
        data = self.store.read_at_once(ino, off, size)  # from the page cache, no hop
        if data is None:
            data = await self._run(self.store.read, ino, off, size)
        return data

    @_handler
    async def write(self, fh, off, buf):
        h = self._handle(fh)
        if not h.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        if not h.wrote:
            h.wrote = True
            rec = self.store.inode(h.ino)
            mode = permissions.kill_on_write(h.actor, rec) if not rec.sealed \
                else None
            if mode is not None:  # a write by anyone but root clears set-user-ID
                await self._run(self.store.setattr, h.ino, h.actor, mode=mode)
        try:
            n = self.store.write_at_once(h.ino, off, buf)  # a small in-order write, no hop
            if n is None:
                n = await self._run(self.store.write, h.ino, off, buf, h.actor)
            return n
        except OSError as e:
            h.failed = errno.errorcode.get(e.errno, str(e.errno))
            raise

    @_handler
    async def flush(self, fh):
        h = self.handles.get(fh)
        if h is None or not h.writable or h.closing:
            return
        others = [f for f in self.writers.get(h.ino, ()) if f != fh
                  and not self.handles[f].closing]
        if others:
            return  # not the last close; a later FLUSH or the RELEASE seals
        h.closing = await self._seal(h.ino, h.actor, "close", h.failed, last_close_of=h.pid)

    @_handler
    async def release(self, fh):
        h = self.handles.pop(fh, None)
        if h is None:
            return
        ino = h.ino
        self.open_count[ino] -= 1
        try:
            if h.writable:
                ws = self.writers.get(ino)
                if ws is not None:
                    ws.discard(fh)
                    if not ws:
                        del self.writers[ino]
                if ino not in self.writers:
                    await self._seal(ino, h.actor, "close", h.failed)
        finally:
            # The last handle of a file unlinked while open: its bytes can go now.
            if not self.open_count[ino]:
                del self.open_count[ino]
                self.store.discard(ino)
                self.names.pop(ino, None)  # the next writable open starts from its name

    @_handler
    async def fsync(self, fh, datasync):
        h = self._handle(fh)
        if self.store.inode(h.ino).sealed:
            await self._run(self.store.sync)
        else:
            await self._run(self.store.fsync_open, h.ino)

    # -- directories ----------------------------------------------------------------------

    @_handler
    async def opendir(self, inode, ctx):
        rec = self.store.inode(inode)
        if not rec.is_dir:
            raise NotADirectory("not a directory")
        if ctx.uid != 0:
            permissions.check(self._actor(ctx), rec, R)
        return inode

    @_handler
    async def readdir(self, fh, start_id, token):
        # Offsets 1 and 2 are '.' and '..'; an entry's offset is its store cookie + 2.
        d = self.store.inode(fh)
        uncached = attrs.private(d)
        for off, name, ino in ((1, b".", fh), (2, b"..", d.parent)):
            if start_id < off:
                if not pyfuse3.readdir_reply(token, name, attrs.entry(
                        self.store.inode(ino), uncached), off):
                    return
                self.lookups[ino] += 1
        after = max(0, start_id - DOT_ENTRIES)
        while True:
            batch = self.store.readdir(fh, after, limit=READDIR_BATCH)
            for cookie, name, rec in batch:
                if not pyfuse3.readdir_reply(token, name, attrs.entry(rec, uncached),
                                             cookie + DOT_ENTRIES):
                    return
                self.lookups[rec.ino] += 1
                after = cookie
            if len(batch) < READDIR_BATCH:
                return

    @_handler
    async def releasedir(self, fh):
        pass

    @_handler
    async def fsyncdir(self, fh, datasync):
        await self._run(self.store.sync)

    @_handler
    async def statfs(self, ctx):
        st = os.statvfs(self.store.path)
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = st.f_bsize, st.f_frsize
        out.f_blocks, out.f_bfree, out.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
        out.f_files, out.f_ffree, out.f_favail = st.f_files, st.f_ffree, st.f_favail
        out.f_namemax = 255
        return out

    @_handler
    async def access(self, inode, mode, ctx):
        rec = self.store.inode(inode)
        if mode & os.W_OK and rec.is_file and rec.sealed:
            return False
        return permissions.allowed(self._actor(ctx) if ctx.uid else None, rec, mode & 7)

    # -- extended attributes --------------------------------------------------------------

    @_handler
    async def getxattr(self, inode, name, ctx):
        if not name.startswith(XATTR_PREFIX):
            # The kernel asks for security.capability on writes: answer without a lookup.
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return xattrs.get_value(self.store, self.store.inode(inode), name)

    @_handler
    async def listxattr(self, inode, ctx):
        return [n.encode() for n in xattrs.list_names(self.store, self.store.inode(inode))]

    @_handler
    async def setxattr(self, inode, name, value, ctx):
        actor = self._actor(ctx)
        await self._run(xattrs.set_value, self.store, self.store.inode(inode), name, value,
                        actor)

    @_handler
    async def removexattr(self, inode, name, ctx):
        await self._run(xattrs.remove_value, self.store, self.store.inode(inode), name,
                        self._actor(ctx))

