"""Fuzzing the two ways admins change records, the xattrs through the mount and the wormfs
command, with hypothesis: random names, dates, durations, huge and non-UTF-8 values. Every
refusal must be a clean errno or a one-line message, a failed call must change nothing, a
successful one may only lengthen retention or add a hold, and the mount stays alive."""
import contextlib
import errno
import io
import os

from hypothesis import HealthCheck, example, given, settings, strategies as st

from wormfs.cli import main

CLEAN_ERRNOS = {errno.EPERM, errno.EINVAL, errno.ENOTSUP, errno.ENODATA, errno.ENAMETOOLONG,
                errno.E2BIG, errno.ERANGE}
FUZZ = settings(max_examples=int(os.environ.get("WORMFS_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

dates = st.one_of(
    st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(0, 10000),
              st.integers(0, 13), st.integers(0, 32)),
    st.builds(lambda y, rest: f"{y:04d}{rest}", st.integers(1990, 2200),
              st.sampled_from(["-01-31T17:00:00Z", "-02-30", "-06-01T25:00:00Z", "", "-1-1",
                               "-12-31T23:59:59.999999Z", "-01-01T00:00:00+05:00"])),
    st.sampled_from(["indefinite", "event+6y", "event+P18M", "event+0d", "event+", "-3y",
                     "P6Y", "PT90S", "9999-12-31", "0000-00-00", ""]),
    st.text(max_size=40))
durations = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 10**7), st.sampled_from("ymdhswq")),
    st.sampled_from(["P6Y", "P18M", "PT90S", "P1Y2M3DT4H5M6S", "P", "PT", "6", "y6", ""]),
    st.text(max_size=20))
values = st.one_of(dates.map(str.encode), durations.map(str.encode),
                   st.binary(max_size=64), st.binary(min_size=4000, max_size=70000),
                   st.sampled_from([b"\xff\xfe", b"2030-01-01\x00", b" 2040-01-01 "]))
names = st.one_of(  # no NUL: a name is a C string on its way to the kernel
    st.sampled_from(["retain_until", "event", "retention", "state", "serial", "committed",
                     "blake3", "mirror", "hold.CASE-1", "hold.", "hold.bad name",
                     "hold." + "x" * 65, "nonsense"]).map(lambda n: "user.worm." + n),
    st.text(min_size=1, max_size=40).map(lambda t: "user.worm." + t),
    st.text(min_size=1, max_size=300).map(lambda t: "user." + t)).map(
        lambda n: n.replace("\x00", "0"))


def snapshot(path):
    out = {}
    for n in os.listxattr(path):
        if n.startswith("user.worm."):
            out[n] = os.getxattr(path, n)
    return out


def only_lengthened(before, after, released=None):
    for k in set(before) | set(after):
        if before.get(k) == after.get(k):
            continue
        if k.startswith("user.worm.hold.") and k in after:
            continue   # a hold placed, or its reason restated by a records admin (audited)
        if k == released and k not in after:
            continue   # the hold a records admin (root, here) released
        if k in ("user.worm.retain_until", "user.worm.event", "user.worm.state"):
            continue   # checked below
        if k == "user.worm.retention":
            continue   # a directory default, not a record
        raise AssertionError(f"{k} changed from {before.get(k)!r} to {after.get(k)!r}")
    old, new = before["user.worm.retain_until"], after["user.worm.retain_until"]
    if old != new and new != b"indefinite" and not (old[:1].isdigit()
                                                     and new.startswith(b"event+")):
        # (A date that became event-based: held until an event still to come, then for a
        # period the store checked against the floor's (SPEC): no shorter.)
        assert old[:1].isdigit() and new[:1].isdigit() and new > old, (old, new)


@FUZZ
@given(op=st.sampled_from(["set", "set", "set", "remove"]), name=names, value=values,
       on_dir=st.booleans())
def test_xattr_fuzz_only_clean_errors_and_nothing_shortened(mnt_once, op, name, value,
                                                              on_dir):
    m, record = mnt_once
    target = m.path("d") if on_dir else record
    before = snapshot(record)
    dir_before = snapshot(m.path("d"))
    try:
        if op == "set":
            os.setxattr(target, name.encode("utf-8", "surrogateescape")[:255], value)
        else:
            os.removexattr(target, name.encode("utf-8", "surrogateescape")[:255])
        ok = True
    except OSError as e:
        assert e.errno in CLEAN_ERRNOS, (name, value[:40], e)
        ok = False
    after = snapshot(record)
    if not ok:
        assert after == before and snapshot(m.path("d")) == dir_before
    else:
        only_lengthened(before, after, name if op == "remove" else None)
    with open(record, "rb") as f:
        assert f.read() == b"the record\n"
    assert sorted(os.listdir(m.mnt)) == [".wormfs", "d", "r.txt"]


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "-", "--", "-1", "1-", "9" * 30]))


@FUZZ
@given(cmd=st.sampled_from(["retain-until", "retain-for", "hold", "release", "event", "ls",
                            "audit", "info"]),
       a=st.one_of(dates, durations, texts), b=texts)
@example(cmd="hold", a="indefinite", b="\x00")  # refused by the daemon, audited (seen in CI)
def test_cli_fuzz_only_one_line_errors_and_nothing_changed(mnt_once, cmd, a, b):
    m, record = mnt_once
    before = snapshot(record)
    seq = m.last_seq()
    args = {
        "retain-until": ["retain", record, "--until", a],
        "retain-for": ["retain", record, "--for", a],
        "hold": ["hold", record, "--name", a, "--reason", b],
        "release": ["release", record, "--name", a],
        "event": ["event", record, "--date", a],
        "ls": ["ls", m.mnt, "--serial", a, "--expiring-before", b or "2030-01-01", "-q"],
        "audit": ["audit", m.store, "--since", a, "--path", b or "*"],
        "info": ["info", "--store", m.store, a or "/"],
    }[cmd]
    rc, out, err = run_cli(*args)
    assert rc in (0, 1, 2), (args, rc, err)
    assert "Traceback" not in err and "internal error" not in err, (args, err)
    assert all(line.startswith("wormfs: ") for line in err.splitlines()), (args, err)
    after = snapshot(record)
    if rc == 2:
        # Bad values change nothing. The daemon audits one it only sees itself (a NUL in a
        # hold reason reaches it as an xattr value: EINVAL, and a 'refused' event), and its
        # keeper may note the clock meanwhile; nothing else may be appended.
        assert after == before, args
        assert {e["type"] for e in m.events(since=seq + 1)} <= {"refused", "clock"}, args
    elif rc == 1:
        assert after == before, args
    else:
        only_lengthened(before, after, "user.worm.hold." + a if cmd == "release" else None)
    assert sorted(os.listdir(m.mnt)) == [".wormfs", "d", "r.txt"]


import pytest  # noqa: E402


@pytest.fixture
def mnt_once(mnt):
    os.mkdir(mnt.path("d"))
    record = mnt.path("r.txt")
    with open(record, "wb") as f:
        f.write(b"the record\n")
    return mnt, record
