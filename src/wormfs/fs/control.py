"""The mount daemon's control socket: work that must run inside the process that owns the
store, asked for by the ``wormfs`` command while the store is mounted (verify and scrub, whose
repairs and results are events in the store's chain).

``UNIT/control.sock``: a unix stream socket, mode 0600, so only root (the owner of the mount)
can use it. A unit on a file system that cannot hold a socket (a FUSE file system such as
LazyFS, some network file systems: ENOSYS, EOPNOTSUPP, EPERM) has it in
``/run/wormfs/control-DEV-INO.sock`` instead (the unit directory's device and inode; /run/wormfs
is root's, 0700); the command looks in both places. One request per connection, as one JSON line, checked field by field (requests.py):
``{"op": "check", "deep": bool, "repair": bool}``, ``{"op": "note", "type": "export",
"fields": {...}}``, ``{"op": "dispose", "dry_run": bool}`` or ``{"op": "delete", "path":
str, "reason": str}``. The caller is known from the socket's peer credentials, and the
store's own rules decide what that caller may do. Answers are JSON lines: ``{"progress":
[done, total]}`` any number of times, then ``{"result": report}`` or ``{"error": "one
line"}``.

The server is a plain thread, not part of the trio loop: a request may run for hours and only
calls the store's thread-safe methods, like the FUSE worker threads do.
"""
import json
import logging
import os
import socket
import struct
import threading
import time

from ..actor import Actor
from ..errors import InvalidValue, StoreError, WormError, one_line
from . import requests

log = logging.getLogger("wormfs.control")
SOCKET_NAME = "control.sock"
PROGRESS_EVERY = 0.5  # seconds between progress lines
MAX_REQUEST = 64 << 20  # one request line (an export note lists every serial it holds)


RUN_DIR = "/run/wormfs"


def socket_paths(unit_path):
    """Where the socket of the unit's mount can be: in the unit, else under /run."""
    st = os.stat(unit_path)
    return [os.path.join(unit_path, SOCKET_NAME),
            os.path.join(RUN_DIR, f"control-{st.st_dev:x}-{st.st_ino:x}.sock")]


def _bind(sock, path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)


class ControlServer:
    def __init__(self, unit_path, handlers):
        """``handlers``: op name -> fn(request, progress) returning a JSON-able result."""
        self.handlers = handlers
        here, run = socket_paths(unit_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _bind(self.sock, here)
            self.path = here
        except OSError as e:
            # The unit's file system holds no sockets: root's /run does.
            log.info("no socket in %s (%s): the control socket is %s", unit_path,
                     e.strerror, run)
            os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
            os.chmod(RUN_DIR, 0o700)
            self.sock.close()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _bind(self.sock, run)
            self.path = run
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, name="wormfs-control", daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    self._one(conn)
                except Exception:
                    log.exception("control request failed")

    def _one(self, conn):
        f = conn.makefile("rwb")
        try:
            line = f.readline(MAX_REQUEST + 1)
            if len(line) > MAX_REQUEST:
                raise InvalidValue(f"request longer than {MAX_REQUEST} bytes")
            try:
                obj = json.loads(line or b"{}")
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                raise InvalidValue("a request must be one line of JSON") from None
            req = requests.parse(obj)
            handler = self.handlers.get(type(req))
            if handler is None:
                raise StoreError(f"the daemon does not serve {type(req).__name__} requests")
            actor = _peer(conn)
            last = [0.0]

            def progress(done, total):
                now = time.monotonic()
                if now - last[0] >= PROGRESS_EVERY or done == total:
                    last[0] = now
                    _send(f, {"progress": [done, total]})
            _send(f, {"result": handler(req, progress, actor)})
        except WormError as e:
            log.info("control request refused: %s", e)
            _send(f, {"error": one_line(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command went away; the work it asked for is done or recorded
        finally:
            try:
                f.close()
            except OSError:
                pass

    def close(self):
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _peer(conn):
    """Who is asking: the kernel's credentials of the connecting process (SO_PEERCRED), so
    the events a request causes name the person who ran the command."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    return Actor.from_pid(uid, gid, pid)


def _send(f, obj):
    f.write(json.dumps(obj).encode() + b"\n")
    f.flush()


def request(unit_path, req, progress=None):
    """Ask the daemon that has the store mounted (``req``: a typed request of requests.py);
    its result, or StoreError."""
    req = requests.encode(req)
    err = None
    for path in socket_paths(unit_path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            break
        except OSError as e:
            s.close()
            err = err or e
    else:
        raise StoreError(f"{unit_path} is in use by another process and its mount does not "
                         f"answer ({err.strerror}); unmount it first") from None
    with s, s.makefile("rwb") as f:
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        for line in f:
            msg = json.loads(line)
            if "progress" in msg:
                if progress:
                    progress(*msg["progress"])
            elif "result" in msg:
                return msg["result"]
            elif "error" in msg:
                raise StoreError(msg["error"])
    raise StoreError("the mount daemon closed the control connection without an answer")
