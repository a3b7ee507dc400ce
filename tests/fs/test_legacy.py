"""SPEC "Who uses it": programs that know nothing about WORM work unchanged on the
create-write-close path and get a clean EPERM for anything WORM forbids."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import pytest

from tests.conftest import clear_immutable
from tests.fs.conftest import Mount


def run(*cmd, ok=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if ok:
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r


def tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "mail" / "2026").mkdir(parents=True)
    (src / "chat").mkdir()
    for i in range(20):
        (src / "mail" / "2026" / f"msg{i:03}.eml").write_bytes(os.urandom(1000 + i * 997))
    (src / "chat" / "big.log").write_bytes(os.urandom(3 << 20))
    (src / "chat" / "empty.log").write_bytes(b"")
    return src


def all_sealed(root):
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            state = os.getxattr(os.path.join(dirpath, f), "user.worm.state").decode()
            assert state == "sealed", (f, state)


def test_cp_r(mnt, source):
    run("cp", "-r", str(source), mnt.path("cp"))
    assert tree(mnt.path("cp")) == tree(source)
    all_sealed(mnt.path("cp"))


def test_cp_a_keeps_times(mnt, source):
    run("cp", "-a", str(source), mnt.path("cpa"))
    src_msg = source / "mail" / "2026" / "msg000.eml"
    dst_msg = mnt.path("cpa", "mail", "2026", "msg000.eml")
    assert int(os.stat(dst_msg).st_mtime) == int(os.stat(src_msg).st_mtime)
    all_sealed(mnt.path("cpa"))


def test_rsync_temp_then_rename(mnt, source):
    run("rsync", "-r", "-t", str(source) + "/", mnt.path("rs"))
    assert tree(mnt.path("rs")) == tree(source)
    all_sealed(mnt.path("rs"))
    names = [f for _, _, files in os.walk(mnt.path("rs")) for f in files]
    assert not [n for n in names if n.startswith(".")], "rsync temp files left behind"
    seals = mnt.events("seal")
    assert {e["cause"] for e in seals} == {"rename"}
    # No spurious refusals: rsync finished cleanly and the trail says so.
    assert mnt.events("refused") == []
    # Running it again changes nothing and refuses nothing (same size and mtime: skipped).
    run("rsync", "-r", "-t", str(source) + "/", mnt.path("rs"))
    assert mnt.events("refused") == []


def test_tar_x(mnt, source, tmp_path):
    archive = tmp_path / "a.tar"
    run("tar", "-C", str(source), "-cf", str(archive), ".")
    os.mkdir(mnt.path("tar"))
    run("tar", "-C", mnt.path("tar"), "-xf", str(archive))
    assert tree(mnt.path("tar")) == tree(source)
    all_sealed(mnt.path("tar"))
    # Extracting again over records fails cleanly, and leaves them as they were.
    r = run("tar", "-C", mnt.path("tar"), "-xf", str(archive), ok=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "File exists" in r.stderr or "Operation not permitted" in r.stderr
    assert tree(mnt.path("tar")) == tree(source)


def test_shell_redirections(mnt):
    p = mnt.path("report.txt")
    run("sh", "-c", f"echo first > {p}")
    assert os.getxattr(p, "user.worm.state") == b"sealed"
    for op in (">", ">>"):
        r = run("sh", "-c", f"echo again {op} {p}", ok=False)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr
    with open(p) as f:
        assert f.read() == "first\n"
    # A command writing to a redirected stdout through a subshell: the seal waits for it.
    q = mnt.path("lines.txt")
    run("sh", "-c", f"(for i in 1 2 3; do echo $i; sleep 0.05; done) > {q}")
    with open(q) as f:
        assert f.read() == "1\n2\n3\n"
    assert os.getxattr(q, "user.worm.state") == b"sealed"


def test_rm_rf_leaves_records(mnt, source):
    run("cp", "-r", str(source), mnt.path("keep"))
    open(mnt.path("keep", "scratch.tmp"), "w").write("temporary")
    r = run("rm", "-rf", mnt.path("keep"), ok=False)
    assert r.returncode != 0
    left = tree(mnt.path("keep"))
    assert left == tree(source)  # every record is still there; the scratch file is gone


def test_editor_style_saves(mnt):
    doc = mnt.path("memo.txt")
    # vi: a swap file written and deleted, the file written, the swap file removed.
    swap = mnt.path(".memo.txt.swp")
    with open(swap, "wb") as f:
        f.write(b"b0VIM 9.0" + bytes(4000))
    assert os.getxattr(swap, "user.worm.state") == b"scratch"
    with open(doc, "w") as f:
        f.write("version 1\n")
    os.unlink(swap)
    # "Save as temp, then rename into place": a new name is fine...
    tmp = mnt.path("memo2.txt.tmp")
    with open(tmp, "w") as f:
        f.write("version 2\n")
    assert os.getxattr(tmp, "user.worm.state") == b"scratch"
    os.rename(tmp, mnt.path("memo2.txt"))
    assert os.getxattr(mnt.path("memo2.txt"), "user.worm.state") == b"sealed"
    # ...replacing a record is refused, and the temp file stays for the user to keep.
    tmp = mnt.path("memo.txt.tmp")
    with open(tmp, "w") as f:
        f.write("version 3\n")
    with pytest.raises(PermissionError):
        os.rename(tmp, doc)
    assert open(doc).read() == "version 1\n"
    assert sorted(os.listdir(mnt.mnt)) == [".wormfs", "memo.txt", "memo.txt.tmp", "memo2.txt"]


def test_open_file_rules(mnt):
    """Before close: random writes, sparse regions, truncation, fsync, read back, rename."""
    p = mnt.path("draft.bin")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"tail", 10 << 20)
        os.pwrite(fd, b"head", 0)
        os.fsync(fd)
        assert os.pread(fd, 4, 0) == b"head"
        assert os.fstat(fd).st_size == (10 << 20) + 4
        os.ftruncate(fd, 5 << 20)
        assert os.getxattr(p, "user.worm.state") == b"open"
        os.rename(p, mnt.path("final.bin"))
    finally:
        os.close(fd)
    q = mnt.path("final.bin")
    assert os.getxattr(q, "user.worm.state") == b"sealed"
    with open(q, "rb") as f:
        data = f.read()
    assert len(data) == 5 << 20 and data[:4] == b"head" and data[4:] == bytes(len(data) - 4)


def test_unlink_while_open_keeps_data_for_the_writer(mnt):
    p = mnt.path("gone.txt")
    with open(p, "w+") as f:
        f.write("data")
        f.flush()
        os.unlink(p)
        f.seek(0)
        assert f.read() == "data"
    assert os.listdir(mnt.mnt) == [".wormfs"]
    assert mnt.events("seal") == []


def test_child_keeps_writing_after_the_parent_closes(mnt):
    """A parent hands its descriptor to a child and closes its own copy first: the seal
    waits for the child's last close (closers.py)."""
    p = mnt.path("job.log")
    with open(p, "w") as f:
        child = subprocess.Popen(["sh", "-c", "sleep 0.3; echo late"], stdout=f)
    assert os.getxattr(p, "user.worm.state") == b"open"
    assert child.wait(timeout=30) == 0
    with open(p) as f:
        assert f.read() == "late\n"
    assert os.getxattr(p, "user.worm.state") == b"sealed"
    assert mnt.events("refused") == []


def test_a_dup_of_a_renamed_file_keeps_it_open(mnt):
    """The last-close check reads the fdinfo of descriptors whose /proc link ends in a name
    the file has had: after a rename the kernel shows the new one, and a dup still open
    under it keeps the file open."""
    first, second = mnt.path("draft.eml"), mnt.path("final.eml")
    others = [open(mnt.path(f"other{i}.eml"), "wb") for i in range(5)]  # more to look at
    try:
        fd = os.open(first, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"one ")
        dup = os.dup(fd)
        os.rename(first, second)
        os.close(fd)
        try:
            assert os.getxattr(second, "user.worm.state") == b"open"
            os.write(dup, b"two")
        finally:
            os.close(dup)
    finally:
        for f in others:
            f.close()
    assert os.getxattr(second, "user.worm.state") == b"sealed"
    with open(second, "rb") as f:
        assert f.read() == b"one two"
    assert mnt.events("refused") == []


# A writer with two threads: one writes a file while the other starts a program. The child
# sits between fork and exec (preexec_fn holds it there) with a close-on-exec copy of every
# descriptor of the process when the writer closes its file.
_THREADED_WRITER = """
import os, subprocess, sys, threading, time
path = sys.argv[1]
f = open(path, "wb")
f.write(b"x" * 100_000)
spawner = threading.Thread(target=subprocess.run, args=(["true"],),
                           kwargs=dict(preexec_fn=lambda: time.sleep(0.25)))
spawner.start()
time.sleep(0.08)
f.close()
print(os.getxattr(path, "user.worm.state").decode())
spawner.join()
"""


def test_close_seals_while_another_thread_starts_a_program(mnt):
    """close() returns on a record even though a child forked by another thread still held a
    copy of the descriptor then: the copy was going at the child's exec (closers.py)."""
    p = mnt.path("blotter.csv")
    r = run(sys.executable, "-c", _THREADED_WRITER, p)
    assert r.stdout.split() == ["sealed"]
    assert os.getxattr(p, "user.worm.blake3").decode() == \
        blake3.blake3(b"x" * 100_000).hexdigest()
    assert mnt.events("refused") == []


# Writers closing files while another thread of theirs starts programs, one after the other:
# each child's copies of the descriptors close at its exec (a FLUSH each, the writer still
# holding its own), and the writer's close can come while the daemon is still answering that.
_BUSY_WRITERS = """
import os, subprocess, sys, threading
mnt, stop = sys.argv[1], threading.Event()
bad = []
def writer(k):
    for i in range(150):
        p = os.path.join(mnt, f"w{k}-{i}.eml")
        with open(p, "wb") as f:
            f.write(os.urandom(3000))
        state = os.getxattr(p, "user.worm.state").decode()
        if state != "sealed":
            bad.append(f"{p}:{state}")
def spawner():
    while not stop.is_set():
        subprocess.run(["true"])
ws = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
sp = threading.Thread(target=spawner)
sp.start()
for t in ws: t.start()
for t in ws: t.join()
stop.set()
sp.join()
print(len(bad), *bad[:5])
"""


def test_every_close_seals_while_other_threads_keep_starting_programs(mnt):
    """A FLUSH that came while another check of the same file was under way (a child's,
    answered "still held") returned at once, leaving the seal to RELEASE: 1 close in 40
    returned on a file not sealed yet (operations.SealTurns)."""
    r = run(sys.executable, "-c", _BUSY_WRITERS, mnt.mnt)
    assert r.stdout.split() == ["0"]
    assert mnt.events("refused") == []


# A forked child that does not exec goes on writing through its inherited close-on-exec copy
# after the parent has closed its own: the seal must wait for the child, however long.
_FORKED_WRITER = """
import os, sys, time
path = sys.argv[1]
f = open(path, "wb", buffering=0)
f.write(b"early ")
pid = os.fork()
if pid == 0:
    time.sleep(1.0)
    f.write(b"late")
    os._exit(0)
f.close()
print(os.getxattr(path, "user.worm.state").decode())
os.waitpid(pid, 0)
"""


def test_a_forked_child_writing_after_the_parent_closes_delays_the_seal(mnt):
    p = mnt.path("forked.log")
    r = run(sys.executable, "-c", _FORKED_WRITER, p)
    assert r.stdout.split() == ["open"]
    with open(p, "rb") as f:
        assert f.read() == b"early late"
    assert os.getxattr(p, "user.worm.state") == b"sealed"
    assert mnt.events("refused") == []


def test_a_child_closing_its_copy_seals_nothing_when_the_mount_is_seen_from_another_namespace(
        tmp_path):
    """The daemon mounts in a mount namespace of its own (a service manager's, a
    container's) and the mount reaches this one by propagation: here it is another mount,
    with another mount id. A program that starts a child while it writes (the child closes
    its inherited copy at exec: a FLUSH) must still get its whole file sealed, at its own
    close."""
    root = Path(tempfile.mkdtemp(prefix="wormfs-ns-"))
    root.chmod(0o755)
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "--make-shared", str(root)], check=True)
    m = None
    try:
        m = Mount(root / "m")
        m.mount(foreground=True, prefix=["unshare", "-m", "--propagation", "unchanged", "--"])
        p = m.path("report.csv")
        data = os.urandom(3 << 20)
        with open(p, "wb") as f:
            f.write(data[:1 << 20])
            subprocess.run(["true"], check=True)   # fork + exec: the child's copy closes
            f.write(data[1 << 20:])
        assert os.getxattr(p, "user.worm.state") == b"sealed"
        assert os.getxattr(p, "user.worm.blake3").decode() == blake3.blake3(data).hexdigest()
        assert m.events("refused") == []
    finally:
        if m is not None:
            m.umount()
        subprocess.run(["umount", "-l", str(root)])
        clear_immutable(str(root))
        shutil.rmtree(root, ignore_errors=True)
