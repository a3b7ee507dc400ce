"""The ``wormfs`` command. Each subcommand is a function taking parsed args and returning an
exit status; ``main`` turns every error into one line (never a traceback): exit 2 for bad
arguments or values, 1 for failures and findings."""
import argparse
import grp
import json
import os
import shutil
import sys
import uuid

from . import __version__, retention
from .errors import InvalidValue, StoreError, WormError, one_line
from .mirror.status import mirror_report
from .progress import Progress, human_bytes
from .mirror.pairing import check_mirror_place
from .mirror.s3bucket import is_s3, parse_url
from .store.hostfs import loose_paths, unit_in_use, unit_locked
from .store.maintenance import rebuild_index
from .store.store import DEFAULT_SCRATCH_PATTERNS, DEFAULT_SCRATCH_TTL, Store, create_store
from .store.unit import new_serial, read_unit, write_unit
from .timeutil import US, format_us, parse_duration


class UsageError(Exception):
    """Bad arguments: exit status 2."""


# -- mkfs ---------------------------------------------------------------------------------

SEGMENT_MIN, SEGMENT_MAX = 1 << 20, 4 << 30


def _parse_size(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    if not num.isdigit():
        raise UsageError(f"--segment-size: bad size {text!r}: use e.g. 128M, 1G or a number "
                         f"of bytes")
    size = int(num) * units[unit]
    if not SEGMENT_MIN <= size <= SEGMENT_MAX:
        raise UsageError(f"--segment-size: {text!r} is outside 1M..4G")
    return size


def _check_empty(path, what):
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{what} {path} exists and is not a directory")
        if os.listdir(path):
            raise UsageError(f"{what} {path} is not empty; wormfs mkfs needs an empty or new "
                             f"directory")


def cmd_mkfs(args):
    try:
        default = retention.parse_default(args.default_retention)
    except InvalidValue as e:
        raise UsageError(str(e)) from None
    if args.mirror and args.no_mirror:
        raise UsageError("give either --mirror DIR or --no-mirror, not both")
    if not args.mirror and not args.no_mirror:
        raise UsageError("a store needs a duplicate: give --mirror DIR (--no-mirror is for "
                         "development and is reported NOT COMPLIANT)")
    s3_url = args.mirror if is_s3(args.mirror) else None
    if s3_url:
        try:
            parse_url(s3_url)
        except StoreError as e:
            raise UsageError(str(e)) from None
    admin_gid = None
    if args.admin_group:
        try:
            admin_gid = grp.getgrnam(args.admin_group).gr_gid
        except KeyError:
            raise UsageError(f"no group named {args.admin_group!r}") from None
    store = os.path.abspath(args.store)
    mirror = s3_url or (os.path.abspath(args.mirror) if args.mirror else None)
    _check_empty(store, "store directory")
    same_device = False
    if mirror and not s3_url:
        try:
            same_device = check_mirror_place(store, mirror, args.allow_same_device)
        except StoreError as e:
            raise UsageError(str(e)) from None
    primary_serial = new_serial()
    mirror_serial = new_serial() if mirror else None
    try:
        scratch_ttl = str(parse_duration(args.scratch_ttl))
    except InvalidValue as e:
        raise UsageError(f"--scratch-ttl: {e}") from None
    try:
        max_lag = str(parse_duration(args.mirror_max_lag))
    except InvalidValue as e:
        raise UsageError(f"--mirror-max-lag: {e}") from None
    try:
        scrub_interval = str(parse_duration(args.scrub_interval))
    except InvalidValue as e:
        raise UsageError(f"--scrub-interval: {e}") from None
    settings = {"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": scratch_ttl,
                "mirror_max_lag": max_lag, "scrub_interval": scrub_interval}
    init = {"default_retention": default, "admin_gid": admin_gid,
            "admin_group": args.admin_group, "same_device": same_device,
            "no_mirror": bool(args.no_mirror)}
    log_uuid = str(uuid.uuid4())
    segment_size = _parse_size(args.segment_size)
    mirror_fields = dict(role="mirror", mode=args.mode, label=args.label,
                         peer_serial=primary_serial, peer_path=store, same_device=same_device,
                         serial=mirror_serial, log_uuid=log_uuid, segment_size=segment_size)
    notes = []
    # The mirror starts empty; from the primary's first event on it holds the same log,
    # frame for frame (the primary ships it as soon as it is created below).
    if s3_url:
        from .mirror.s3target import create_unit
        # Kept in unit.json, so that a later mount reaches the same store.
        args.s3_endpoint = args.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        notes = create_unit(s3_url, args.s3_endpoint, dict(
            mirror_fields, chunking=None, no_mirror=False))
    elif mirror:
        write_unit(mirror, **mirror_fields)
    create_store(store, role="primary", mode=args.mode, label=args.label,
                 peer_serial=mirror_serial, peer_path=mirror, same_device=same_device,
                 no_mirror=bool(args.no_mirror), serial=primary_serial, settings=settings,
                 init=init, log_uuid=log_uuid, segment_size=segment_size,
                 peer_endpoint=args.s3_endpoint if s3_url else None)
    for n in notes:
        print(f"note: {n}")
    print(f"created store {store}")
    print(f"  primary unit  {primary_serial}  {store}")
    if mirror:
        print(f"  mirror unit   {mirror_serial}  {mirror}")
    else:
        print("  mirror unit   none (--no-mirror): NOT COMPLIANT, for development only")
    print(f"  mode {args.mode}, default retention {default}")
    return 0


# -- status -------------------------------------------------------------------------------

def status_report(path):
    unit = read_unit(path)
    with Store(path, readonly=True) as st:
        info = st.unit_info() or {}
        stats = st.stats()
        seq = st.journal.last_seq
        last_verify = st.last_verification()
        comp = st.clock.now()
        wall = st.clock.wall_us()
        reserved = st.reserved_problem()
        clock_problems = st.clock_problems() + st.tamper_problems()
        chain_mode = (st.unit_info() or {}).get("mode")
    mirror = mirror_report(path, unit, seq) if unit["role"] == "primary" else None
    reasons = []
    peer = unit.get("peer_path")
    if unit["role"] == "primary" and peer and not is_s3(peer) and os.path.isdir(peer):
        try:
            with Store(peer, readonly=True) as ms:
                clock_problems += [f"mirror {unit.get('peer_serial')}: {t}"
                                   for t in ms.tamper_problems()]
        except WormError:
            pass  # unreachable or unreadable: the mirror's state says so
    if unit["role"] == "primary" and is_s3(peer) and not unit.get("no_mirror"):
        # The bucket's settings, asked every time (three requests): a weakened bucket is
        # NOT COMPLIANT at once. What it holds is checked by verify and the scrub.
        from .mirror.s3bucket import Bucket
        try:
            clock_problems += [f"mirror {unit.get('peer_serial')}: {peer}: {t}"
                               for t in Bucket(peer, unit.get("peer_endpoint"))
                               .config_problems()]
        except (StoreError, OSError):
            pass  # unreachable: the mirror's state says so
    degraded = mirror is not None and mirror["state"] not in ("synced", "none")
    if unit["role"] != "primary":
        reasons.append(f"this is the {unit['role']} unit of {unit.get('peer_serial')}")
    elif mirror["state"] == "none":
        reasons.append("no mirror unit (created with --no-mirror)" if unit.get("no_mirror")
                       else "no mirror unit: pair one with 'wormfs mirror resync STORE --to "
                            "DIR'")
    elif degraded:
        lag = f", {mirror['lag_events']} events behind" if mirror["lag_events"] else ""
        since = f" since {mirror['behind_since']}" if mirror.get("behind_since") else ""
        reasons.append(f"mirror {mirror['state']}{lag}{since}: {mirror.get('detail')}")
    if unit.get("same_device"):
        reasons.append("mirror is on the same device as the primary: not separately duplicated")
    for unit_dir in [path] + ([unit["peer_path"]] if unit.get("peer_path") and not
                              is_s3(unit["peer_path"]) else []):
        loose = loose_paths(unit_dir, limit=1)
        if loose:
            reasons.append(f"others may read the unit's files: {loose[0]} (mode "
                           f"{os.stat(loose[0]).st_mode & 0o777:03o}); units must be "
                           f"readable by root alone (0700 directories, 0600 files)")
    reasons += clock_problems
    from .store import reserve as space_reserve
    if space_reserve.in_use(path):
        reasons.append("the disk was full and the space reserve for holds, extensions and "
                       "deletions is used up: free space on it (the reserve comes back by "
                       "itself)")
    if last_verify is None:
        reasons.append("never verified (wormfs verify has not run)")
    elif not last_verify["ok"]:
        reasons.append(f"the last {last_verify['kind']} ({last_verify['time']}) found "
                       f"{last_verify['findings']} problems")
    stored = stats["stored_bytes"]
    return {
        "store": path, "unit": {"serial": unit["serial"], "role": unit["role"],
                                "label": unit.get("label", "")},
        "mode": chain_mode or unit["mode"], "default_retention": info.get("default_retention"),
        "records": stats["records"], "logical_bytes": stats["logical_bytes"],
        "stored_bytes": stored,
        "dedup_ratio": round(stats["logical_bytes"] / stored, 3) if stored else None,
        "events": seq, "mirror": mirror, "last_verification": last_verify,
        "state": "DEGRADED" if degraded else "OK",
        "clock": {"compliance": format_us(comp), "system": format_us(wall),
                  "difference_seconds": round((wall - comp) / US, 3)},
        "compliant": not reasons, "reasons": reasons,
        "notes": [reserved] if reserved else [],
    }


def _mirror_line(m):
    lag = f", {m['lag_events']} events behind" if m.get("lag_events") else ""
    since = f" since {m['behind_since']}" if m.get("behind_since") else ""
    text = f"{m['state']}{lag}{since}  {m['serial'] or ''} {m['path'] or ''}".rstrip()
    if m["state"] not in ("synced", "none") and m.get("detail"):
        text += f"\n           {m['detail']}"
    return text


def _verify_line(v):
    result = "clean" if v["ok"] else f"{v['findings']} findings"
    fixed = f", {v['repaired']} repaired" if v.get("repaired") else ""
    return f"{v['time']} ({v['kind']}{' --deep' if v.get('deep') else ''}: {result}{fixed})"


def _unit_of(text):
    from .admin.locate import store
    return store(text).unit


def cmd_status(args):
    r = status_report(_unit_of(args.store))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        u = r["unit"]
        print(f"store      {r['store']}  ({u['role']} unit {u['serial']}"
              f"{', ' + u['label'] if u['label'] else ''})")
        print(f"mode       {r['mode']}, default retention {r['default_retention']}")
        print(f"records    {r['records']}  ({human_bytes(r['logical_bytes'])} logical, "
              f"{human_bytes(r['stored_bytes'])} stored, dedup "
              f"{r['dedup_ratio'] or '-'}x)")
        m = r["mirror"]
        if m is not None:
            print(f"mirror     {_mirror_line(m)}")
        print(f"state      {r['state']}")
        v = r["last_verification"]
        print(f"verified   {_verify_line(v) if v else 'never'}")
        c = r["clock"]
        print(f"clock      compliance {c['compliance']}, system {c['system']} "
              f"(difference {c['difference_seconds']:+.0f}s)")
        for n in r["notes"]:
            print(f"note       {n}")
        if r["compliant"]:
            print("COMPLIANT")
        else:
            print("NOT COMPLIANT: " + "; ".join(r["reasons"]))
    return 0 if r["compliant"] else 1


# -- verify and scrub ----------------------------------------------------------------------

def _run_check(path, deep, repair, progress, s3_url=None):
    from .fs import control, requests
    from .mirror import verification
    unit = read_unit(path)
    if unit["role"] != "primary":
        if repair:
            raise UsageError(f"{s3_url or path} is a {unit['role']} unit: scrub --repair runs "
                             f"on the primary, which repairs both units (a mirror alone can "
                             f"be verified)")
        with Store(path, readonly=True) as st:
            rep = verification.run_readonly(st, os.path.join(path, "local"))
            if s3_url:
                _check_bucket_alone(s3_url, path, st, rep, deep)
            # Not a finding: a clean mirror on its own verifies OK, saying what it left out.
            rep.notes.append(f"only this {unit['role']} unit was checked (its primary "
                             f"{unit.get('peer_serial')} was not)")
            return rep.as_dict()
    if unit_in_use(path):  # mounted: the daemon that owns the store does the work
        return control.request(path, requests.Check(deep=deep, repair=repair),
                               progress)
    with Store(path) as st:
        return verification.run(st, deep=deep, repair=repair, progress=progress).as_dict()


def _check_bucket_alone(url, copy, st, rep, deep):
    """verify s3://…: the bucket's objects and locks, against the unit read back from it."""
    from .mirror.s3copy import bucket_for, check_bucket
    from .mirror.s3state import STATE_FILE, S3State
    state = S3State(os.path.join(copy, STATE_FILE), readonly=True)
    try:
        check_bucket(bucket_for(url), state, st.ix, rep, rep.units[0], deep=deep, copy=copy)
    finally:
        state.close()


def _print_check(r, what):
    for u in r["units"]:
        print(f"{u['role']:<8} {u['serial']}  {u['frames']} frames, {u['records']} records, "
              f"{u['events']} events  {u['path']}")
    for f in r["findings"]:
        where = f" [repaired from {f['source']}]" if f.get("repaired") else ""
        print(f"  {f['unit'] or 'store'}: {f['kind']}: {f['detail']}{where}")
    unlisted = r.get("unlisted") or {}
    for kind, n in sorted(unlisted.items()):
        print(f"  ... and {n} more {kind} finding{'s' if n != 1 else ''}, not listed")
    for n in r.get("notes", []):
        print(f"note: {n}")
    bad = sum(1 for f in r["findings"] if not f.get("repaired")) + sum(unlisted.values())
    if not bad:
        fixed = len(r["findings"])
        print(f"OK: {what} found every frame, chunk, event and record sound "
              f"({human_bytes(r['bytes'])} read{', ' + str(fixed) + ' repaired' if fixed else ''})")
    else:
        print(f"FAILED: {bad} finding{'s' if bad != 1 else ''}"
              f"{'' if r['repair'] else '; wormfs scrub --repair repairs what has a sound copy'}")


def cmd_verify(args, repair=False):
    what = "scrub" if repair else "verify"
    progress = Progress(what) if not args.json else None
    try:
        r = _run_check(_unit_of(args.store), getattr(args, "deep", False), repair,
                       progress, s3_url=args.store if is_s3(args.store) else None)
    finally:
        if progress:
            progress.done()
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        _print_check(r, what)
    return 0 if r["ok"] else 1


def cmd_scrub(args):
    return cmd_verify(args, repair=args.repair)


# -- mirror status, resync, promote --------------------------------------------------------

def cmd_mirror_status(args):
    path = _unit_of(args.store)
    unit = read_unit(path)
    if unit["role"] != "primary":
        raise UsageError(f"{path} is a {unit['role']} unit; give its primary "
                         f"({unit.get('peer_path') or 'unknown'})")
    with Store(path, readonly=True) as st:
        seq = st.journal.last_seq
    m = mirror_report(path, unit, seq)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(f"mirror     {_mirror_line(m)}")
        kept = m.get("refused_kept") or []
        for r in kept:
            print(f"refused    event {r['event_seq']} ({r['event_type']}), kept unapplied: "
                  f"{r['reason']}")
        if m.get("refused") and m["refused"]["event_seq"] not in {r["event_seq"] for r in kept}:
            print(f"refused    event {m['refused']['event_seq']}: {m['refused']['reason']}")
    return 0 if m["state"] == "synced" else 1


def _unmounted(path):
    with unit_locked(path, f"{path} is in use (mounted?); unmount it first"):
        pass


def _pair_and_check(path, new_serial, previous, what):
    """Open the primary (which ships its whole log to the mirror), audit the pairing, then
    scrub both units so the copy is verified. Returns the check report."""
    from .mirror import verification
    with Store(path) as st:
        if new_serial:
            st.note("mirror_paired", serial=new_serial, path=st.unit["peer_path"],
                    previous=previous, cause=what)
        st.mirror_poll()
        state, reason, _ = st.mirror_state()
        if state != "synced":
            raise StoreError(f"the mirror did not take the log: {state}: {reason}")
        progress = Progress("verify")
        try:
            rep = verification.run(st, repair=True, progress=progress, cause=what)
        finally:
            progress.done()
    return rep.as_dict()


def cmd_mirror_resync(args):
    path = os.path.abspath(args.store)
    unit = read_unit(path)
    if unit["role"] != "primary":
        raise UsageError(f"{path} is a {unit['role']} unit; resync runs on the primary")
    _unmounted(path)
    target = os.path.abspath(args.to) if args.to else unit.get("peer_path")
    if not target:
        raise UsageError("this store has no mirror: give --to DIR for a new one")
    new, previous = None, unit.get("peer_serial")
    if os.path.exists(os.path.join(target, "unit.json")):
        m = read_unit(target)
        if m.get("serial") != unit.get("peer_serial") or m.get("role") != "mirror":
            raise StoreError(f"{target} holds unit {m.get('serial')} ({m.get('role')}), not "
                             f"this store's mirror {unit.get('peer_serial')}; give an empty "
                             f"directory for a new mirror")
        if target != unit.get("peer_path"):   # the same mirror unit, moved
            unit["peer_path"] = target
            from .store.unit import rewrite_unit
            rewrite_unit(path, unit)
    else:
        # The place mkfs accepted stays accepted for a replacement unit.
        same_ok = args.allow_same_device or (target == unit.get("peer_path")
                                             and unit.get("same_device"))
        r, new = _copy_then_switch(path, target, same_ok)
        return _report_resync(args, r, f"mirror {new} at {target}: new unit, whole log "
                              f"copied and verified; it replaces {previous or 'no mirror'}",
                              "verify")
    r = _pair_and_check(path, new, previous, "resync")
    return _report_resync(args, r, f"mirror {new or unit.get('peer_serial')} at {target}: "
                          f"{'new unit, whole log copied' if new else 'caught up'}", "scrub")


def _report_resync(args, r, headline, what):
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(headline)
        _print_check(r, what)
    return 0 if r["ok"] else 1


def _copy_then_switch(path, target, same_ok):
    """A new mirror unit: copy the whole log into it and verify the pair while the store
    still names its old mirror, and only then switch (SPEC "Duplicate robustness": the old
    unit is never detached for a copy that did not take, nor if it holds events this store
    lacks). Returns (the verification report, the new serial)."""
    from .mirror import pairing
    from .store.maintenance import event_hash_at
    from .store.unit import new_serial
    same = pairing.check_mirror_place(path, target, same_ok)
    serial = new_serial()
    with Store(path, readonly=True) as st:  # readonly: it leaves the old mirror closed
        previous = st.unit.get("peer_serial")
        pairing.check_old_mirror(path, st.unit, st.journal.last_seq,
                                 lambda seq: event_hash_at(st.log, st.ix, seq))
    with Store(path) as st:
        report = pairing.copy_to_new_unit(st, target, serial, same)
    pairing.switch_mirror(path, target, serial, same)
    with Store(path) as st:
        st.note("mirror_paired", serial=serial, path=target, previous=previous,
                cause="resync")
        st.mirror_poll()
        state, reason, _ = st.mirror_state()
        if state != "synced":
            # The copy verified; only the pairing event did not reach it yet: the mount
            # ships it.
            print(f"wormfs: note: the new mirror is {state}: {reason}", file=sys.stderr)
    return report.as_dict(), serial


def cmd_mirror_promote(args):
    from .mirror.pairing import new_mirror, promote
    if is_s3(args.store):
        path = _promote_copy_of_bucket(args)
    else:
        path = os.path.abspath(args.store)
    old_primary, retired = promote(path, force=args.force)
    new = None
    if args.mirror:
        _, new = new_mirror(path, os.path.abspath(args.mirror), args.allow_same_device)
    with Store(path) as st:
        st.note("promote", previous_primary=old_primary, retired=retired, new_mirror=new)
    print(f"{path} is now the primary (it was the mirror of {old_primary}"
          f"{', which is retired' if retired else ''})")
    if not new:
        print("it has no mirror: NOT COMPLIANT until 'wormfs mirror resync "
              f"{path} --to DIR' pairs one")
        return 0
    r = _pair_and_check(path, None, None, "promote")
    print(f"new mirror {new} at {os.path.abspath(args.mirror)}: whole log copied")
    _print_check(r, "scrub")
    return 0 if r["ok"] else 1


def _promote_copy_of_bucket(args):
    """An S3 unit is promoted by reading it into a local directory (--to), which then
    continues the log as the primary; the bucket keeps what it holds, locked."""
    from .mirror.s3copy import bucket_for, fetch
    from .mirror.s3state import STATE_FILE, S3State
    from .store.unit import rewrite_unit
    if not args.to:
        raise UsageError("an S3 unit is promoted into a local directory: give --to DIR (an "
                         "empty directory on the disk the new primary will use)")
    path = os.path.abspath(args.to)
    _check_empty(path, "--to directory")
    progress = Progress(f"fetch {args.store}")
    try:
        state, findings = fetch(bucket_for(args.store), path, progress)
        state.close()
    finally:
        progress.done()
    for text in findings:
        print(f"ignored: {text}")
    S3State.remove(os.path.join(path, STATE_FILE))   # the bucket's, not the new primary's
    unit = read_unit(path)
    unit["promoted_from_s3"] = unit.pop("s3", args.store)
    unit.pop("s3_endpoint", None)
    rewrite_unit(path, unit)
    return path


# -- rebuild-index and clock ---------------------------------------------------------------

def cmd_rebuild_index(args):
    path = os.path.abspath(args.store)
    read_unit(path)
    index = os.path.join(path, "index")
    old = index + ".old"
    with unit_locked(path, f"{path} is in use (mounted?); unmount it first"):
        if os.path.exists(old):
            shutil.rmtree(old)
        if os.path.exists(index):
            os.rename(index, old)   # kept until the new one is complete
        os.makedirs(index)
        try:
            seq, stats = rebuild_index(path)
        except BaseException:
            shutil.rmtree(index, ignore_errors=True)
            if os.path.exists(old):
                os.rename(old, index)
            raise
        shutil.rmtree(old, ignore_errors=True)
    print(f"rebuilt index of {path} from its segments: {seq} events, {stats['records']} "
          f"records, {stats['chunks']} chunks")
    return 0


def cmd_clock(args):
    path = _unit_of(args.store)
    with Store(path, readonly=True) as st:
        comp, wall = st.clock.now(strict=True), st.clock.wall_us()
        src = st.clock.readings()
        problems = st.clock_problems()
    r = {"compliance": format_us(comp), "system": format_us(wall),
         "difference_seconds": round((wall - comp) / US, 3),
         "kernel": format_us(src.kernel_us), "uptime_seconds": round(src.uptime_us / US, 2),
         "boottime_seconds": round(src.boot_us / US, 2), "trusted": not problems,
         "problems": problems}
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"compliance clock  {r['compliance']}")
        print(f"system clock      {r['system']}  (the kernel's file times: {r['kernel']})")
        print(f"difference        {r['difference_seconds']:+.3f}s (system minus compliance)")
        print(f"sources           boot-time clock {r['boottime_seconds']}s, kernel uptime "
              f"{r['uptime_seconds']}s")
        for p in problems:
            print(f"NOT TRUSTED       {p}")
    return 0 if not problems else 1


# -- mount and umount ----------------------------------------------------------------------

def cmd_mount(args):
    from .fs.daemon import MountError, mount
    if is_s3(args.store):
        # The bucket read into its local copy, mounted read-only (it is a mirror unit).
        from .mirror.s3copy import fetch_for_reading
        args.store = fetch_for_reading(args.store)
    try:
        return mount(args.store, args.mountpoint, foreground=args.foreground,
                     options=args.o, log_file=args.log, debug=args.debug)
    except MountError as e:
        raise StoreError(str(e)) from None


def cmd_umount(args):
    from .fs.daemon import MountError, unmount
    try:
        unmount(args.mountpoint, timeout=args.timeout)
    except MountError as e:
        raise StoreError(str(e)) from None
    return 0


# -- entry point ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = _Parser(prog="wormfs", description="Content-addressed WORM file system for "
                "broker-dealer records (SEC 17a-4(f)).")
    p.add_argument("--version", action="version", version=f"wormfs {__version__}")
    p.add_argument("--s3-endpoint", dest="s3_endpoint_any", metavar="URL",
                   help="S3 endpoint for s3:// units (else AWS_ENDPOINT_URL or the AWS "
                        "configuration)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("mkfs", help="create a store: a primary unit and its mirror unit")
    s.add_argument("store")
    s.add_argument("--mirror", metavar="DIR|s3://BUCKET/PREFIX")
    s.add_argument("--s3-endpoint", metavar="URL",
                   help="the S3 endpoint of an s3:// mirror (else AWS_ENDPOINT_URL or the "
                        "AWS configuration); kept in the store's unit.json")
    s.add_argument("--no-mirror", action="store_true",
                   help="development only: the store reports NOT COMPLIANT")
    s.add_argument("--default-retention", default="6y", metavar="PERIOD")
    s.add_argument("--mode", choices=("compliance", "enterprise"), default="compliance")
    s.add_argument("--label", default="")
    s.add_argument("--admin-group", metavar="GROUP",
                   help="group whose members are records admins (root always is)")
    s.add_argument("--allow-same-device", action="store_true")
    s.add_argument("--scratch-ttl", default=DEFAULT_SCRATCH_TTL, metavar="PERIOD",
                   help="seal scratch files left untouched this long (default 24h)")
    s.add_argument("--segment-size", default="128M", metavar="SIZE",
                   help="size at which a segment file is finished and made immutable "
                        "(default 128M)")
    s.add_argument("--scrub-interval", default="7d", metavar="PERIOD",
                   help="how often a mounted store re-reads and repairs both units "
                        "(default 7d)")
    s.add_argument("--mirror-max-lag", default="24h", metavar="PERIOD",
                   help="refuse new files once the mirror has been behind this long "
                        "(default 24h)")
    s.set_defaults(fn=cmd_mkfs)

    s = sub.add_parser("mount", help="mount a store (the mirror unit mounts read-only)")
    s.add_argument("store")
    s.add_argument("mountpoint")
    s.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground and log to stderr")
    s.add_argument("-o", action="append", metavar="OPTIONS",
                   help="mount options, e.g. allow_other,ro (fstab-only ones are ignored)")
    s.add_argument("--log", metavar="FILE", help="log here instead of syslog")
    s.add_argument("--debug", action="store_true", help="log every refused request")
    s.set_defaults(fn=cmd_mount)

    s = sub.add_parser("umount", help="unmount; returns once everything is durable")
    s.add_argument("mountpoint")
    s.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    s.set_defaults(fn=cmd_umount)

    s = sub.add_parser("status", help="units, records, mirror, clock, compliance")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("verify", help="check every record, chunk, event and index entry on "
                       "both units")
    s.add_argument("store")
    s.add_argument("--deep", action="store_true",
                   help="also replay each unit's log into a scratch index and compare it "
                        "with the unit's index, entry by entry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("scrub", help="re-read every chunk on both units; --repair fixes a "
                       "damaged copy from the sound one")
    s.add_argument("store")
    s.add_argument("--repair", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_scrub)

    s = sub.add_parser("mirror", help="the duplicate unit: status, resync, promote")
    msub = s.add_subparsers(dest="mirror_cmd", required=True, parser_class=_Parser)
    t = msub.add_parser("status", help="the mirror's state and lag")
    t.add_argument("store")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_mirror_status)
    t = msub.add_parser("resync", help="catch up, repair and verify the mirror, or build a "
                        "new one (--to DIR)")
    t.add_argument("store")
    t.add_argument("--to", metavar="DIR", help="an empty directory for a new mirror unit, "
                   "or where the mirror unit was moved")
    t.add_argument("--allow-same-device", action="store_true")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_mirror_resync)
    t = msub.add_parser("promote", help="make a mirror the primary when the primary is lost")
    t.add_argument("store", metavar="MIRROR")
    t.add_argument("--mirror", metavar="DIR", help="an empty directory for its new mirror")
    t.add_argument("--to", metavar="DIR",
                   help="for an s3:// mirror: the empty local directory the new primary is "
                        "read into")
    t.add_argument("--allow-same-device", action="store_true")
    t.add_argument("--force", action="store_true",
                   help="the old primary still exists: retire it (it never takes a write "
                        "again)")
    t.set_defaults(fn=cmd_mirror_promote)

    s = sub.add_parser("rebuild-index", help="recreate the index from the segments alone")
    s.add_argument("store")
    s.set_defaults(fn=cmd_rebuild_index)

    _admin_parsers(sub)

    s = sub.add_parser("clock", help="the compliance clock and the system clock")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_clock)
    return p


def _selection_options(s):
    s.add_argument("--path", metavar="GLOB", help="records whose path matches, e.g. "
                   "'/mail/2026/*'")
    s.add_argument("--serial", metavar="A-B", help="a serial or a range: 17, 10-20, 10-, -20")
    s.add_argument("--from", dest="from_", metavar="DATE", help="committed at or after DATE")
    s.add_argument("--to", metavar="DATE", help="committed at or before DATE (a bare date: "
                   "the whole day)")
    s.add_argument("--expiring-before", metavar="DATE",
                   help="retain-until before DATE (records held indefinitely or waiting for "
                        "their event never are)")
    s.add_argument("--held", action="store_true", help="only records under a legal hold")


def _record_paths(s):
    s.add_argument("paths", nargs="+", metavar="PATH",
                   help="a file in a wormfs mount, or with --store a path inside the store")
    s.add_argument("--store", metavar="STORE", help="the store (directory or mount point) the "
                   "paths are in, e.g. for a store that is not mounted")
    s.add_argument("--json", action="store_true")


def _admin_parsers(sub):
    from .admin import commands as A
    s = sub.add_parser("info", help="every field of one or more records")
    _record_paths(s)
    s.set_defaults(fn=A.cmd_info)

    s = sub.add_parser("ls", help="list records: the searchable index")
    s.add_argument("store")
    _selection_options(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", "-q", action="store_true", help="no count at the end")
    s.set_defaults(fn=A.cmd_ls)

    s = sub.add_parser("retain", help="extend records' retention (never shortens)")
    _record_paths(s)
    s.add_argument("--until", metavar="DATE", help="retain until DATE, or 'indefinite'")
    s.add_argument("--for", dest="for_", metavar="PERIOD",
                   help="retain until the commit time plus PERIOD (e.g. 7y)")
    s.set_defaults(fn=A.cmd_retain)

    s = sub.add_parser("hold", help="place a legal hold on records (records admin)")
    _record_paths(s)
    s.add_argument("--name", required=True, metavar="CASE")
    s.add_argument("--reason", metavar="TEXT")
    s.set_defaults(fn=A.cmd_hold)

    s = sub.add_parser("release", help="release a legal hold (records admin)")
    _record_paths(s)
    s.add_argument("--name", required=True, metavar="CASE")
    s.set_defaults(fn=A.cmd_release)

    s = sub.add_parser("event", help="set the event date of event-based retention (records "
                       "admin; once)")
    _record_paths(s)
    s.add_argument("--date", required=True, metavar="DATE")
    s.set_defaults(fn=A.cmd_event)

    s = sub.add_parser("delete", help="enterprise mode: a records admin's audited early "
                       "delete of unexpired, unheld records")
    _record_paths(s)
    s.add_argument("--privileged", action="store_true", help="required: this deletes "
                   "records before their retain-until")
    s.add_argument("--reason", metavar="TEXT", help="why (goes into the audit trail)")
    s.set_defaults(fn=A.cmd_delete)

    s = sub.add_parser("export", help="a production for a regulator: records, index, audit "
                       "trail, checksums (a directory, .zip or .tar)")
    s.add_argument("store", help="a store, a mount point of it, or a mirror unit alone")
    s.add_argument("--out", required=True, metavar="DIR|FILE.zip|FILE.tar")
    _selection_options(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=A.cmd_export)

    s = sub.add_parser("dispose", help="delete expired, unheld records and reclaim the data "
                       "no retained record uses, on both units, with a certificate")
    s.add_argument("store")
    s.add_argument("--dry-run", action="store_true", help="only say what would go")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=A.cmd_dispose)

    s = sub.add_parser("selftest", help="write a canary record, try every forbidden "
                       "operation on it, check the refusals, the audit chain and the mirror")
    s.add_argument("mountpoint")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=A.cmd_selftest)

    s = sub.add_parser("audit", help="the audit trail; --verify checks its hash chain on "
                       "both units")
    s.add_argument("store")
    s.add_argument("--since", metavar="DATE")
    s.add_argument("--path", metavar="GLOB", help="events about paths that match")
    s.add_argument("--format", choices=("text", "jsonl", "csv"), default="text")
    s.add_argument("--verify", action="store_true")
    s.add_argument("--json", action="store_true", help="with --verify: the result as JSON")
    s.set_defaults(fn=A.cmd_audit)


COMMANDS = ("mkfs", "status", "verify", "scrub", "rebuild-index", "clock", "mount", "umount",
            "mirror", "info", "ls", "retain", "hold", "release", "event", "audit", "export",
            "dispose", "selftest", "delete")


def _as_mount_helper(argv):
    """mount.fuse3 runs ``wormfs STORE MOUNTPOINT -o OPTS`` for fstab type fuse.wormfs."""
    if len(argv) >= 2 and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["mount"] + argv
    return argv


def main(argv=None):
    # Everything wormfs creates in a unit is root's alone (SPEC): the records' bytes are
    # reachable only through the mount's permission checks. Put back on the way out, for a
    # caller that runs main() in its own process (the tests).
    old_umask = os.umask(0o077)
    try:
        return _main(argv)
    finally:
        os.umask(old_umask)


def _main(argv):
    try:
        argv = _as_mount_helper(sys.argv[1:] if argv is None else list(argv))
        args = build_parser().parse_args(argv)
        endpoint = getattr(args, "s3_endpoint", None) or args.s3_endpoint_any
        if endpoint:
            # For every S3 client of this command and of a daemon it starts (botocore reads
            # it); mkfs also keeps it in the store's unit.json for later mounts.
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            args.s3_endpoint = endpoint
        return args.fn(args)
    except UsageError as e:
        print(f"wormfs: {one_line(e)}", file=sys.stderr)
        return 2
    except InvalidValue as e:
        print(f"wormfs: {one_line(e)}", file=sys.stderr)
        return 2
    except WormError as e:
        print(f"wormfs: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wormfs: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(one_line(f"wormfs: {e.filename or ''}{': ' if e.filename else ''}"
                       f"{e.strerror or e}"), file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line for the user, never a traceback
        print(f"wormfs: internal error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
