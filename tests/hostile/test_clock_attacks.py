"""Issue 15 part 1: a compliance clock the host cannot fool. Real tools: libfaketime on the
daemon, a time namespace (unshare --time), and clock.json edited by hand. In each case
nothing can be deleted early, nothing is disposed, and status names the clock."""
import errno
import json
import os
import shutil

import pytest

from .conftest import wormfs

TWO_YEARS = 2 * 365 * 86400


def _mount_under(m, prefix):
    """Mount ``m``'s store with ``prefix`` before the command (faketime, unshare): the
    daemon alone runs with the faked clock."""
    m.mount(foreground=True, prefix=prefix)


def _attack_and_check(m):
    with pytest.raises(OSError) as e:
        os.unlink(m.path("r.txt"))
    assert e.value.errno == errno.EPERM
    r = wormfs("dispose", m.mnt, "--json", check=False)
    assert r.returncode != 0 or json.loads(r.stdout)["records"] == [], r.stdout + r.stderr
    assert os.path.exists(m.path("r.txt"))
    st = m.status()
    assert not st["compliant"]
    assert any("compliance clock" in x for x in st["reasons"]), st["reasons"]
    # Retention is judged by the true time: the record is a day old, not two years.
    info = json.loads(wormfs("info", m.path("r.txt"), "--json").stdout)
    assert info


def _prepared(mount_factory):
    m = mount_factory(default_retention="1y")
    with open(m.path("r.txt"), "w") as f:
        f.write("a record that must live a year")
    m.umount()
    return m


@pytest.mark.skipif(shutil.which("faketime") is None, reason="apt-get install faketime")
def test_faketime_two_years_ahead_expires_nothing(mount_factory):
    m = _prepared(mount_factory)
    _mount_under(m, ["faketime", "-f", f"+{TWO_YEARS}s"])
    try:
        _attack_and_check(m)
    finally:
        m.umount()
    m.mount()
    assert os.path.exists(m.path("r.txt"))
    with pytest.raises(OSError):
        os.unlink(m.path("r.txt"))


def test_a_time_namespace_two_years_ahead_expires_nothing(mount_factory):
    m = _prepared(mount_factory)
    _mount_under(m, ["unshare", "--fork", "--time", "--boottime", str(TWO_YEARS),
                     "--monotonic", str(TWO_YEARS)])
    try:
        _attack_and_check(m)
    finally:
        m.umount()


def test_a_hand_edited_clock_file_is_reported_and_never_trusted(mount_factory):
    m = _prepared(mount_factory)
    for unit in (m.store, m.mirror):
        path = os.path.join(unit, "clock.json")
        with open(path) as f:
            state = json.load(f)
        state["compliance_us"] += 10 * 365 * 86400 * 10**6
        with open(path, "w") as f:
            json.dump(state, f)
    m.mount()
    with pytest.raises(OSError) as e:
        os.unlink(m.path("r.txt"))
    assert e.value.errno == errno.EPERM
    st = m.status()
    assert any("clock.json" in x and "ignored" in x for x in st["reasons"]), st["reasons"]
    r = wormfs("verify", m.store, "--json", check=False)
    assert r.returncode != 0
    assert any(f["kind"] == "clock" for f in json.loads(r.stdout)["findings"])
