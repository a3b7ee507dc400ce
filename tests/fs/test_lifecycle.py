"""Mounting and unmounting: errors are one line, a store mounts once, SIGTERM unmounts
cleanly, umount waits for durability, and the mount survives bad requests."""
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Mount, is_mounted, wormfs


def test_mount_errors_are_one_line(tmp_path):
    (tmp_path / "mnt").mkdir()
    r = wormfs("mount", tmp_path / "nostore", tmp_path / "mnt", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = wormfs("umount", tmp_path / "mnt", check=False)
    assert r.returncode == 1 and "not mounted" in r.stderr


def test_second_mount_of_a_store_is_refused(mount_factory, tmp_path):
    m = mount_factory()
    other = tmp_path / "other"
    other.mkdir()
    r = wormfs("mount", m.store, other, check=False)
    assert r.returncode == 1 and "in use" in r.stderr
    assert not is_mounted(other)
    r = wormfs("mount", m.store, m.mnt, check=False)
    assert r.returncode == 1 and "already a mount point" in r.stderr


def test_umount_busy_then_clean(mnt):
    p = mnt.path("held.txt")
    f = open(p, "w")
    try:
        r = wormfs("umount", mnt.mnt, check=False)
        assert r.returncode == 1 and "busy" in r.stderr
    finally:
        f.write("done")
        f.close()
    wormfs("umount", mnt.mnt)
    assert not is_mounted(mnt.mnt)
    types = [e["type"] for e in mnt.events()]
    assert types[-1] == "unmount" and "mount" in types


def test_sigterm_recovers_open_files_and_unmounts(mount_factory):
    m = mount_factory(foreground=True)
    with open(m.path("sealed.txt"), "w") as f:
        f.write("kept")
    f = open(m.path("open.txt"), "w")
    f.write("half")
    f.flush()
    os.fsync(f.fileno())
    m.proc.send_signal(signal.SIGTERM)
    m.proc.wait(timeout=60)
    m.proc = None
    try:
        f.close()
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while is_mounted(m.mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(m.mnt)
    m.mount()
    assert open(m.path("sealed.txt")).read() == "kept"
    assert not os.path.exists(m.path("open.txt"))
    [name] = os.listdir(m.path(".wormfs", "recovered"))
    assert open(m.path(".wormfs", "recovered", name)).read() == "half"
    ev = m.events("recovery")
    assert len(ev) == 1 and "unmounted" in ev[0]["reason"]


def test_fstab_style_invocation(tmp_path):
    """mount.fuse3 runs `wormfs STORE MOUNTPOINT -o OPTIONS` for type fuse.wormfs."""
    m = Mount(tmp_path / "fstab")
    r = wormfs(m.store, m.mnt, "-o", "defaults,noauto,_netdev,allow_other,x-systemd.foo")
    try:
        assert r.returncode == 0 and is_mounted(m.mnt)
        with open(m.path("x"), "w") as f:
            f.write("1")
    finally:
        m.umount()
    helper = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "mount.wormfs")
    assert os.access(helper, os.X_OK)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    out = subprocess.run([helper, "--dry-run", str(m.store), str(m.mnt), "-o", "rw,allow_other"],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert "mount" in out and str(m.store) in out


def test_the_mount_reads_ahead_a_megabyte(mnt):
    """The read-ahead is raised once the kernel has taken INIT's answer: written before, the
    kernel put it back to the 128 KiB it had offered (a cold read of a big record ran at
    about 0.4x of what it does with 1 MiB)."""
    from wormfs.fs import mounts
    from wormfs.fs.daemon import READAHEAD_KIB
    hit = mounts.find(str(mnt.mnt))
    path = f"/sys/class/bdi/{hit.dev}/read_ahead_kb"
    deadline = time.monotonic() + 10
    while int(open(path).read()) != READAHEAD_KIB and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(open(path).read()) == READAHEAD_KIB == 1024


def test_a_writer_may_hold_more_files_open_than_the_daemons_soft_limit(mount_factory):
    """The daemon started with a soft limit of 256 descriptors (a service manager's is
    often 1024) takes its hard limit: 400 files held open at once all work."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1024:
        pytest.skip(f"the hard limit on descriptors here is {hard}")
    m = mount_factory()
    m.umount()
    m.mount(foreground=True, prefix=["prlimit", f"--nofile=256:{hard}", "--"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1024), hard))
    fds = []
    try:
        for i in range(400):
            fds.append(os.open(m.path(f"held{i}.eml"), os.O_WRONLY | os.O_CREAT, 0o644))
            os.write(fds[-1], b"%d" % i)
    finally:
        for fd in fds:
            os.close(fd)
    assert len(fds) == 400
    assert os.getxattr(m.path("held399.eml"), "user.worm.state") == b"sealed"


def test_a_directory_of_many_entries_lists_each_once_with_its_attributes(mnt):
    """A listing spans many READDIRPLUS requests (about 24 entries fit in one) and each
    entry's attributes come from a listing's own decode of the inode (the stat fields
    only): every name once, and what the listing shows equals a stat of the name after the
    kernel's caches are dropped — sealed records (retain-until as atime, no write bits), a
    file still open for writing, a subdirectory, a record with an event-based retention."""
    d = mnt.path("many")
    os.mkdir(d)
    os.mkdir(os.path.join(d, "sub"))
    for i in range(150):
        with open(os.path.join(d, f"r{i:04d}.eml"), "wb") as f:
            f.write(b"x" * i)
    subprocess.run(["setfattr", "-n", "user.worm.retain_until", "-v", "event+7y",
                    os.path.join(d, "r0007.eml")], check=True)
    held_open = open(os.path.join(d, "open.txt"), "wb")
    try:
        held_open.write(b"still being written")
        held_open.flush()
        listed = {}
        with os.scandir(d) as it:
            for e in it:
                assert e.name not in listed
                st = e.stat(follow_symlinks=False)
                listed[e.name] = (st.st_ino, st.st_mode, st.st_size, st.st_nlink, st.st_uid,
                                  st.st_atime_ns, st.st_mtime_ns)
        assert set(listed) == {f"r{i:04d}.eml" for i in range(150)} | {"sub", "open.txt"}
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")   # dentries and inodes: the stats below ask the daemon again
        for name, seen in listed.items():
            st = os.stat(os.path.join(d, name))
            assert seen == (st.st_ino, st.st_mode, st.st_size, st.st_nlink, st.st_uid,
                            st.st_atime_ns, st.st_mtime_ns), name
        assert listed["r0003.eml"][1] & 0o222 == 0 and listed["r0003.eml"][2] == 3
        assert listed["open.txt"][2] == len(b"still being written")
        assert listed["sub"][3] == 2
    finally:
        held_open.close()
