"""Issue 15 part 2: tampering with the unit files as root, no wormfs command involved. Each
change is reported by verify and status, and nothing acts on an edited value."""
import json
import os
import stat

from wormfs.store.store import Store

from .conftest import wormfs


def _write(m, name, text="x"):
    with open(m.path(name), "w") as f:
        f.write(text)


def test_a_log_cut_short_on_both_units_is_reported_even_after_rebuild_index(mount_factory):
    m = mount_factory()
    _write(m, "kept.txt", "before the cut")
    with Store(str(m.store), readonly=True) as st:
        cut_seq = st.journal.last_seq + 1
    for i in range(3):
        _write(m, f"lost{i}.txt", "cut away")
    os.setxattr(m.path("kept.txt"), "user.worm.hold.case-1", b"inquiry")
    m.umount()
    with Store(str(m.store), readonly=True) as st:
        with st.ix.read() as txn:
            segno, offset = st.ix.event_pos(txn, cut_seq)
        last = st.journal.last_seq
        serials = {st.inode(st.lookup(1, f"lost{i}.txt".encode()).ino).serial
                   for i in range(3)}
    # As root, with the files alone: cut both open segments at that event, rebuild both
    # indexes (what a cover-up would do).
    for unit in (m.store, m.mirror):
        seg = os.path.join(unit, "segments", "%010d.open" % segno)
        os.truncate(seg, offset)
        wormfs("rebuild-index", unit)
    r = wormfs("verify", m.store, "--json", check=False)
    assert r.returncode != 0
    found = [f["detail"] for f in json.loads(r.stdout)["findings"] if f["kind"] == "tamper"]
    assert any(f"events {cut_seq} to {last}" in d or f"to {last}" in d for d in found), found
    st = wormfs("status", m.store, "--json", check=False)
    reasons = json.loads(st.stdout)["reasons"]
    assert any("missing from the log" in x for x in reasons), reasons
    # A record written now never takes a serial the cut-away records had.
    m.mount()
    _write(m, "after.txt")
    new = int(os.getxattr(m.path("after.txt"), "user.worm.serial"))
    assert new not in serials and new > max(serials)


def test_an_edited_mode_in_unit_json_is_reported_and_never_acted_on(mount_factory):
    m = mount_factory()
    _write(m, "r.txt")
    m.umount()
    for unit in (m.store, m.mirror):
        path = os.path.join(unit, "unit.json")
        with open(path) as f:
            u = json.load(f)
        u["mode"] = "enterprise"
        with open(path, "w") as f:
            json.dump(u, f)
    m.mount()
    r = wormfs("delete", m.path("r.txt"), "--privileged", "--reason", "cover-up", check=False)
    assert r.returncode != 0 and "compliance mode" in r.stderr, r.stderr
    assert os.path.exists(m.path("r.txt"))
    st = m.status()
    assert st["mode"] == "compliance"
    assert any("unit.json says mode 'enterprise'" in x for x in st["reasons"]), st["reasons"]
    r = wormfs("verify", m.store, "--json", check=False)
    assert r.returncode != 0
    assert any("unit.json" in f["detail"] for f in json.loads(r.stdout)["findings"])


def test_the_open_segment_is_the_daemons_alone(mnt):
    _write(mnt, "r.txt")
    segs = os.path.join(mnt.store, "segments")
    for name in os.listdir(segs):
        mode = stat.S_IMODE(os.stat(os.path.join(segs, name)).st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))
    assert stat.S_IMODE(os.stat(mnt.store).st_mode) == 0o700


def test_a_deleted_open_segment_is_put_back_from_the_mirror(mount_factory):
    m = mount_factory()
    for i in range(3):
        _write(m, f"r{i}.txt", f"record {i}")
    m.umount()
    segs = os.path.join(m.store, "segments")
    (open_seg,) = [n for n in os.listdir(segs) if n.endswith(".open")]
    os.unlink(os.path.join(segs, open_seg))
    m.mount()
    for i in range(3):
        with open(m.path(f"r{i}.txt")) as f:
            assert f.read() == f"record {i}"
    repairs = m.events("repair")
    assert repairs and repairs[-1]["cause"] == "open" and "missing" in repairs[-1]["detail"]
    _write(m, "after.txt")
    m.umount()
    r = wormfs("verify", m.store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
