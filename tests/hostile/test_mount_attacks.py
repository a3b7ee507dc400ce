"""Issue 14, items 2-8, 11 and 13: attacks through the mount, as an ordinary user and as root.
Each test names the item it reproduces; each failed on the main of before this work."""
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from .conftest import (ATTEMPT, NOBODY, as_user, assert_sound, events_since, setpriv,
                       wormfs, xattr)
from wormfs.timeutil import parse_date


def b3sum(path):
    return subprocess.run(["b3sum", "--no-names", path], capture_output=True, text=True,
                          check=True).stdout.strip()


def shared_dir(m, name, retention=None):
    d = m.path(name)
    os.mkdir(d)
    os.chmod(d, 0o777)
    if retention:
        os.setxattr(d, "user.worm.retention", retention.encode())
    return d


# -- item 2 and 13: retention floor, exact values, EPERM for earlier dates ---------------------

SET_RETENTION = ATTEMPT + r'''
p = sys.argv[1]
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"statement\n")
def retain(name, value):
    attempt(name, lambda: os.setxattr(p, "user.worm.retain_until", value))
soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
retain("two_seconds", soon.encode())
retain("event_1s", b"event+1s")
retain("leading_space", b" 2090-01-01")
retain("trailing_nul", b"2090-01-01\0")
retain("epoch", b"1970-01-01")
retain("longer", b"2090-01-01")
os.close(fd)
out["after"] = os.getxattr(p, "user.worm.retain_until").decode()
print(json.dumps(out))
'''


def test_item2_an_owner_cannot_go_below_the_directory_floor(mnt):
    d = shared_dir(mnt, "statements", "6y")
    p = os.path.join(d, "s1.txt")
    out = as_user(NOBODY, SET_RETENTION, p)
    assert out["two_seconds"] == "EPERM" and out["event_1s"] == "EPERM"
    assert out["epoch"] == "EPERM"
    assert out["leading_space"] == "EINVAL" and out["trailing_nul"] == "EINVAL"
    assert out["longer"] == "ok" and out["after"].startswith("2090-01-01")
    committed = parse_date(xattr(p, "committed"))
    assert parse_date(xattr(p, "retain_until")) >= committed + 5 * 365 * 86400 * 10**6
    r = setpriv(NOBODY, "rm", "-f", p)
    assert r.returncode != 0 and os.path.exists(p)
    refused = [e for e in mnt.events("refused") if e.get("path") == "/statements/s1.txt"]
    assert {e["errno"] for e in refused} >= {"EPERM", "EINVAL"}
    assert_sound(mnt)


def test_item13_a_past_date_on_a_record_is_eperm_and_audited(mnt):
    p = mnt.path("r.txt")
    with open(p, "w") as f:
        f.write("x")
    before = xattr(p, "retain_until")
    seq = mnt.last_seq()
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.worm.retain_until", b"1970-01-01")
    assert e.value.errno == errno.EPERM
    assert xattr(p, "retain_until") == before
    assert [x["op"] for x in events_since(mnt, seq, "refused")] == ["set_retain_until"]


# -- item 3: a writable descriptor that outlives the seal --------------------------------------

HOLDER = r'''
import errno, json, mmap, os, socket, sys
if os.fork():                   # daemonize: reparented, no longer the opener's child
    os._exit(0)
os.setsid()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
msg, fds, _, _ = socket.recv_fds(s, 16, 1)
fd = fds[0]
s.sendall(b"got")
s.recv(16)                      # the owner has closed its copy: the file is sealed
out = {}
try:
    out["pwrite"] = os.pwrite(fd, b"FORGED", 0)
except OSError as e:
    out["pwrite"] = errno.errorcode[e.errno]
try:
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:6] = b"FORGED"
    m.flush()
    out["mmap"] = "ok"
except (OSError, ValueError) as e:
    out["mmap"] = errno.errorcode.get(getattr(e, "errno", 0) or 0, str(e))
os.close(fd)
print(json.dumps(out))
'''


def test_item3_a_descriptor_passed_over_a_socket_cannot_write_after_the_seal(mnt, tmp_path):
    p = mnt.path("trade.csv")
    sock_path = str(tmp_path / "pass.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, sock_path],
                              stdout=subprocess.PIPE, text=True)
    conn, _ = srv.accept()
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"original record\n")
    socket.send_fds(conn, [b"fd"], [fd])
    assert conn.recv(16) == b"got"
    os.close(fd)                       # the last close this process makes: the seal
    assert xattr(p, "state") == "sealed"
    digest = xattr(p, "blake3")
    with open(p, "rb") as f:           # a reader caches the record's pages
        assert f.read() == b"original record\n"
    seq = mnt.last_seq()
    conn.sendall(b"go")
    out = json.loads(holder.communicate(timeout=60)[0])
    conn.close()
    srv.close()
    assert out["pwrite"] == "EPERM", out
    assert out["mmap"] != "ok", out     # shared writable maps of a writable handle: refused
    for _ in range(3):
        with open(p, "rb") as f:
            assert f.read() == b"original record\n"
        assert b3sum(p) == digest
    assert [e["op"] for e in events_since(mnt, seq, "refused")] == ["write"]
    assert_sound(mnt)


# -- item 4: O_TRUNC --------------------------------------------------------------------------

RDONLY_TRUNC = ATTEMPT + r'''
attempt("trunc", lambda: os.open(sys.argv[1], os.O_RDONLY | os.O_TRUNC))
print(json.dumps(out))
'''


def test_item4_o_trunc_never_blanks_a_record_or_a_file_being_written(mnt):
    rec = mnt.path("record.bin")
    with open(rec, "wb") as f:
        f.write(b"r" * 10000)
    seq = mnt.last_seq()
    with pytest.raises(OSError) as e:
        os.open(rec, os.O_RDONLY | os.O_TRUNC)        # root, read-only, O_TRUNC
    assert e.value.errno == errno.EPERM
    assert os.stat(rec).st_size == 10000
    with open(rec, "rb") as f:
        assert f.read() == b"r" * 10000
    assert [x["op"] for x in events_since(mnt, seq, "refused")] == ["open"]
    assert as_user(NOBODY, RDONLY_TRUNC, rec)["trunc"] == "EPERM"
    # A file being written: a reader's O_RDONLY|O_TRUNC is EACCES and changes nothing.
    w = mnt.path("growing.bin")
    fd = os.open(w, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"a" * 5000)
    assert as_user(NOBODY, RDONLY_TRUNC, w)["trunc"] == "EACCES"
    os.write(fd, b"b" * 5000)
    os.close(fd)
    with open(w, "rb") as f:
        assert f.read() == b"a" * 5000 + b"b" * 5000
    assert_sound(mnt)


# -- item 5: permissions ------------------------------------------------------------------------

PERMS = ATTEMPT + r'''
d, shared = sys.argv[1], sys.argv[2]
attempt("stat_in_0700", lambda: os.stat(os.path.join(d, "nox", "f.txt")))
attempt("read_in_0700", lambda: open(os.path.join(d, "nox", "f.txt")).read())
attempt("utime_explicit", lambda: os.utime(shared, (1e9, 1e9)))
attempt("utime_now", lambda: os.utime(shared, None))
attempt("chown_noop", lambda: os.chown(shared, 0, 0))
attempt("unlink_sticky", lambda: os.unlink(os.path.join(d, "sticky", "root.tmp")))
print(json.dumps(out))
'''


def test_item5_the_kernel_permission_rules_hold(mnt):
    d = mnt.mnt
    os.mkdir(mnt.path("nox"), 0o700)
    with open(mnt.path("nox", "f.txt"), "w") as f:
        f.write("secret")
    os.stat(mnt.path("nox", "f.txt"))           # root caches the entry first
    shared = mnt.path("shared.tmp")              # scratch: stays open, others may write
    with open(shared, "w") as f:
        f.write("x")
    os.chmod(shared, 0o666)
    os.mkdir(mnt.path("sticky"))
    os.chmod(mnt.path("sticky"), 0o1777)
    with open(mnt.path("sticky", "root.tmp"), "w") as f:
        f.write("y")
    seq = mnt.last_seq()
    out = as_user(NOBODY, PERMS, d, shared)
    assert out["stat_in_0700"] == "EACCES" and out["read_in_0700"] == "EACCES"
    assert out["utime_explicit"] == "EPERM" and out["utime_now"] == "ok"
    assert out["chown_noop"] == "EPERM"
    assert out["unlink_sticky"] == "EPERM"
    assert [e["op"] for e in events_since(mnt, seq, "refused")] == ["unlink"]
    # POSIX details pjdfstest checks.
    names = subprocess.run(["ls", "-a", d], capture_output=True, text=True).stdout.split()
    assert names[:2] == [".", ".."]
    assert os.stat(d).st_nlink == 2 + sum(1 for n in os.listdir(d)
                                           if os.path.isdir(os.path.join(d, n)))
    before = os.stat(mnt.path("sticky")).st_mtime_ns
    time.sleep(0.01)
    with open(mnt.path("sticky", "new.tmp"), "w"):
        pass
    assert os.stat(mnt.path("sticky")).st_mtime_ns > before
    with open(mnt.path("big.tmp"), "w") as f:
        with pytest.raises(OSError) as e:
            os.pwrite(f.fileno(), b"x", 1 << 50)
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.ftruncate(f.fileno(), 1 << 45)
        assert e.value.errno == errno.EFBIG
    assert_sound(mnt)


# -- item 6: /.wormfs ----------------------------------------------------------------------------

def _crash_with_an_open_file(m):
    """Kill the (foreground) daemon while half.eml is open for writing, then mount again."""
    fd = os.open(m.path("half.eml"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"half")
    m.proc.kill()
    m.proc.wait()
    try:
        os.close(fd)
    except OSError:
        pass  # ENOTCONN: the daemon is gone
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)])
    m.mount(foreground=True)


def test_item6_nobody_takes_dot_wormfs_and_a_crash_still_remounts(mount_factory):
    m = mount_factory(foreground=True)
    assert os.path.isdir(m.path(".wormfs", "recovered"))
    st = os.stat(m.path(".wormfs"))
    assert st.st_uid == 0 and stat.S_ISDIR(st.st_mode)
    seq = m.last_seq()
    os.mkdir(m.path("mine"))
    for fn in (lambda: os.rename(m.path("mine"), m.path(".wormfs")),
               lambda: os.rmdir(m.path(".wormfs", "recovered")),
               lambda: os.rename(m.path(".wormfs"), m.path("elsewhere")),
               lambda: os.chmod(m.path(".wormfs"), 0o777)):
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EPERM
    assert len(events_since(m, seq, "refused")) == 4
    # A file left open by a killed daemon is recovered there at the next mount.
    _crash_with_an_open_file(m)
    got = os.listdir(m.path(".wormfs", "recovered"))
    assert len(got) == 1 and got[0].endswith("half.eml")
    assert_sound(m)


def test_item6_an_old_store_whose_dot_wormfs_a_user_took_still_mounts(mount_factory,
                                                                       monkeypatch):
    # A store an older wormfs made: no reserved directory, and a user's record named
    # /.wormfs at the root. Emulated in this process only: the old writer did not reserve
    # the name (the product installed here always does).
    from wormfs.store.store import Store
    m = mount_factory()
    m.umount()
    with Store(str(m.store)) as st:
        old = st.lookup(1, b".wormfs").ino
        monkeypatch.setattr(Store, "_ensure_reserved", lambda self: None)
        monkeypatch.setattr(Store, "_check_reserved_name", lambda self, *a: None)
        monkeypatch.setattr(Store, "_check_not_reserved", lambda self, *a: None)
        st.rmdir(old, b"recovered", None)
        st.rmdir(1, b".wormfs", None)
        ino = st.create(1, b".wormfs", 0o644, None).ino
        st.write(ino, 0, b"a user's file, made before the name was reserved")
        st.seal(ino)
    monkeypatch.undo()
    m.mount(foreground=True)
    with open(m.path(".wormfs"), "rb") as f:          # the user's record is untouched
        assert f.read().startswith(b"a user's file")
    assert os.path.isdir(m.path(".wormfs.1", "recovered"))
    assert os.stat(m.path(".wormfs.1")).st_uid == 0
    st = m.status()
    assert any(n.startswith("/.wormfs is record") and "/.wormfs.N/recovered/" in n
               for n in st["notes"]), st["notes"]
    # A crash still recovers, into the fallback.
    _crash_with_an_open_file(m)
    got = os.listdir(m.path(".wormfs.1", "recovered"))
    assert len(got) == 1 and got[0].endswith("half.eml")
    r = wormfs("verify", m.store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# -- item 7: units readable by root alone -------------------------------------------------------

def test_item7_no_one_but_root_reads_a_unit(mnt):
    with open(mnt.path("customer.txt"), "w") as f:
        f.write("SSN 078-05-1120\n")
    for unit in (mnt.store, mnt.mirror):
        for dirpath, dirs, files in os.walk(unit):
            for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                assert os.lstat(p).st_mode & 0o077 == 0, p
        r = setpriv(NOBODY, "grep", "-r", "078-05-1120", unit)
        assert r.returncode != 0 and "078-05-1120" not in r.stdout
    loose = os.path.join(mnt.store, "unit.json")
    os.chmod(loose, 0o644)
    st = mnt.status()
    assert not st["compliant"] and any("unit.json" in r for r in st["reasons"]), st
    os.chmod(loose, 0o600)


# -- item 8: the scratch TTL fires while the file is held open -----------------------------------

def test_item8_scratch_ttl_seals_a_file_held_open(mount_factory):
    m = mount_factory(scratch_ttl="2s")
    p = m.path("upload.tmp")
    w = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(w, b"partial upload")
    r = os.open(p, os.O_RDONLY)                   # a reader holding it open
    deadline = time.monotonic() + 30
    while xattr(p, "state") != "sealed":
        assert time.monotonic() < deadline, "the scratch TTL never fired"
        time.sleep(0.2)
    seq = m.last_seq()
    with pytest.raises(OSError) as e:
        os.write(w, b" more")
    assert e.value.errno == errno.EPERM
    os.close(w)
    os.close(r)
    with open(p, "rb") as f:
        assert f.read() == b"partial upload"
    assert [x["op"] for x in events_since(m, seq, "refused")] == ["write"]
    assert_sound(m)


# -- item 11: the audit trail holds only real refusals --------------------------------------

def test_item11_closing_and_the_atime_convention_log_no_refusals(mnt):
    seq = mnt.last_seq()
    for i in range(5):
        with open(mnt.path(f"f{i}.txt"), "w") as f:
            f.write("data")
    subprocess.run(["cp", "-p", "/etc/hostname", mnt.path("copied")], check=True)
    subprocess.run(["touch", "-a", "-d", "2091-01-01", mnt.path("f0.txt")], check=True)
    assert xattr(mnt.path("f0.txt"), "retain_until").startswith("2091-01-01")
    evs = events_since(mnt, seq)
    assert [e for e in evs if e["type"] == "refused"] == []
    assert [e["type"] for e in evs if e["type"] == "retention"] == ["retention"]
