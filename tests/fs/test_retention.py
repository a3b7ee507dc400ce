"""SPEC "Retention and holds" through the mount: directory defaults, expiry on the compliance
clock (real seconds), legal holds, event dates, and that all of it survives a remount."""
import errno
import os
import subprocess
import time

import pytest


def xattr(p, name):
    return os.getxattr(p, "user.worm." + name).decode()


def test_expiry_and_holds(mnt):
    d = mnt.path("short")
    os.mkdir(d)
    os.setxattr(d, "user.worm.retention", b"3s")
    assert xattr(d, "retention") == "3s"
    for name in ("a", "b"):
        with open(os.path.join(d, name), "w") as f:
            f.write(name)
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    os.setxattr(b, "user.worm.hold.case-42", b"SEC inquiry 42")
    assert xattr(b, "hold.case-42") == "SEC inquiry 42"
    with pytest.raises(PermissionError):
        os.unlink(a)          # not expired yet
    time.sleep(3.2)
    assert xattr(a, "state") == "expired"
    with pytest.raises(PermissionError):
        os.unlink(b)          # expired, but held
    os.unlink(a)              # expired and unheld: deletion allowed, audited
    os.removexattr(b, "user.worm.hold.case-42")
    os.unlink(b)
    assert os.listdir(d) == []
    deletes = mnt.events("delete")
    assert [e["path"] for e in deletes] == ["/short/a", "/short/b"]
    assert [e["type"] for e in mnt.events() if e["type"] in ("hold", "release")] == \
        ["hold", "release"]


def test_retention_survives_remount(mount_factory):
    m = mount_factory()
    p = m.path("trade.csv")
    with open(p, "w") as f:
        f.write("x")
    subprocess.run(["setfattr", "-n", "user.worm.retain_until", "-v", "2045-06-30", p],
                   check=True)
    os.setxattr(p, "user.worm.hold.audit", b"annual audit")
    before = {n: xattr(p, n) for n in ("retain_until", "serial", "committed", "blake3")}
    m.umount()
    assert not os.listdir(m.mnt)
    m.mount()
    assert {n: xattr(p, n) for n in before} == before
    assert before["retain_until"].startswith("2045-06-30T00:00:00")
    assert xattr(p, "hold.audit") == "annual audit"
    with pytest.raises(PermissionError):
        os.unlink(p)
    out = subprocess.run(["getfattr", "-d", "-m", "user.worm", p], capture_output=True,
                         text=True, check=True).stdout
    for name in ("state", "serial", "committed", "blake3", "retain_until", "hold.audit",
                 "mirror"):
        assert f"user.worm.{name}=" in out


def test_bad_values_are_einval_and_audited(mnt):
    p = mnt.path("f")
    open(p, "w").close()
    seq = mnt.last_seq()
    for name, value in (("retain_until", b"next tuesday"), ("retain_until", b"\xff\xfe"),
                        ("hold.bad name!", b"x"), ("event", b"2020-13-45"),
                        ("nonsense", b"1")):
        with pytest.raises(OSError) as e:
            os.setxattr(p, "user.worm." + name, value)
        assert e.value.errno == errno.EINVAL, name
    refused = mnt.events("refused", since=seq + 1)
    assert len(refused) == 5 and {e["errno"] for e in refused} == {"EINVAL"}
    with pytest.raises(OSError) as e:
        os.setxattr(mnt.path(), "user.worm.retention", b"-3y")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.other", b"1")
    assert e.value.errno == errno.ENOTSUP


def test_event_based_retention(mnt):
    d = mnt.path("accounts")
    os.mkdir(d)
    os.setxattr(d, "user.worm.retention", b"event+6y")
    p = os.path.join(d, "account-1001.pdf")
    with open(p, "w") as f:
        f.write("closed account")
    assert xattr(p, "retain_until") == "event+6y"
    os.setxattr(p, "user.worm.event", b"2030-01-31")
    assert xattr(p, "event").startswith("2030-01-31")
    assert xattr(p, "retain_until").startswith("2036-01-31")
    with pytest.raises(PermissionError):
        os.setxattr(p, "user.worm.event", b"2031-01-31")   # set once


def test_scratch_ttl_seals_where_it_lies(mount_factory):
    m = mount_factory(scratch_ttl="2s")
    p = m.path("upload.tmp")
    with open(p, "w") as f:
        f.write("left behind")
    assert xattr(p, "state") == "scratch"
    deadline = time.monotonic() + 15
    while xattr(p, "state") != "sealed":
        assert time.monotonic() < deadline, "scratch file not sealed after its TTL"
        os.stat(p)  # keeps the kernel's attribute cache warm (it may be sealed meanwhile)
        time.sleep(0.2)
    # No request of the kernel came with this seal: the daemon must drop what it cached.
    # It does so right after the seal's commit, which the xattr above may see first.
    deadline = time.monotonic() + 2
    while os.stat(p).st_mode & 0o222:
        assert time.monotonic() < deadline, "the kernel still shows write bits after the seal"
        time.sleep(0.05)
    assert [e["cause"] for e in m.events("seal")] == ["scratch_ttl"]
