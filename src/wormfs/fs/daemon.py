"""The mount's lifecycle: open the unit, recover what a crash left open, mount, serve,
keep house, and on the way out make everything durable.

``mount()`` returns once the kernel mount exists (or raises MountError with a one-line
reason). In the background it forks first (before any thread, trio or LMDB exists) and the
child reports "ok" or the error through a pipe, so the parent's exit status is the truth.

The unit's lock (store.py) is held for the daemon's whole life and released only after the
final sync, so ``wormfs umount`` waits for that lock to know everything is durable.
"""
import logging
import logging.handlers
import os
import resource
import signal
import subprocess
import sys
import time

import pyfuse3
import trio

from ..errors import StoreError, WormError
from ..store import disposal
from ..store.hostfs import try_lock
from ..store.store import Store
from ..store.unit import read_unit
from ..timeutil import US, parse_duration
from ..mirror import verification
from ..mirror.background import BackgroundScrub
from . import mounts, requests
from .control import ControlServer
from .operations import WormOperations

log = logging.getLogger("wormfs")

# fstab and mount(8) options that are not for libfuse.
NOT_FOR_FUSE = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser",
                "owner", "rw", "dev", "suid", "exec", "async"}
RECOVERED_AT_MOUNT = "the writer, the daemon or the machine stopped before the file was closed"
RECOVERED_AT_UNMOUNT = "the file system was unmounted while the file was open for writing"
HOUSEKEEPING_MAX = 60.0  # seconds between clock ticks / scratch sweeps, at most
HOUSEKEEPING_MIN = 0.5
MIRROR_POLL = 2.0  # seconds between checks of the mirror (reconnect, ship what is pending)
# Records are mostly read front to back (export, review, copy-out). 1 MiB read a 256 MiB
# record cold 2.5x as fast as the kernel's 128 KiB here, and faster than 4 MiB
# (bench/RESULTS.md, "Read-ahead").
READAHEAD_KIB = 1024


class MountError(Exception):
    """The mount could not be made; the message says why and what to do."""


def parse_options(text_list):
    """Split ``-o a,b=c`` arguments into a set of libfuse options, dropping fstab-only ones.
    Returns (fuse_options, log_file)."""
    opts, log_file = set(), None
    for text in text_list or ():
        for opt in (o.strip() for o in text.split(",")):
            if not opt or opt in NOT_FOR_FUSE or opt.startswith(("x-", "comment=")):
                continue
            if opt.startswith("log="):
                log_file = opt[4:]
                continue
            opts.add(opt)
    return opts, log_file


def _check_mountpoint(mountpoint):
    try:
        if not os.path.isdir(mountpoint):
            raise MountError(f"mount point {mountpoint} is not a directory")
        if os.path.ismount(mountpoint):
            raise MountError(f"{mountpoint} is already a mount point")
    except OSError as e:
        raise MountError(f"mount point {mountpoint} is unusable ({e.strerror}); if a wormfs "
                         f"daemon died there, run 'fusermount3 -u -z {mountpoint}'") from None


def mount(store_path, mountpoint, *, foreground=False, options=(), log_file=None,
          debug=False):
    store_path, mountpoint = os.path.abspath(store_path), os.path.abspath(mountpoint)
    fuse_opts, opt_log = parse_options(options)
    log_file = log_file or opt_log
    try:
        unit = read_unit(store_path)
    except StoreError as e:
        raise MountError(str(e)) from None
    _check_mountpoint(mountpoint)
    readonly = unit.get("role") != "primary" or "ro" in fuse_opts
    if readonly:
        fuse_opts.add("ro")
    if foreground:
        _setup_logging(None, debug, foreground=True)
        return _serve(store_path, mountpoint, fuse_opts, readonly, None)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace").strip()
        if msg == "ok":
            return 0
        os.waitpid(pid, 0)
        raise MountError(msg or "the wormfs daemon exited before the mount was live")
    # The daemon.
    os.close(r)
    code = 1
    try:
        os.setsid()
        _setup_logging(log_file, debug, foreground=False)
        _detach_stdio()
        code = _serve(store_path, mountpoint, fuse_opts, readonly, w)
    except BaseException:
        log.exception("the wormfs daemon failed")
    finally:
        os._exit(code)


def unmount(mountpoint, timeout=600.0):
    """Unmount a wormfs mount and wait until its daemon has made everything durable and let
    go of the unit (its lock)."""
    mountpoint = os.path.abspath(mountpoint)
    hit = mounts.find(mountpoint)
    if hit is None:
        raise MountError(f"{mountpoint} is not mounted")
    fstype, source = hit.fstype, hit.source
    if fstype != "fuse.wormfs":
        raise MountError(f"{mountpoint} is a {fstype} mount, not wormfs")
    r = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]
        if "busy" in why:
            raise MountError(f"{mountpoint} is busy: files or directories on it are in use "
                             f"(see 'fuser -vm {mountpoint}'); close them and try again")
        raise MountError(why)
    lock = os.path.join(source, "lock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = try_lock(lock, create=False)
        except OSError:
            return  # a unit lock we cannot open: nothing more to wait for
        if fd is not None:
            os.close(fd)
            return
        if not os.path.exists(lock):
            return
        if time.monotonic() > deadline:
            raise MountError(f"unmounted, but the daemon of {source} has not finished after "
                             f"{timeout:.0f}s; see its log")
        time.sleep(0.05)


def _report(fd, message):
    if fd is not None:
        try:
            os.write(fd, message.encode() + b"\n")
            os.close(fd)
        except OSError:
            pass
    elif message != "ok":
        print(f"wormfs: {message}", file=sys.stderr)


def _raise_open_files_limit():
    """Every open file through the mount holds a descriptor of its staged bytes here, so the
    daemon takes the hard limit on descriptors as its own (a service manager's soft limit
    is often 1024): a writer holding many files open gets them, not EMFILE."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as e:
        log.debug("could not raise the limit on open files: %s", e)


def _serve(store_path, mountpoint, fuse_opts, readonly, ready_fd):
    _raise_open_files_limit()
    try:
        store = Store(store_path, readonly=readonly)
    except WormError as e:
        _report(ready_fd, str(e))
        return 1
    try:
        recovered = [] if readonly else store.recover_interrupted(RECOVERED_AT_MOUNT)
        for rec in recovered:
            log.warning("recovered an interrupted file as record %s at %s (was %s)",
                        rec.serial, rec.path, rec.recovered_from)
        ops = WormOperations(store, mountpoint)
        opts = {f"fsname={_escape(store_path)}", "subtype=wormfs"} | fuse_opts
        pyfuse3.init(ops, mountpoint, opts)
    except Exception as e:
        log.debug("mount failed", exc_info=True)
        store.close()
        _report(ready_fd, f"cannot mount {store_path} on {mountpoint}: {e}")
        return 1
    ops.mount = mounts.find(mountpoint)
    if not readonly:
        store.note("mount", mountpoint=mountpoint, options=sorted(fuse_opts),
                   recovered=[rec.serial for rec in recovered])
    control = None if readonly else _start_control(store)
    scrubber = BackgroundScrub(store) if not readonly else None
    log.info("mounted %s on %s%s", store_path, mountpoint, " (read-only)" if readonly else "")
    _report(ready_fd, "ok")
    try:
        trio.run(_main, ops, store)
    except BaseException:
        log.exception("the file system loop stopped on an error")
    finally:
        if control is not None:
            control.close()
        if scrubber is not None:
            scrubber.stop()
        try:
            pyfuse3.close(unmount=True)
        except Exception:
            log.exception("unmount failed")
        _shutdown(store)
    return 0


def _start_control(store):
    def check(req, progress, actor):
        return verification.run(store, deep=req.deep, repair=req.repair,
                                progress=progress).as_dict()

    def note(req, progress, actor):
        return store.note("export", actor, **req.fields())

    def dispose(req, progress, actor):
        return disposal.run(store, actor, dry_run=req.dry_run)

    def delete(req, progress, actor):
        rec = store.privileged_delete(store.resolve(req.path).ino, req.reason, actor)
        try:  # the kernel still has the name cached: it must not show it any more
            pyfuse3.invalidate_entry(rec.parent, os.fsencode(rec.name),
                                     deleted=rec.ino)
        except OSError:
            pass
        return {"serial": rec.serial, "path": req.path}
    try:
        return ControlServer(store.path, {requests.Check: check, requests.ExportNote: note,
                                          requests.Dispose: dispose,
                                          requests.Delete: delete})
    except OSError as e:
        log.warning("no control socket (%s): verify and scrub need the store unmounted", e)
        return None


def _shutdown(store):
    try:
        if not store.readonly:
            for rec in store.recover_interrupted(RECOVERED_AT_UNMOUNT):
                log.warning("file open at unmount recovered as record %s at %s",
                            rec.serial, rec.path)
            store.note("unmount")
    except (WormError, OSError) as e:  # a full disk, a failed mirror: said in one line
        log.error("could not finish open files at unmount (they are recovered at the next "
                  "mount): %s", e)
    except Exception:
        log.exception("could not finish open files at unmount (they are recovered at the "
                      "next mount)")
    store.close()
    log.info("unmounted; everything is durable")


async def _main(ops, store):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signals)
        nursery.start_soon(raise_readahead, ops.mountpoint)
        if not store.readonly:
            nursery.start_soon(_housekeeping, ops, store)
            if store.mirror is not None:
                nursery.start_soon(_mirror_keeper, ops, store)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def raise_readahead(mountpoint):
    """Raise the mount's read-ahead once the kernel has its answer to FUSE's INIT. It sets
    the read-ahead then, to no more than it offered in INIT (128 KiB): a value written before
    is lowered again, as it was until 2026-12-02. A stat of the mount point returns only after
    INIT is answered (the kernel holds every request until then), so it goes first, from a
    worker thread: this loop serves it."""
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError:
        return  # unmounted already
    if not mounts.set_readahead(mountpoint, READAHEAD_KIB):
        log.debug("could not raise the read-ahead of %s", mountpoint)


async def _on_signals():
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


def _scratch_ttl_us(store):
    ttl = (store.settings() or {}).get("scratch_ttl", "24h")
    now = store.now()
    return parse_duration(ttl).after(now) - now


async def _housekeeping(ops, store):
    """Write clock anomalies to the audit trail promptly, and seal scratch files nobody has
    changed for the scratch TTL (SPEC: nothing written stays mutable for ever). Readers and
    idle descriptors do not hold the TTL off; a writer that comes back after it finds the
    file sealed (EPERM)."""
    while True:
        try:
            ttl = _scratch_ttl_us(store)
        except Exception:
            log.exception("bad scratch_ttl setting; using 24h")
            ttl = 24 * 3600 * US
        await trio.sleep(min(HOUSEKEEPING_MAX, max(HOUSEKEEPING_MIN, ttl / US / 4)))
        try:
            await ops._run(store.tick)
            for ino in await ops._run(store.stale_scratch, ttl):
                rec = await ops.seal_scratch(ino)
                if rec is not None:
                    log.info("scratch file untouched for the scratch TTL sealed as record %s "
                             "at %s", rec.serial, rec.path)
        except Exception:
            log.exception("housekeeping failed; will try again")


async def _mirror_keeper(ops, store):
    """Notice a mirror that went away, reconnect it when it is back and catch it up, and ship
    what no seal waited for: SPEC "the mirror catches up by itself when it returns"."""
    while True:
        await trio.sleep(MIRROR_POLL)
        try:
            await ops._run(store.mirror_poll)
        except Exception:
            log.exception("mirror check failed; will try again")


def _escape(value):
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _setup_logging(log_file, debug, foreground):
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    elif log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s "
                                               "%(name)s: %(message)s"))
    else:
        handler = _syslog()
    if handler is None:
        handler = logging.FileHandler("/var/log/wormfs.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s "
                                               "%(name)s: %(message)s"))
    root.addHandler(handler)


def _syslog():
    try:
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    except OSError:
        return None  # no syslog socket (a container): log to a file instead
    handler.setFormatter(logging.Formatter(f"wormfs[{os.getpid()}]: %(levelname)s "
                                           f"%(name)s: %(message)s"))
    return handler


def _detach_stdio():
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
