"""Issue 14, items 1, 9, 10 and 12: the control socket, the clock after a crash, a malformed
event on its way to the mirror, and enterprise mode's privileged delete."""
import errno
import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.conftest import FakeTime, clear_immutable, make_pair
from wormfs.clock import PERSIST_INTERVAL_US
from wormfs.store.store import Store
from wormfs.timeutil import US

from .conftest import NOBODY, assert_sound, setpriv, wormfs, xattr


def ask(unit, line):
    """One raw request on the daemon's control socket, as an attacker would send it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(unit, "control.sock"))
    with s, s.makefile("rwb") as f:
        f.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")
        f.flush()
        return [json.loads(x) for x in f]


FORGERIES = [
    {"op": "note", "type": "export", "fields": {"type": "retention", "seq": 1, "ino": 9,
                                                "after": {"until": 0}}},
    {"op": "note", "type": "retention", "fields": {"ino": 9}},
    {"op": "note", "type": "export", "fields": {
        "unit": "x", "out": "/x", "format": "dir", "records": 1, "bytes": 1,
        "serials": "1", "index_sha256": "0", "selection": {}, "actor": {"uid": 0}}},
    {"op": "check", "deep": "yes", "repair": False},
    {"op": "dispose", "dry_run": False, "extra": 1},
    {"op": "delete", "path": "/r.txt"},
    {"op": "shutdown"},
    [1, 2, 3],
]


def test_item1_forged_events_over_the_control_socket_are_refused(mnt):
    p = mnt.path("r.txt")
    with open(p, "w") as f:
        f.write("record")
    until = xattr(p, "retain_until")
    seq = mnt.last_seq()
    for req in FORGERIES + [b"not json\n", b"\xff\xfe\n"]:
        answer = ask(str(mnt.store), req)
        assert len(answer) == 1 and "error" in answer[0], (req, answer)
        assert "\n" not in answer[0]["error"]
    assert mnt.events(since=seq + 1) == []            # nothing was appended
    assert xattr(p, "retain_until") == until
    with pytest.raises(OSError) as e:
        os.unlink(p)
    assert e.value.errno == errno.EPERM
    assert_sound(mnt)


def test_item9_a_crash_does_not_move_the_clock_ahead(tmp_path):
    t = FakeTime()
    primary, _ = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=t,
                           mirror_time_source=t)
    for _ in range(5):
        st = Store(primary, time_source=t, mirror_time_source=t)
        st.clock.persist()
        t.advance(PERSIST_INTERVAL_US / US * 0.9)  # events after the last save
        st.mkdir(1, os.urandom(6).hex().encode(), 0o755, None)
        # SIGKILL: nothing is closed, the clock is not saved again.
        st.mirror.close()
        st.ix.close()
        st.log.close()
        st._release_lock()
        st.log = None
    with Store(primary, time_source=t, mirror_time_source=t) as st:
        assert abs(st.clock.now() - t.wall) < 1 * US, (st.clock.now() - t.wall) / US


def _forge_shortened_retention(store, name):
    """What the old control socket let a caller do: a retention event the store never
    judged (until 1970, no 'before'), appended to the chain of an unmounted store."""
    with Store(str(store)) as st:
        ino = st.lookup(1, name.encode()).ino
        forged = dict(st.inode(ino).retention, until=0)
        st.journal.mutate(lambda txn: st.journal.append_at(
            txn, st.clock.now(), "retention", None, {"ino": ino, "after": forged}), durable=True)
        st.mirror_poll()
        return [e["seq"] for e in st.events() if e["type"] == "retention"][-1]


def test_item10_a_refused_event_does_not_stop_the_mirror_nor_resync(mount_factory):
    m = mount_factory()
    with open(m.path("r.txt"), "w") as f:
        f.write("the record")
    m.umount()
    forged_seq = _forge_shortened_retention(m.store, "r.txt")
    m.mount()
    # Later events keep flowing: a record written after the forged event reaches the mirror.
    with open(m.path("after.txt"), "w") as f:
        f.write("written after the forged event")
    assert xattr(m.path("after.txt"), "mirror") == "synced"
    st = m.status()
    assert st["state"] == "DEGRADED" and st["mirror"]["state"] == "refused"
    assert f"event {forged_seq} (retention)" in st["mirror"]["detail"]
    assert "would shorten the retention" in st["mirror"]["detail"], st
    r = wormfs("mirror", "status", m.store, check=False)
    assert f"refused    event {forged_seq} (retention), kept unapplied" in r.stdout, r.stdout
    refusals = [e for e in m.events("mirror") if e["state"] == "refused"]
    assert [e["event_seq"] for e in refusals] == [forged_seq]
    assert "Traceback" not in m.daemon_log()
    m.umount()
    # The mirror kept the record whole: its copy still says 6 years.
    with Store(str(m.mirror), readonly=True) as ms:
        ino = ms.lookup(1, b"r.txt").ino
        assert ms.inode(ino).retention["until"] > 0

    # resync to a new directory: copied, verified, then switched; no traceback.
    new = m.root / "mirror2"
    r = wormfs("mirror", "resync", m.store, "--to", new, "--allow-same-device", check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "copied and verified" in r.stdout
    with open(m.store / "unit.json") as f:
        assert json.load(f)["peer_path"] == str(new)
    with Store(str(new), readonly=True) as ms:   # it judged the log itself, and refused too
        ino = ms.lookup(1, b"r.txt").ino
        assert ms.inode(ino).retention["until"] > 0
        assert ms.lookup(1, b"after.txt").state == "sealed"

    # A primary restored from an older copy: its mirror holds events it lacks. resync to
    # yet another directory refuses and changes nothing.
    backup = m.root / "store.bak"
    subprocess.run(["cp", "-a", str(m.store), str(backup)], check=True)
    m.mount()
    with open(m.path("only-on-the-mirror.txt"), "w") as f:
        f.write("the primary will lose this")
    m.umount()
    clear_immutable(str(m.store))
    shutil.rmtree(m.store)
    os.rename(backup, m.store)
    third = m.root / "mirror3"
    r = wormfs("mirror", "resync", m.store, "--to", third, "--allow-same-device",
               check=False)
    assert r.returncode != 0 and "holds events this store lacks" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    with open(m.store / "unit.json") as f:
        assert json.load(f)["peer_path"] == str(new)
    assert not third.exists() or not os.listdir(third)
    with Store(str(new), readonly=True) as ms:
        assert ms.lookup(1, b"only-on-the-mirror.txt").state == "sealed"


def test_item12_privileged_delete_only_in_enterprise_mode(mount_factory):
    ent = mount_factory(mkfs_args=("--mode", "enterprise"))
    comp = mount_factory()
    for m in (ent, comp):
        for name in ("a.txt", "b.txt"):
            with open(m.path(name), "w") as f:
                f.write(name)
    os.setxattr(ent.path("b.txt"), "user.worm.hold.case-1", b"inquiry")
    # Not an admin, no reason, a held record, compliance mode: all refused.
    r = setpriv(NOBODY, *wormfs_cmd(), "delete", ent.path("a.txt"), "--privileged",
                "--reason", "mistake")
    assert r.returncode != 0 and os.path.exists(ent.path("a.txt"))
    assert wormfs("delete", ent.path("a.txt"), "--privileged", check=False).returncode == 2
    assert wormfs("delete", ent.path("b.txt"), "--privileged", "--reason", "x",
                  check=False).returncode == 1
    r = wormfs("delete", comp.path("a.txt"), "--privileged", "--reason", "x", check=False)
    assert r.returncode == 1 and "compliance mode" in r.stderr
    assert os.path.exists(comp.path("a.txt"))
    wormfs("delete", ent.path("a.txt"), "--privileged", "--reason", "sent to the wrong folder")
    assert not os.path.exists(ent.path("a.txt"))
    ev = [e for e in ent.events("delete")][-1]
    assert ev["privileged"] is True and ev["reason"] == "sent to the wrong folder"
    assert ev["actor"]["uid"] == 0
    refused = [e["op"] for e in comp.events("refused")]
    assert "privileged_delete" in refused
    assert_sound(ent)
    assert_sound(comp)


def wormfs_cmd():
    import sys
    return [sys.executable, "-m", "wormfs"]
