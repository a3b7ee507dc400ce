"""SPEC "Interrupted writes": SIGKILL the daemon while a file is open for writing; after a
lazy unmount and a remount, sealed records are intact, the partial file is a record under
/.wormfs/recovered/ with its original path, the original name is free, and the audit trail
says so."""
import hashlib
import os
import signal
import subprocess
import sys
import time

WRITER = r'''
import os, sys, time
path = sys.argv[1]
data = bytes(range(256)) * (5 * 4096)          # 5 MiB
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, data)
os.fsync(fd)
print("written", flush=True)
time.sleep(600)
'''


def test_sigkill_with_open_file(mount_factory):
    m = mount_factory(foreground=True)
    os.mkdir(m.path("inbox"))
    records = {}
    for i in range(5):
        p = m.path("inbox", f"done{i}.eml")
        data = os.urandom(200_000 + i)
        with open(p, "wb") as f:
            f.write(data)
        records[p] = hashlib.sha256(data).hexdigest()
    target = m.path("inbox", "partial.eml")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, target], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=30)
        m.proc = None
    finally:
        writer.kill()
        writer.wait()
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], check=True)
    time.sleep(0.1)

    m.mount()
    for p, digest in records.items():
        with open(p, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
        assert os.getxattr(p, "user.worm.state") == b"sealed"
    assert not os.path.exists(target)              # the name is free for a retry
    recovered = os.listdir(m.path(".wormfs", "recovered"))
    assert len(recovered) == 1 and recovered[0].endswith("-partial.eml")
    rp = m.path(".wormfs", "recovered", recovered[0])
    with open(rp, "rb") as f:
        assert f.read() == bytes(range(256)) * (5 * 4096)
    assert os.getxattr(rp, "user.worm.state") == b"sealed"
    ev = m.events("recovery")
    assert len(ev) == 1 and ev[0]["path"] == "/inbox/partial.eml"
    seal = [e for e in m.events("seal") if e["cause"] == "recovery"]
    assert seal[0]["recovered_from"] == "/inbox/partial.eml"
    # The retry under the original name works.
    with open(target, "wb") as f:
        f.write(b"retry")
    assert os.getxattr(target, "user.worm.state") == b"sealed"


LOOP_WRITER = r'''
import os, sys
d, n = sys.argv[1], 0
while True:
    with open(os.path.join(d, f"{os.getpid()}-{n}"), "wb") as f:
        f.write(os.urandom(20000 + n % 7 * 9000))
    n += 1
'''


def test_sigkill_while_sealing_keeps_both_units_one_log(mount_factory):
    # Writers seal files as fast as they can; the daemon dies mid-stream. The mirror must
    # never hold a frame the primary lost: after the remount both hold one log and verify.
    m = mount_factory(foreground=True)
    writers = [subprocess.Popen([sys.executable, "-c", LOOP_WRITER, str(m.mnt)],
                                stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(m.mnt)) < 60:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=30)
        m.proc = None
    finally:
        for w in writers:
            w.kill()
            w.wait()
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], check=True)
    m.mount()
    deadline = time.monotonic() + 30
    while m.status()["mirror"]["state"] != "synced":
        assert time.monotonic() < deadline, m.status()
        time.sleep(0.2)
    r = subprocess.run([sys.executable, "-m", "wormfs", "verify", "--deep", str(m.store)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not m.events("mirror") or m.events("mirror")[-1]["state"] == "synced"
