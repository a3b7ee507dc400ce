"""The hostile-caller suite (issue 14): every test attacks through the product's own paths
as the review did, with real processes, a real unprivileged user (setpriv) and real
sockets, and ends by checking that the store is still sound (``assert_sound``)."""
import json
import os
import subprocess

from tests.fs.conftest import (ATTEMPT, NOBODY, as_user, mnt, mount_factory,  # noqa: F401
                               wormfs, is_mounted)

__all__ = ["ATTEMPT", "NOBODY", "as_user", "mnt", "mount_factory", "wormfs", "assert_sound",
           "setpriv", "xattr", "events_since"]


def setpriv(uid, *cmd, check=False):
    """Run a command as ``uid`` with no supplementary groups (util-linux setpriv)."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           *map(str, cmd)], capture_output=True, text=True, check=check,
                          cwd="/")


def xattr(path, name):
    return os.getxattr(path, "user.worm." + name).decode()


def events_since(m, seq, etype=None):
    return [e for e in m.events(since=seq + 1) if etype is None or e["type"] == etype]


def assert_sound(m):
    """After an attack: the mount is alive, verify is clean on both units, the mirror holds
    everything, and the daemon logged no traceback."""
    assert is_mounted(m.mnt), "the mount died"
    os.listdir(m.mnt)
    r = wormfs("verify", m.store, "--json", check=False)
    report = json.loads(r.stdout) if r.stdout.strip() else {}
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert report.get("ok", True), report
    st = m.status()
    assert st["mirror"]["state"] == "synced", st["mirror"]
    assert "Traceback" not in m.daemon_log(), m.daemon_log()
