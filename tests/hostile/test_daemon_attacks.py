"""Issue 14, items 1, 9, 10 and 12: the control socket, the clock after a crash, a malformed
event on its way to the mirror, and enterprise mode's privileged delete."""
import errno
import json
import os
import socket

import pytest

from tests.conftest import FakeTime, make_pair
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


def test_item10_a_malformed_event_is_refused_by_the_mirror_with_its_reason(tmp_path):
    t = FakeTime()
    primary, mirror = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=t,
                                mirror_time_source=t)
    with Store(primary, time_source=t, mirror_time_source=t) as st:
        f = st.create(1, b"r", 0o644, None)["ino"]
        st.write(f, 0, b"x")
        rec = st.seal(f)
        # What the old control socket let through: a retention event the store never made
        # (no 'before'), written straight into the chain.
        forged = dict(rec["retention"], until=0)
        st._mutate(lambda txn: st._append_one(txn, st.clock.now(), "retention", None,
                                              {"ino": f, "after": forged}), durable=True)
        st.sync()
        st.mirror_poll()
        state, reason, _ = st.mirror_state()
        assert state == "refused" and "retention" in reason, (state, reason)
        assert "KeyError" not in reason and "StopIteration" not in reason
        st.mirror_poll()                              # offered again later: still no crash


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
