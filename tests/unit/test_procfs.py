"""wormfs._procfs answers as the os module's calls it replaces in fs/closers.py do."""
import os
import subprocess
import threading

from wormfs import _procfs


def test_readlinks_gives_what_readlink_gives(tmp_path):
    held = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o600) for i in range(20)]
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    held.append(os.open(deep / "x", os.O_CREAT | os.O_WRONLY, 0o600))
    os.unlink(tmp_path / "f3")
    try:
        got = dict(_procfs.readlinks(b"/proc/self/fd"))
        for fd in held:
            assert got[str(fd).encode()] == os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
        assert got[str(held[3]).encode()].endswith(b" (deleted)")
    finally:
        for fd in held:
            os.close(fd)
    assert _procfs.readlinks(b"/proc/self/no-such-dir") is None


def test_read_files_gives_each_file_or_none(tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(100_000))
    (tmp_path / "empty").write_bytes(b"")
    paths = [tmp_path / "big", tmp_path / "missing", tmp_path / "empty", "/proc/self/status"]
    got = _procfs.read_files([os.fsencode(p) for p in paths])
    assert got[0] == (tmp_path / "big").read_bytes()
    assert got[1] is None and got[2] == b""
    assert got[3].startswith(b"Name:")
    assert _procfs.read_files([]) == []


def test_children_of_every_thread():
    kids = [subprocess.Popen(["sleep", "5"])]
    started = threading.Event()

    def spawn():  # a child of another thread shows under that thread's task
        kids.append(subprocess.Popen(["sleep", "5"]))
        started.set()
    threading.Thread(target=spawn).start()
    started.wait()
    try:
        assert sorted(_procfs.children([os.getpid()])) == sorted(k.pid for k in kids)
        assert _procfs.children([kids[0].pid]) == []
        assert _procfs.children([2 ** 22 + 12345]) == [] and _procfs.children([]) == []
    finally:
        for k in kids:
            k.kill()
            k.wait()
