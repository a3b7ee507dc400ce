"""Commands that walk the whole store do it in memory that does not grow with it (issue
18). Each runs as the real ``wormfs`` command on a store of RECORDS records and its mirror,
under a cap on its own memory: RLIMIT_DATA, which counts the heap and private anonymous
maps but not the index and segments mapped from disk (page cache, which the kernel takes
back). The cap, not a timer, fails the test: the command stops with a MemoryError.

Measured (bench/RESULTS.md, "Scale"): verify 27 MiB, verify --deep 40, audit --verify 17 at
5k, 20k and 25k records alike. Before, verify kept every mirror record (2.4 KiB each: 71 MiB
at 20k) and audit --verify every event hash of both units (31 MiB at 20k), so at this size
both failed under these caps. WORMFS_SCALE_RECORDS=100000 (or more) runs the same at a size
where anything kept per record is hundreds of MiB."""
import os
import resource
import shutil
import subprocess
import sys

import pytest

from tests.conftest import clear_immutable

RECORDS = int(os.environ.get("WORMFS_SCALE_RECORDS", 20000))
HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("scale"))
    fast = ["eatmydata"] if shutil.which("eatmydata") else []
    subprocess.run([*fast, sys.executable, os.path.join(HERE, "filler.py"), base,
                    str(RECORDS)], check=True, capture_output=True)
    yield os.path.join(base, "p")
    clear_immutable(base)


def capped(cap_mib, *args):
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (cap_mib * MIB, cap_mib * MIB))
    return subprocess.run([sys.executable, "-m", "wormfs", *args], preexec_fn=limit,
                          capture_output=True, text=True)


@pytest.mark.parametrize("cap_mib, command, ok_text", [
    (44, ["verify"], "OK: verify found every frame"),
    (52, ["verify", "--deep"], "OK: verify found every frame"),
    (26, ["audit", "--verify"], "OK: the audit trail's hash chain is intact and the same "
                                "on both units"),
], ids=["verify", "verify-deep", "audit-verify"])
def test_a_whole_store_walk_fits_in_a_constant_cap(big, cap_mib, command, ok_text):
    r = capped(cap_mib, *command, big)
    assert r.returncode == 0 and ok_text in r.stdout, (r.stdout[-500:], r.stderr[-1500:])
    # Both units, every record.
    assert r.stdout.count(f"{RECORDS} records") == 2 or command[0] == "audit", r.stdout


@pytest.mark.parametrize("suffix", ["", ".tar", ".zip"], ids=["directory", "tar", "zip"])
def test_an_export_of_every_record_fits_in_a_constant_cap(big, tmp_path, suffix):
    """An export used to hold every record's description, history and index.html in
    memory (a 20k-record export failed under 300 MiB); now it writes them a record at a
    time into a scratch directory; a zip's central directory goes to a spool file as it
    grows and is read back from the file an entry at a time (export.py's _Zip)."""
    out = str(tmp_path / ("all" + suffix))
    r = capped(44, "export", "--out", out, big)
    assert r.returncode == 0 and f"exported {RECORDS} records" in r.stdout, \
        (r.stdout[-500:], r.stderr[-1500:])
    if not suffix:
        check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout[-500:]
        shutil.rmtree(out)
