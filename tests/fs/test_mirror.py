"""The duplicate through a real mount: the mirror goes away (removed, read-only, full) while
files are written and comes back; every record reaches it, exactly once. The mirror alone
mounts read-only with every record bit-exact."""
import filecmp
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import clear_immutable

from .conftest import Mount, is_mounted, wormfs


def mirror_xattr(path):
    return os.getxattr(path, "user.worm.mirror").decode()


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def same_segments(a, b):
    names = sorted(os.listdir(a / "segments"))
    assert names == sorted(os.listdir(b / "segments"))
    for n in names:
        assert filecmp.cmp(a / "segments" / n, b / "segments" / n, shallow=False), n


def test_mirror_away_during_200_writes_then_back(mnt):
    write(mnt.path("before"), b"before")
    assert mirror_xattr(mnt.path("before")) == "synced"
    away = Path(str(mnt.mirror) + ".away")
    os.rename(mnt.mirror, away)
    for i in range(200):
        write(mnt.path(f"r{i:03d}.txt"), f"record {i}\n".encode() * (i + 1))
    assert all(mirror_xattr(mnt.path(f"r{i:03d}.txt")) == "pending" for i in range(0, 200, 20))
    st = mnt.status()
    assert st["state"] == "DEGRADED" and st["mirror"]["state"] == "unreachable"
    assert st["mirror"]["lag_events"] >= 400 and st["mirror"]["behind_since"]
    os.rename(away, mnt.mirror)
    wait_for(lambda: mnt.status()["mirror"]["state"] == "synced", what="the mirror to catch up")
    assert mnt.status()["state"] == "OK"
    assert all(mirror_xattr(mnt.path(f"r{i:03d}.txt")) == "synced" for i in range(200))
    states = [e["state"] for e in mnt.events("mirror")]
    assert states == ["unreachable", "synced"]
    mnt.umount()
    same_segments(mnt.store, mnt.mirror)


@pytest.fixture
def mirror_volume():
    root = Path(tempfile.mkdtemp(prefix="wormfs-mvol-"))
    root.chmod(0o755)
    vol = root / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(vol)], check=True)
    made = []
    yield root, vol, made
    try:
        for m in made:
            if is_mounted(m.mnt):
                m.umount()
            assert "Traceback" not in m.daemon_log(), m.daemon_log()
    finally:
        for m in made:
            if is_mounted(m.mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
        subprocess.run(["umount", "-l", str(vol)], check=True)
        clear_immutable(str(root))
        shutil.rmtree(root, ignore_errors=True)


def test_read_only_mirror_is_not_used_until_writable(mnt):
    # A read-only mirror (an admin's read-only remount, or a device that errored into it):
    # the primary goes on, says why, and catches the mirror up once it is writable again.
    away = Path(str(mnt.mirror) + ".away")
    os.rename(mnt.mirror, away)
    write(mnt.path("gone"), b"the seal notices the mirror is gone")
    mnt.mirror.mkdir()
    subprocess.run(["mount", "--bind", str(away), str(mnt.mirror)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt.mirror)], check=True)
        for i in range(20):
            write(mnt.path(f"ro{i}"), os.urandom(5000))
        assert mirror_xattr(mnt.path("ro19")) == "pending"
        # The keeper tries to reconnect every 2 s, and says why it cannot.
        wait_for(lambda: "Read-only" in (mnt.status()["mirror"]["detail"] or ""),
                 what="a failed reconnect")
        assert mnt.status()["state"] == "DEGRADED"
    finally:
        subprocess.run(["umount", str(mnt.mirror)], check=True)
    os.rmdir(mnt.mirror)
    os.rename(away, mnt.mirror)
    wait_for(lambda: mnt.status()["mirror"]["state"] == "synced", what="the mirror to catch up")
    assert all(mirror_xattr(mnt.path(f"ro{i}")) == "synced" for i in range(20))
    mnt.umount()
    same_segments(mnt.store, mnt.mirror)


def test_mirror_device_full_then_grown(mirror_volume):
    root, vol, made = mirror_volume
    m = Mount(root / "s", mirror=vol / "mirror")
    made.append(m)
    m.mount()
    blobs = {f"big{i}": os.urandom(1 << 20) for i in range(24)}   # more than the 16 MiB
    for name, data in blobs.items():
        write(m.path(name), data)                                 # never refused: primary ok
    assert mirror_xattr(m.path("big23")) == "pending"
    assert m.status()["mirror"]["state"] == "unreachable"
    subprocess.run(["mount", "-o", "remount,size=96m", str(vol)], check=True)
    wait_for(lambda: m.status()["mirror"]["state"] == "synced", what="the mirror to catch up")
    for name, data in blobs.items():
        assert mirror_xattr(m.path(name)) == "synced"
        with open(m.path(name), "rb") as f:
            assert f.read() == data
    m.umount()
    same_segments(m.store, m.mirror)


def test_the_mirror_alone_mounts_read_only_with_every_record(mount_factory, tmp_path):
    m = mount_factory()
    files = {"a.txt": b"alpha\n", "dir/sub/b.bin": os.urandom(3 << 20), "dir/c.csv": b"1,2\n",
             "empty": b""}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(m.path(rel)), exist_ok=True)
        write(m.path(rel), data)
    digests = {rel: os.getxattr(m.path(rel), "user.worm.blake3") for rel in files}
    m.umount()
    # The primary is lost entirely.
    clear_immutable(str(m.store))
    shutil.rmtree(m.store)
    view = tmp_path / "view"
    view.mkdir()
    wormfs("mount", m.mirror, view)
    try:
        for rel, data in files.items():
            p = view / rel
            assert p.read_bytes() == data
            assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(data).digest()
            assert os.getxattr(p, "user.worm.blake3") == digests[rel]
            assert mirror_xattr(p) == "synced"
        with pytest.raises(OSError) as e:
            write(view / "new", b"x")
        assert e.value.errno in (30, 1)   # EROFS (or EPERM)
    finally:
        wormfs("umount", view)
