"""Real FUSE mounts for tests: the store is created and mounted with the real ``wormfs``
command (``python -m wormfs``), used through real system calls and real tools, and unmounted
with ``wormfs umount``. Needs root and /dev/fuse (the tests are skipped without them)."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import clear_immutable
from wormfs.store.store import Store

WORMFS = [sys.executable, "-m", "wormfs"]
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="FUSE tests need root, /dev/fuse and fusermount3")


def wormfs(*args, check=True, **kw):
    r = subprocess.run(WORMFS + [str(a) for a in args], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"wormfs {' '.join(map(str, args))} exited {r.returncode}: "
                             f"{r.stderr.strip()}")
    return r


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


class Mount:
    """A store and its mount point; ``events()`` reads the audit trail beside the daemon."""

    def __init__(self, root, scratch_ttl="24h", default_retention="6y", mirror=None,
                 mkfs_args=()):
        self.root = root
        root.mkdir(exist_ok=True)
        self.store = root / "store"
        self.mirror = mirror or root / "mirror"
        self.mnt = root / "mnt"
        self.log = root / "daemon.log"
        self.mnt.mkdir()
        wormfs("mkfs", self.store, "--mirror", self.mirror, "--allow-same-device",
               "--scratch-ttl", scratch_ttl, "--default-retention", default_retention,
               *mkfs_args)
        self.proc = None

    def mount(self, foreground=False, prefix=()):
        """``prefix``: a command the daemon runs under (faketime, unshare), foreground only."""
        args = ["mount", self.store, self.mnt, "-o", "allow_other", "--log", self.log]
        if foreground:
            # A child we hold the pid of (crash tests kill it).
            self.proc = subprocess.Popen(list(prefix) + WORMFS + [str(a) for a in args] +
                                         ["--foreground"],
                                         stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))
            deadline = time.monotonic() + 30
            while not is_mounted(self.mnt):
                assert self.proc.poll() is None, self.daemon_log()
                assert time.monotonic() < deadline, "mount did not come up"
                time.sleep(0.02)
        else:
            wormfs(*args)
        return self

    def umount(self):
        if is_mounted(self.mnt):
            r = wormfs("umount", self.mnt, check=False)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)])
                raise AssertionError(f"wormfs umount failed: {r.stderr}")
        if self.proc is not None:
            self.proc.wait(timeout=60)
            self.proc = None

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def events(self, etype=None, since=1):
        with Store(str(self.store), readonly=True) as st:
            evs = list(st.events(since))
        return [e for e in evs if etype is None or e["type"] == etype]

    def status(self):
        r = wormfs("status", self.store, "--json", check=False)
        assert r.returncode in (0, 1) and not r.stderr, r.stderr
        return json.loads(r.stdout)

    def last_seq(self):
        with Store(str(self.store), readonly=True) as st:
            return st.journal.last_seq

    def daemon_log(self):
        try:
            return self.log.read_text()
        except OSError:
            return ""


@contextlib.contextmanager
def tmpfs_volume(size):
    """A tmpfs of ``size`` under a fresh directory, for a device that fills up or goes away:
    yields (root, vol, made). Every Mount appended to ``made`` is unmounted and its daemon log
    checked for tracebacks at the end; then the tmpfs goes, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="wormfs-vol-"))
    root.chmod(0o755)
    vol = root / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(vol)],
                   check=True)
    made = []
    try:
        yield root, vol, made
        for m in made:
            if is_mounted(m.mnt):
                m.umount()
            assert "Traceback" not in m.daemon_log(), m.daemon_log()
    finally:
        for m in made:
            if is_mounted(m.mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
        clear_immutable(str(root))
        subprocess.run(["umount", "-l", str(vol)], check=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mount_factory():
    # Not tmp_path: pytest makes it 0700 under /tmp/pytest-of-root, and the unprivileged
    # user of the permission tests must reach the mount point.
    tmp_path = Path(tempfile.mkdtemp(prefix="wormfs-test-"))
    tmp_path.chmod(0o755)
    made = []

    def make(**kw):
        m = Mount(tmp_path / f"m{len(made)}", **{k: v for k, v in kw.items()
                                                 if k != "foreground"})
        made.append(m)
        return m.mount(foreground=kw.get("foreground", False))
    yield make
    for m in made:
        try:
            m.umount()
        finally:
            if is_mounted(m.mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
            log = m.daemon_log()
            if "Traceback" in log:
                print(log)
            clear_immutable(str(m.root))
            assert "Traceback" not in log, "the daemon logged a traceback"
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def mnt(mount_factory):
    return mount_factory()


# The start of a script run with ``as_user``: ``attempt(name, fn)`` records "ok" or the
# errno name of each call in ``out``, which the script prints as JSON at the end.
ATTEMPT = r'''
import errno, json, os, sys, time
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
'''


def as_user(uid, code, *args):
    """Run Python ``code`` as another user (no supplementary groups); it prints JSON."""
    def drop():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    # The system interpreter: the venv's may live where the user cannot reach (/root).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([python, "-c", code, *map(str, args)], capture_output=True,
                       text=True, preexec_fn=drop, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
