"""SPEC "Life of a file" 3: everything but reading a record fails with EPERM and is audited,
for root and for an unprivileged owner alike; the record is unchanged afterwards."""
import errno
import os
import subprocess
from datetime import datetime, timezone

import pytest

from .conftest import ATTEMPT, NOBODY, as_user

# Each forbidden operation on a record P in directory D (D holds records).
ATTEMPTS = ATTEMPT + r'''
P, D, S = sys.argv[1], sys.argv[2], sys.argv[3]
attempt("open_write", lambda: os.open(P, os.O_WRONLY))
attempt("open_rdwr", lambda: os.open(P, os.O_RDWR))
attempt("open_append", lambda: os.open(P, os.O_WRONLY | os.O_APPEND))
attempt("recreate_trunc", lambda: os.open(P, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
attempt("truncate", lambda: os.truncate(P, 0))
attempt("chmod", lambda: os.chmod(P, 0o644))
attempt("chown", lambda: os.chown(P, os.getuid(), os.getgid()))
attempt("mtime", lambda: os.utime(P, (1e9, 1e9)))
attempt("rename_from", lambda: os.rename(P, P + ".moved"))
attempt("rename_onto", lambda: os.rename(S, P))
attempt("link", lambda: os.link(P, P + ".hard"))
attempt("unlink", lambda: os.unlink(P))
attempt("rmdir", lambda: os.rmdir(D))
attempt("rename_dir", lambda: os.rename(D, D + ".moved"))
attempt("shorten", lambda: os.setxattr(P, "user.worm.retain_until", b"2027-01-01"))
attempt("set_digest", lambda: os.setxattr(P, "user.worm.blake3", b"00"))
attempt("remove_retention", lambda: os.removexattr(P, "user.worm.retain_until"))
print(json.dumps(out))
'''
EXPECTED_OPS = {"open", "truncate", "setattr", "rename", "link", "unlink", "rmdir",
                "setxattr", "removexattr"}

MAKE = r'''
import json, os, sys
D = sys.argv[1]
os.makedirs(D)
with open(os.path.join(D, "blotter.csv"), "w") as f:
    f.write("trade,qty\n" * 1000)
with open(os.path.join(D, "scratch.tmp"), "w") as f:
    f.write("temp")
print(json.dumps(os.getxattr(os.path.join(D, "blotter.csv"), "user.worm.state").decode()))
'''


def b3sum(path):
    return subprocess.run(["b3sum", "--no-names", path], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("uid", [0, NOBODY], ids=["root", "unprivileged"])
def test_refusal_matrix(mnt, uid):
    base = mnt.path("desk")
    os.mkdir(base)
    os.chown(base, uid, uid)
    d = os.path.join(base, "records")
    assert as_user(uid, MAKE, d) == "sealed"
    p = os.path.join(d, "blotter.csv")
    digest = os.getxattr(p, "user.worm.blake3").decode()
    assert digest == b3sum(p)
    st = os.stat(p)
    assert st.st_mode & 0o222 == 0 and st.st_uid == uid
    seq = mnt.last_seq()

    results = as_user(uid, ATTEMPTS, p, d, os.path.join(d, "scratch.tmp"))

    assert results == {k: "EPERM" for k in results}, results
    refused = mnt.events("refused", since=seq + 1)
    assert {e["op"] for e in refused} >= EXPECTED_OPS
    assert len(refused) >= len(results)
    assert all(e["actor"]["uid"] == uid and e["errno"] == "EPERM" for e in refused)
    assert all(e.get("path", "").startswith("/desk/records") for e in refused)
    # Nothing changed.
    assert b3sum(p) == digest == os.getxattr(p, "user.worm.blake3").decode()
    assert os.stat(p).st_mtime_ns == st.st_mtime_ns and os.stat(p).st_size == st.st_size
    assert sorted(os.listdir(d)) == ["blotter.csv", "scratch.tmp"]


def test_atime_convention(mnt):
    p = mnt.path("statement.pdf")
    with open(p, "wb") as f:
        f.write(b"%PDF" * 100)
    before = os.getxattr(p, "user.worm.retain_until").decode()
    # An atime earlier than retain-until changes nothing and is refused.
    r = subprocess.run(["touch", "-a", "-d", "2030-01-01", p], capture_output=True, text=True)
    assert r.returncode != 0 and "not permitted" in r.stderr
    assert os.getxattr(p, "user.worm.retain_until").decode() == before
    # A later one extends retention (and stat shows it as the atime).
    subprocess.run(["touch", "-a", "-d", "2040-03-04T05:06:07Z", p], check=True)
    assert os.getxattr(p, "user.worm.retain_until").decode().startswith("2040-03-04T05:06:07")
    when = datetime(2040, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp()
    assert os.stat(p).st_atime == when
    # Reading does not move it.
    open(p, "rb").read()
    assert os.stat(p).st_atime == when
    kinds = [(e["type"], e.get("op")) for e in mnt.events()]
    assert ("refused", "set_atime") in kinds and ("retention", None) in kinds


def test_special_files_refused(mnt):
    for fn in (lambda: os.symlink("target", mnt.path("link")),
               lambda: os.mkfifo(mnt.path("fifo")),
               lambda: os.mknod(mnt.path("dev"), 0o600 | 0o020000, os.makedev(1, 3))):
        with pytest.raises(PermissionError) as e:
            fn()
        assert e.value.errno == errno.EPERM
    assert {e["op"] for e in mnt.events("refused")} >= {"symlink", "mknod"}
    assert os.listdir(mnt.mnt) == [".wormfs"]


def test_stat_right_after_close_shows_the_record(mnt):
    # The kernel caches an open file's attributes for a second; after the seal stat must
    # show the record (no write bits, retain-until as atime), not the cached open file.
    p = mnt.path("fresh.csv")
    with open(p, "wb") as f:
        f.write(b"a,b\n")
        assert os.fstat(f.fileno()).st_mode & 0o200
        assert os.stat(p).st_mode & 0o200
    st = os.stat(p)
    assert st.st_mode & 0o222 == 0
    until = os.getxattr(p, "user.worm.retain_until").decode()
    shown = datetime.fromtimestamp(st.st_atime, timezone.utc)
    assert shown.strftime("%Y-%m-%dT%H:%M:%S") == until[:19]
