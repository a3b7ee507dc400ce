"""Third-party conformance suites against a real mount (issue 14): pjdfstest compared with
the committed list of by-design failures, and fsx on one open file. Both build from
../shared/vendor (no network); see pjdfstest.py and fsx.py beside this file."""
import mmap
import os

import blake3
import pytest

from . import fsx, pjdfstest

pytestmark = [
    pytest.mark.slow,
    # The sources come from ../shared/vendor beside the checkout (no network); a machine
    # without them cannot run these, and says so rather than failing.
    pytest.mark.skipif(not os.path.isdir(os.path.join(pjdfstest.VENDOR, "pjdfstest")),
                       reason=f"no vendor sources at {pjdfstest.VENDOR} (set WORMFS_VENDOR)"),
]


def test_pjdfstest_fails_only_where_expected(mount_factory):
    m = mount_factory(default_retention="1d")
    root = pjdfstest.build()
    results = {rel: pjdfstest.run_file(root, rel, m.mnt) for rel in pjdfstest.tests(root)}
    assert len(results) > 200
    problems = pjdfstest.compare(results, pjdfstest.read_expected())
    assert not problems, "\n".join(problems)
    assert "Traceback" not in m.daemon_log()


@pytest.mark.parametrize("seed", [1, 7])
def test_fsx_on_an_open_file_then_the_record_is_what_fsx_wrote(mount_factory, tmp_path, seed):
    m = mount_factory(default_retention="1d")
    path = m.path(f"fsx-{seed}.bin")
    r = fsx.run(path, tmp_path, ops=20000, seed=seed, mmap=False)
    assert "All 20000 operations completed A-OK!" in r.stdout, r.stdout[-3000:]
    # Closed at the end: sealed, and every byte through the mount is the record's.
    assert os.getxattr(path, "user.worm.state") == b"sealed"
    with open(path, "rb") as f:
        data = f.read()
    assert blake3.blake3(data).hexdigest() == os.getxattr(path, "user.worm.blake3").decode()
    # A record maps read-only (private and shared) with the same bytes.
    with open(path, "rb") as f:
        for flags in (mmap.MAP_PRIVATE, mmap.MAP_SHARED):
            with mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mm:
                assert mm[:] == data
    assert "Traceback" not in m.daemon_log()


def test_fsx_reopening_a_scratch_file(mount_factory, tmp_path):
    # Closed and reopened at random (-c): a scratch name stays open across closes.
    m = mount_factory(default_retention="1d")
    r = fsx.run(m.path("fsx.tmp"), tmp_path, ops=5000, seed=3, mmap=False, reopen=40)
    assert "All 5000 operations completed A-OK!" in r.stdout, r.stdout[-3000:]


def test_fsx_mmap_mode_is_refused_at_the_first_shared_writable_map(mount_factory, tmp_path):
    # By design (docs/REFERENCE.md): handles opened for writing do direct I/O, so a shared
    # map of one is ENODEV and no page of a file being written is shared with readers.
    m = mount_factory(default_retention="1d")
    r = fsx.run(m.path("fsx-mmap.bin"), tmp_path, ops=2000, seed=7, mmap=True)
    assert r.returncode != 0
    assert "mmap: No such device" in r.stdout + r.stderr, r.stdout[-2000:]
    assert "Traceback" not in m.daemon_log()
