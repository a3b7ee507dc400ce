"""pjdfstest against a wormfs mount, compared with a committed list of expected failures.

pjdfstest (../shared/vendor/pjdfstest, github.com/pjd/pjdfstest) checks POSIX syscall
semantics with ~8,800 small tests. Two edits are made to our build copy, both so that what it
tests is the POSIX behaviour of files that are not (yet) records, not WORM itself:
- every generated name ends in ``.tmp``, a scratch name (closing such a file does not seal it),
  so a test can chmod, rename, truncate and unlink the files it creates;
- its ``for type in regular dir fifo block char socket symlink`` loops (and their
  ``type2``, ``type3`` kin) keep only ``none``, ``regular``
  and ``dir``: wormfs refuses to create the other node types (EPERM, audited: SPEC "The
  mount"), and every test of one would fail for that single reason. The tests of those
  syscalls themselves (symlink/, link/, mkfifo/, mknod/) still run; their failures are
  listed as expected, each with that reason.

Each .t file runs on its own (``sh FILE`` in a fresh directory of the mount) and its TAP output
is read: a failure is a test number. ``expected.txt`` beside this file lists, per file, the
numbers expected to fail and why. A failure not in the list is a bug; a listed one that
passes is a stale entry. Both fail the run.

    python tests/external/pjdfstest.py MOUNTPOINT [--update]   (root)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = os.path.join(HERE, "pjdfstest-expected.txt")
VENDOR = os.environ.get("WORMFS_VENDOR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "vendor"))
BUILD_ROOT = "/var/tmp/wormfs-vendor"
REFUSED_TYPES = ("fifo", "block", "char", "socket", "symlink")
FILE_TIMEOUT = 300


def build():
    """Build our edited copy of pjdfstest once per machine; returns its directory."""
    src = os.path.join(VENDOR, "pjdfstest")
    if not os.path.isdir(src):
        raise SystemExit(f"pjdfstest sources not found at {src} (set WORMFS_VENDOR)")
    out = os.path.join(BUILD_ROOT, "pjdfstest")
    if os.path.exists(os.path.join(out, "pjdfstest")) and os.path.exists(
            os.path.join(out, ".wormfs-edited")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(BUILD_ROOT, exist_ok=True)
    shutil.copytree(src, out)
    _edit(out)
    for cmd in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
        r = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"building pjdfstest: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    open(os.path.join(out, ".wormfs-edited"), "w").close()
    return out


def _edit(root):
    misc = os.path.join(root, "tests", "misc.sh")
    s = open(misc).read()
    s = s.replace("""openssl md5 | awk '{print $NF}'`"\n}""",
                  """openssl md5 | awk '{print $NF}'`.tmp"\n}""", 1)
    s = s.replace('''	name=`echo "${name}" | cut -b -${len}`
	printf "%s" "${name}"''', '''	name=`echo "${name}" | cut -b -$(( len - 4 ))`
	printf "%s.tmp" "${name}"''')
    assert s.count(".tmp") == 2, "pjdfstest's name generator changed: update _edit"
    open(misc, "w").write(s)
    for dirpath, _, names in os.walk(os.path.join(root, "tests")):
        for name in names:
            if not name.endswith(".t"):
                continue
            p = os.path.join(dirpath, name)
            t = open(p).read()
            t2 = re.sub(r"^(\s*for type\w* in )([^;]*);",
                        lambda m: m.group(1) + " ".join(
                            w for w in m.group(2).split() if w not in REFUSED_TYPES) + ";",
                        t, flags=re.M)
            if t2 != t:
                open(p, "w").write(t2)


def tests(root):
    base = os.path.join(root, "tests")
    for dirpath, _, names in sorted(os.walk(base)):
        for name in sorted(names):
            if name.endswith(".t"):
                yield os.path.relpath(os.path.join(dirpath, name), base)


def run_file(root, rel, where):
    """Run one .t file in a fresh directory under ``where``; returns {number: message}."""
    d = tempfile.mkdtemp(prefix="pjd.", suffix=".tmp", dir=where)
    os.chmod(d, 0o755)
    try:
        r = subprocess.run(["sh", os.path.join(root, "tests", rel)], cwd=d, text=True,
                           capture_output=True, timeout=FILE_TIMEOUT, errors="replace")
        out = r.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + "\nnot ok 0 - timed out\n"
    failed = {}
    for line in out.splitlines():
        m = re.match(r"not ok (\d+)(.*)", line)
        if m and "# TODO" not in m.group(2):  # TAP: a TODO test is one pjdfstest expects
            # to fail on Linux (its own 'todo Linux' notes), not a failure
            failed[int(m.group(1))] = m.group(2).strip(" -")
    return failed


def parse_numbers(text):
    out = set()
    for part in text.split(","):
        part = part.strip()
        if part:
            a, _, b = part.partition("-")
            out.update(range(int(a), int(b or a) + 1))
    return out


def format_numbers(nums):
    nums, out, i = sorted(nums), [], 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


def read_expected(path=EXPECTED):
    """{file: (numbers, reason)} from lines ``FILE NUMBERS  # reason``."""
    out = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        body, _, reason = line.partition("#")
        fname, nums = body.split()
        out[fname] = (parse_numbers(nums), reason.strip())
    return out


def compare(results, expected):
    """Lines describing every difference (empty: as expected)."""
    problems = []
    for rel, failed in sorted(results.items()):
        want = expected.get(rel, (set(), ""))[0]
        for n in sorted(set(failed) - want):
            problems.append(f"{rel} {n}: unexpected failure: {failed[n]}")
        stale = want - set(failed)
        if stale:
            problems.append(f"{rel} {format_numbers(stale)}: listed as expected failures "
                            f"but passed: update {os.path.basename(EXPECTED)}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--update", action="store_true",
                    help="print the failures in the expected-list format (reasons kept)")
    ap.add_argument("--only", help="run only the .t files whose path starts with this")
    args = ap.parse_args(argv)
    root = build()
    results = {}
    for rel in tests(root):
        if args.only and not rel.startswith(args.only):
            continue
        results[rel] = run_file(root, rel, args.mountpoint)
    if args.update:
        old = read_expected() if os.path.exists(EXPECTED) else {}
        for rel, failed in sorted(results.items()):
            if failed:
                reason = old.get(rel, (None, "TODO"))[1]
                print(f"{rel} {format_numbers(failed)}  # {reason}")
        return 0
    problems = compare(results, read_expected())
    for p in problems:
        print(p)
    total = sum(len(f) for f in results.values())
    print(f"pjdfstest: {len(results)} files, {total} failures, "
          f"{len(problems)} differences from the expected list")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
