"""``wormfs selftest MOUNTPOINT`` (SPEC, R39): proof, on the live store, that WORM holds.

It writes a canary record through the mount (retained one day by its directory's default,
so disposal can take it later), then tries every operation WORM forbids on it, the way an
application or an administrator would: through the kernel, as this process. Each must fail
with EPERM and leave a ``refused`` event naming this process. Then the audit chain is verified
on both units, the canary must be on the mirror, and the report is written through the mount
as a record of its own (``/.wormfs/selftest/report-TIME.json``).
"""
import datetime
import errno
import json
import os
import time

import blake3

from ..errors import StoreError
from ..store.store import Store
from ..store.unit import read_unit
from . import auditlog, locate

DIR = ".wormfs/selftest"
MIRROR_WAIT = 30.0  # seconds for the canary to reach the mirror
CANARY_RETENTION = "1d"


def _attempts(canary, scratch, folder):
    """(name, fn) of every forbidden operation on the canary record."""
    return [
        ("open for writing", lambda: os.close(os.open(canary, os.O_WRONLY))),
        ("open for appending", lambda: os.close(os.open(canary, os.O_WRONLY | os.O_APPEND))),
        ("open with truncation", lambda: os.close(os.open(canary, os.O_WRONLY | os.O_TRUNC))),
        ("replace by creating the same name",
         lambda: os.close(os.open(canary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))),
        ("truncate", lambda: os.truncate(canary, 0)),
        ("chmod", lambda: os.chmod(canary, 0o666)),
        ("chown", lambda: os.chown(canary, 65534, 65534)),
        ("change mtime", lambda: os.utime(canary, (time.time(), 0))),
        ("rename", lambda: os.rename(canary, canary + ".moved")),
        ("rename onto it", lambda: os.rename(scratch, canary)),
        ("hard link", lambda: os.link(canary, canary + ".link")),
        ("unlink before expiry", lambda: os.unlink(canary)),
        ("shorten retention", lambda: os.setxattr(canary, "user.worm.retain_until",
                                                  b"2001-01-01T00:00:00Z")),
        ("remove retention", lambda: os.removexattr(canary, "user.worm.retain_until")),
        ("rename its directory", lambda: os.rename(folder, folder + ".moved")),
    ]


def run(mountpoint, progress=print):
    place = locate.store(mountpoint)
    if place.mountpoint is None:
        raise StoreError(f"{mountpoint} is not mounted: selftest works through the mount "
                         f"(wormfs mount STORE MOUNTPOINT first)")
    unit = read_unit(place.unit)
    if unit["role"] != "primary":
        raise StoreError(f"{mountpoint} is a read-only mount of a {unit['role']} unit; "
                         f"selftest writes a canary record and needs the primary")
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    base = os.path.join(place.mountpoint, DIR)
    os.makedirs(base, exist_ok=True)
    if os.listxattr(base) == []:
        # The canaries' floor: a day (root is a records admin), so disposal can take them.
        os.setxattr(base, "user.worm.retention", CANARY_RETENTION.encode())
    folder = os.path.join(base, stamp)
    os.makedirs(folder)
    checks = []

    def check(name, ok, detail=""):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        progress(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    canary = os.path.join(folder, "canary.txt")
    body = (f"wormfs selftest canary {stamp}\n").encode()
    with open(canary, "wb") as f:
        f.write(body)
    state = os.getxattr(canary, "user.worm.state").decode()
    digest = os.getxattr(canary, "user.worm.blake3").decode()
    check("the canary is a record once closed", state == "sealed", f"state {state}")
    check("its digest is BLAKE3 of its content", digest == blake3.blake3(body).hexdigest())
    scratch = os.path.join(folder, "replacement.tmp")
    with open(scratch, "wb") as f:
        f.write(b"not the canary\n")

    pid = os.getpid()
    # A read-only view beside the daemon sees each event once the daemon committed it.
    with Store(place.unit, readonly=True) as st:
        for name, attempt in _attempts(canary, scratch, folder):
            before = auditlog.last_seq(st.ix)
            try:
                attempt()
                got = "succeeded"
            except OSError as e:
                got = errno.errorcode.get(e.errno, str(e.errno))
            audited = bool(auditlog.refused_since(st.log, st.ix, before, pid))
            check(f"{name} is refused with EPERM and audited", got == "EPERM" and audited,
                  f"got {got}{', not audited' if not audited else ''}")
    with open(canary, "rb") as f:
        check("the canary still reads as written", f.read() == body)
    try:
        os.unlink(scratch)
    except OSError:
        pass

    deadline = time.monotonic() + MIRROR_WAIT
    while os.getxattr(canary, "user.worm.mirror") != b"synced" and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    mirror = os.getxattr(canary, "user.worm.mirror").decode()
    check("the canary is on the mirror", mirror == "synced" or unit.get("no_mirror"),
          f"user.worm.mirror={mirror}")
    chain = auditlog.verify_unit(place.unit)
    check("the audit chain is intact on both units" if len(chain.units) == 2 else
          "the audit chain is intact", chain.ok and not chain.notes,
          "; ".join([f["detail"] for f in chain.findings] + chain.notes))

    ok = all(c["ok"] for c in checks)
    report = {"selftest": stamp, "ok": ok, "unit": unit["serial"],
              "mirror": unit.get("peer_serial"), "mountpoint": place.mountpoint,
              "canary": "/" + os.path.relpath(canary, place.mountpoint),
              "canary_blake3": digest, "checks": checks,
              "chain": chain.as_dict()}
    path = os.path.join(place.mountpoint, DIR, f"report-{stamp}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    report["report"] = "/" + os.path.relpath(path, place.mountpoint)
    report["report_serial"] = int(os.getxattr(path, "user.worm.serial"))
    return report
