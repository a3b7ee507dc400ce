"""Property-based: random sequences of create/write/close, rename, unlink, setxattr and mkdir
against the real mount and against a small model of SPEC.md must agree, step by step."""
import errno
import itertools
import os
from datetime import datetime, timezone

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, rule,
                                 run_state_machine_as_test)

# Few names, so that steps collide often (the interesting cases). The last three are scratch
# names (*.tmp, vi's .*.sw?, rsync's .NAME.XXXXXX).
NAMES = ["a", "b", "c.tmp", ".d.swp", ".f.Ab12Cd"]
DIRS = ["", "x", "x/y"]
SCRATCH = {"c.tmp", ".d.swp", ".f.Ab12Cd"}
counter = itertools.count()
THIS_YEAR = datetime.now(timezone.utc).year


def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


class MountModel(RuleBasedStateMachine):
    """The model: path -> (content, state) for files, a set of directories. Files are always
    closed between steps, so a file is either a record ('sealed') or 'scratch'."""

    mount = None  # set by the test

    def __init__(self):
        super().__init__()
        self.base = self.mount.path(f"run{next(counter)}")
        os.mkdir(self.base)
        self.files = {}
        self.dirs = {""}
        self.retain = {}

    def real(self, rel):
        return os.path.join(self.base, rel) if rel else self.base

    def parent_exists(self, rel):
        return os.path.dirname(rel) in self.dirs

    @rule(d=st.sampled_from(DIRS), name=st.sampled_from(NAMES), data=st.binary(max_size=3000))
    def create_write_close(self, d, name, data):
        rel = os.path.join(d, name)

        def do():
            with open(self.real(rel), "wb") as f:
                f.write(data)
        got = outcome(do)
        if not self.parent_exists(rel):
            expected = "ENOENT"
        elif rel in self.dirs:
            expected = "EISDIR"
        elif rel in self.files and self.files[rel][1] == "sealed":
            expected = "EPERM"
        else:
            expected = "ok"
            self.files[rel] = (data, "scratch" if name in SCRATCH else "sealed")
        assert got == expected, (rel, got, expected)

    @rule(src_d=st.sampled_from(DIRS), src=st.sampled_from(NAMES),
          dst_d=st.sampled_from(DIRS), dst=st.sampled_from(NAMES))
    def rename(self, src_d, src, dst_d, dst):
        a, b = os.path.join(src_d, src), os.path.join(dst_d, dst)
        got = outcome(lambda: os.rename(self.real(a), self.real(b)))
        if a not in self.files or not self.parent_exists(b):
            expected = "ENOENT"
        elif a == b:
            expected = "ok"          # POSIX: renaming a file onto itself does nothing
        elif self.files[a][1] == "sealed" or self.files.get(b, (0, ""))[1] == "sealed":
            expected = "EPERM"
        elif b in self.dirs:
            expected = "EISDIR"
        else:
            expected = "ok"
            if a != b:
                data, _ = self.files.pop(a)
                self.files[b] = (data, "scratch" if dst in SCRATCH else "sealed")
                self.retain.pop(b, None)
                if a in self.retain:
                    self.retain[b] = self.retain.pop(a)
        assert got == expected, (a, b, got, expected)

    @rule(d=st.sampled_from(DIRS), name=st.sampled_from(NAMES))
    def unlink(self, d, name):
        rel = os.path.join(d, name)
        got = outcome(lambda: os.unlink(self.real(rel)))
        if rel in self.dirs:
            expected = "EISDIR"
        elif rel not in self.files:
            expected = "ENOENT"
        elif self.files[rel][1] == "sealed":
            expected = "EPERM"       # retained for the store default of 6 years
        else:
            expected = "ok"
            del self.files[rel]
            self.retain.pop(rel, None)
        assert got == expected, (rel, got, expected)

    @rule(d=st.sampled_from(DIRS), name=st.sampled_from(NAMES),
          year=st.integers(min_value=THIS_YEAR + 1, max_value=THIS_YEAR + 30))
    def set_retain_until(self, d, name, year):
        rel = os.path.join(d, name)
        # Dec 31 of a year is later than "now + 6y" exactly when the year is at least
        # this year + 6, which keeps the model free of clock arithmetic.
        value = f"{year}-12-31".encode()
        got = outcome(lambda: os.setxattr(self.real(rel), "user.worm.retain_until", value))
        if rel not in self.files:
            expected = "ENOENT"
        elif self.files[rel][1] != "sealed":
            # An unsealed file takes any date from its retention floor (the store default,
            # 6y from now) on, and never less than what it was given before.
            current = max(self.retain.get(rel, THIS_YEAR + 6), THIS_YEAR + 6)
            expected = "ok" if year >= current else "EPERM"
            if expected == "ok":
                self.retain[rel] = year
        else:
            current = self.retain.get(rel, THIS_YEAR + 6)   # the store default, 6y
            expected = "ok" if year >= current else "EPERM"
            if expected == "ok":
                self.retain[rel] = year
        assert got == expected, (rel, year, got, expected)

    @rule(d=st.sampled_from(DIRS))
    def mkdir(self, d):
        got = outcome(lambda: os.mkdir(self.real(d)))
        if d in self.dirs:
            expected = "EEXIST"
        elif not self.parent_exists(d):
            expected = "ENOENT"
        elif d in self.files:
            expected = "EEXIST"
        else:
            expected = "ok"
            self.dirs.add(d)
        assert got == expected, (d, got, expected)

    @invariant()
    def mount_matches_model(self):
        seen = {}
        for dirpath, dirs, files in os.walk(self.base):
            for f in files:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    seen[os.path.relpath(p, self.base)] = (
                        fh.read(), os.getxattr(p, "user.worm.state").decode())
        assert seen == self.files


def test_mount_agrees_with_model(mnt):
    MountModel.mount = mnt
    run_state_machine_as_test(MountModel, settings=settings(
        max_examples=80, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck)))
