"""The record and audit-trail commands: ``info``, ``ls``, ``retain``, ``hold``, ``release``,
``event``, ``audit``. Each takes parsed arguments and returns an exit status (cli.py turns
errors into one line).

Changes to a mounted store go through the mount, as ``setfattr`` would: the kernel tells the
daemon who asks, and the daemon's rules and audit apply unchanged. A store that is not
mounted is opened directly, as the process running the command.
"""
import errno
import json
import os
import sys
from contextlib import ExitStack

from .. import retention
from ..actor import Actor
from ..errors import InvalidValue, NotFound, Refused, StoreError, WormError, one_line
from ..fs.xattrs import HOLD, PREFIX
from ..store.store import HOLD_NAME_CHARS, Store
from ..store.unit import read_unit
from ..timeutil import format_us, parse_date, parse_duration
from . import auditlog, locate, records

EXIT_FINDING, EXIT_USAGE = 1, 2


def _out(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def open_readonly(unit):
    return Store(unit, readonly=True)


# -- info ---------------------------------------------------------------------------------------

INFO_ORDER = ("serial", "path", "state", "size", "blake3", "committed", "retain_until",
              "event_date", "holds", "writer", "mirror", "mode", "uid", "gid", "mtime",
              "recovered_from", "unit")


def _print_info(shown, d):
    print(shown)
    writer = (f"{d['writer_user']} (uid {d['writer_uid']}, gid {d['writer_gid']}), "
              f"{d['writer_program']} (pid {d['writer_pid']})"
              if d["writer_uid"] is not None else "-")
    holds = "; ".join(f"{k}: {v}" if v else k for k, v in d["holds"].items()) or "none"
    rows = dict(d, writer=writer, holds=holds)
    for key in INFO_ORDER:
        value = rows.get(key)
        if value is None:
            continue
        print(f"  {key.replace('_', ' '):<15} {value}")


def cmd_info(args):
    status, out = 0, []
    with ExitStack() as stack:
        stores = {}
        for text in args.paths:
            try:
                place = locate.record(text, args.store)
                if place.unit not in stores:
                    st = stack.enter_context(open_readonly(place.unit))
                    stores[place.unit] = (st, records.mirror_view(st))
                st, mirror_of = stores[place.unit]
                d = records.describe(st, records.lookup(st, place.inner), mirror_of=mirror_of)
            except (NotFound, InvalidValue, StoreError) as e:
                print(one_line(f"wormfs: {text}: {e}"), file=sys.stderr)
                status = EXIT_FINDING
                continue
            out.append(d)
            if not args.json:
                _print_info(text, d)
    if args.json:
        _out(out)
    return status


# -- ls -----------------------------------------------------------------------------------------

def cmd_ls(args):
    place = locate.store(args.store)
    sel = records.selection_from(args)
    n = 0
    with open_readonly(place.unit) as st:
        now, mirror_of = st.now(), records.mirror_view(st)
        if args.json:
            print("[", end="")
        for rec in records.select(st, sel):
            d = records.describe(st, rec, now, mirror_of)
            if args.json:
                print(("," if n else "") + "\n  " + json.dumps(d, ensure_ascii=False), end="")
            else:
                if n == 0:
                    print(f"{'SERIAL':>8}  {'COMMITTED':<27}  {'RETAIN UNTIL':<27}  "
                          f"{'SIZE':>12}  {'HOLDS':<10}  PATH")
                holds = ",".join(d["holds"]) or "-"
                print(f"{d['serial']:>8}  {d['committed']:<27}  {d['retain_until']:<27}  "
                      f"{d['size']:>12}  {holds:<10}  {d['path']}")
            n += 1
        if args.json:
            print("\n]" if n else "]")
        elif not args.quiet:
            print(f"{n} record{'s' if n != 1 else ''}", file=sys.stderr)
    return 0


# -- retain, hold, release, event ---------------------------------------------------------------

class Change:
    """One kind of change, made through the mount (xattrs) or on the store directly."""

    def __init__(self, name, via_mount, via_store):
        self.name, self.via_mount, self.via_store = name, via_mount, via_store


def _apply(args, change):
    status, results = 0, []
    actor = Actor.current()
    with ExitStack() as stack:
        stores = {}
        for text in args.paths:
            result = {"path": text, "ok": False}
            results.append(result)
            try:
                place = locate.record(text, args.store)
                if place.mountpoint is not None:
                    _through_mount(place, change, result)
                else:
                    st = stores.get(place.unit)
                    if st is None:
                        st = stores[place.unit] = stack.enter_context(Store(place.unit))
                    rec = records.lookup(st, place.inner)
                    change.via_store(st, rec, actor)
                    result["record"] = records.describe(st, records.lookup(st, place.inner))
                result["ok"] = True
            except Refused as e:
                result["error"], code = f"refused: {e}", EXIT_FINDING
            except InvalidValue as e:
                result["error"], code = str(e), EXIT_USAGE
            except (NotFound, StoreError) as e:
                result["error"], code = str(e), EXIT_FINDING
            if not result["ok"]:
                status = max(status, code)
                print(one_line(f"wormfs: {text}: {result['error']}"), file=sys.stderr)
            elif not args.json:
                d = result["record"]
                holds = ", ".join(d["holds"]) or "none"
                print(f"{text}: serial {d['serial']}, retain until {d['retain_until']}, "
                      f"holds {holds}")
    if args.json:
        _out(results)
    return status


def _through_mount(place, change, result):
    path = place.in_mount()
    with open_readonly(place.unit) as st:   # sees what the daemon commits meanwhile
        before = auditlog.last_seq(st.ix)
        try:
            change.via_mount(path)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EINVAL):
                # The kernel passes on only the errno; the daemon recorded why.
                try:
                    mine = auditlog.refused_since(st.log, st.ix, before, os.getpid())
                except WormError:   # a damaged trail: the errno alone still answers
                    mine = []
                reason = mine[-1].get("reason") if mine else None
                if e.errno == errno.EPERM:
                    raise Refused(reason or "the store refused the change") from None
                raise InvalidValue(reason or "the store rejected the value") from None
            if e.errno == errno.ENODATA:
                raise NotFound(f"{change.name}: no such hold on this record") from None
            if e.errno == errno.ENOENT:
                raise NotFound("no such file") from None
            raise StoreError(os.strerror(e.errno)) from None
        result["record"] = records.describe(st, records.lookup(st, place.inner),
                                            mirror_of=records.mirror_view(st))


def _committed_through_mount(path):
    try:
        return parse_date(os.getxattr(path, PREFIX + "committed").decode())
    except OSError as e:
        if e.errno == errno.ENODATA:
            raise InvalidValue("not a record yet (it becomes one when its writer closes "
                               "it)") from None
        raise


def cmd_retain(args):
    if bool(args.until) == bool(args.for_):
        raise InvalidValue("give either --until DATE or --for PERIOD")
    if args.until:
        text = args.until.strip()
        if text != retention.INDEFINITE:
            parse_date(text)  # a bad date is exit 2 before anything is tried

        def value(committed):
            return text
    else:
        period = parse_duration(args.for_)

        def value(committed):
            return format_us(period.after(committed))

    def via_mount(path):
        os.setxattr(path, PREFIX + "retain_until", value(
            _committed_through_mount(path)).encode())

    def via_store(st, rec, actor):
        st.set_retain_until(rec.ino, value(rec.committed), actor)
    return _apply(args, Change("retain", via_mount, via_store))


def cmd_delete(args):
    """wormfs delete PATH... --privileged --reason TEXT (enterprise mode only). Through the
    daemon when the store is mounted, so its rules and audit apply."""
    from ..fs import control, requests
    if not args.privileged:
        raise InvalidValue("wormfs delete removes unexpired records early and needs "
                           "--privileged (enterprise mode only); an expired record is "
                           "removed with rm")
    if not args.reason or not args.reason.strip():
        raise InvalidValue("give --reason TEXT: it goes into the audit trail")

    status = 0
    actor = Actor.current()
    for text in args.paths:
        try:
            place = locate.record(text, args.store)
            if place.mountpoint is not None:
                control.request(place.unit, requests.Delete(path=place.inner,
                                                            reason=args.reason))
            else:
                with Store(place.unit) as st:
                    st.privileged_delete(records.lookup(st, place.inner).ino, args.reason,
                                         actor)
            if not args.json:
                print(f"{text}: deleted (privileged, reason recorded)")
        except InvalidValue as e:
            status = max(status, EXIT_USAGE)
            print(one_line(f"wormfs: {text}: {e}"), file=sys.stderr)
        except WormError as e:
            status = max(status, EXIT_FINDING)
            print(one_line(f"wormfs: {text}: refused: {e}"), file=sys.stderr)
    return status


def _check_hold_name(name):
    if not name or len(name) > 64 or not set(name) <= HOLD_NAME_CHARS:
        raise InvalidValue(f"bad hold name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -")


def cmd_hold(args):
    _check_hold_name(args.name)
    reason = args.reason if args.reason is not None else ""

    def via_mount(path):
        os.setxattr(path, HOLD + args.name, reason.encode("utf-8", "surrogateescape"))

    def via_store(st, rec, actor):
        st.place_hold(rec.ino, args.name, reason, actor)
    return _apply(args, Change("hold", via_mount, via_store))


def cmd_release(args):
    _check_hold_name(args.name)

    def via_mount(path):
        os.removexattr(path, HOLD + args.name)

    def via_store(st, rec, actor):
        st.release_hold(rec.ino, args.name, actor)
    return _apply(args, Change(f"hold {args.name}", via_mount, via_store))


def cmd_event(args):
    parse_date(args.date)

    def via_mount(path):
        os.setxattr(path, PREFIX + "event", args.date.strip().encode())

    def via_store(st, rec, actor):
        st.set_event_date(rec.ino, args.date.strip(), actor)
    return _apply(args, Change("event", via_mount, via_store))


# -- audit --------------------------------------------------------------------------------------

def cmd_audit(args):
    place = locate.store(args.store)
    if args.verify:
        return _audit_verify(place, args)
    sel_path = records.Selection(path=args.path) if args.path else None
    since = parse_date(args.since) if args.since else None
    fmt = args.format
    with open_readonly(place.unit) as st:
        start = auditlog.first_seq_at(st.log, st.ix, since) if since is not None else 1
        if fmt == "csv":
            sys.stdout.write(auditlog.csv_header())
        for ev, payload in auditlog.iter_events(st.log, st.ix, start):
            if since is not None and ev.get("time_us", since) < since:
                continue   # a log whose times step back somewhere is read from its start
            if sel_path is not None and not _event_matches(st, ev, sel_path):
                continue
            if fmt == "jsonl":
                # The stored bytes themselves: BLAKE3 of each line is the next event's prev.
                sys.stdout.write(payload.decode("ascii") + "\n")
            elif fmt == "csv":
                sys.stdout.write(auditlog.csv_line(ev))
            else:
                print(auditlog.text_line(ev))
    return 0


def _event_matches(st, ev, sel):
    paths = [ev.get("path"), ev.get("to")]
    inos, _ = auditlog.subjects(ev)
    paths += [st.path_of(i) for i in inos]
    return any(p and sel.matches_path(p) for p in paths)


def _audit_verify(place, args):
    check = auditlog.verify_unit(place.unit)
    r = check.as_dict()
    if args.json:
        _out(r)
    else:
        for u in r["units"]:
            print(f"{u['role']:<8} {u['serial']}  {u['events']} events, {u['verified']} "
                  f"verified  {u['path']}")
        for n in r["notes"]:
            print(f"  note: {n}")
        for f in r["findings"]:
            print(f"  {f['unit']}: event {f['seq']}: {f['detail']}")
        if check.ok:
            print("OK: the audit trail's hash chain is intact"
                  + (" and the same on both units" if len(r["units"]) == 2 else ""))
        else:
            print(f"FAILED: {len(r['findings'])} finding"
                  f"{'s' if len(r['findings']) != 1 else ''}")
    return 0 if check.ok else EXIT_FINDING


# -- export -------------------------------------------------------------------------------------

def cmd_export(args):
    from ..progress import Progress, human_bytes
    from . import export, noting
    place = locate.store(args.store)
    sel = records.selection_from(args)
    progress = Progress("export") if not args.json else None
    try:
        with open_readonly(place.unit) as st:
            summary = export.run(st, args.out, sel, progress)
    finally:
        if progress:
            progress.done()
    fields = {k: summary[k] for k in ("out", "format", "records", "bytes", "serials",
                                      "index_sha256")}
    fields["selection"] = {k: v for k, v in vars(sel).items() if v not in (None, False)}
    try:
        summary["event"] = noting.record(place.unit, "export", fields)
        status = 0
    except (WormError, OSError) as e:
        summary["event"] = None
        print(one_line(f"wormfs: the export is complete but could not be recorded in the "
                       f"audit trail: {e}"), file=sys.stderr)
        status = EXIT_FINDING
    if args.json:
        _out(summary)
    else:
        print(f"exported {summary['records']} records ({human_bytes(summary['bytes'])}) to "
              f"{summary['out']} ({summary['format']}); verified: every file read back and "
              f"matched its SHA-256 and BLAKE3")
        print("check it with: sha256sum -c SHA256SUMS; b3sum -c B3SUMS  (see README.txt)")
        if summary["event"]:
            print(f"recorded as {summary['event']}")
    return status


# -- dispose ------------------------------------------------------------------------------------

def cmd_dispose(args):
    from ..fs import control, requests
    from ..store import disposal
    from ..store.hostfs import unit_in_use
    place = locate.store(args.store)
    unit = read_unit(place.unit)
    if unit["role"] != "primary":
        if not args.dry_run:
            raise Refused(f"{place.unit} is a {unit['role']} unit: disposal runs on the "
                          f"primary, which disposes on both units")
        with open_readonly(place.unit) as st:
            cert = disposal.run(st, None, dry_run=True)
    elif unit_in_use(place.unit):   # mounted: the daemon that owns the store does it
        cert = control.request(place.unit, requests.Dispose(dry_run=bool(args.dry_run)))
    else:
        with Store(place.unit) as st:
            cert = disposal.run(st, Actor.current(), dry_run=args.dry_run)
    if args.json:
        _out(cert)
        return 0
    print_certificate(cert)
    return 0


def print_certificate(cert):
    """A dispose run's certificate (disposal.Certificate), for a person."""
    from ..progress import human_bytes
    more = cert.get("unlisted_records", 0)
    n = len(cert["records"]) + more
    verb = "would dispose of" if cert["dry_run"] else "disposed of"
    print(f"{verb} {n} record{'s' if n != 1 else ''}")
    for r in cert["records"]:
        print(f"  #{r['serial']:<8} {r['path']}  {human_bytes(r['size'])}  retained until "
              f"{r['retain_until']}  blake3 {r['blake3']}")
    if more:
        print(f"  ... and {more} more, not listed here (each is named in the dispose events "
              f"of the audit trail, wormfs audit STORE --format jsonl)")
    what = "would reclaim" if cert["dry_run"] else "reclaimed"
    print(f"{what} {cert['chunks']} chunks, {human_bytes(cert['bytes'])} (chunks that "
          f"retained records share stay)")
    events = cert.get("events") or ([cert["event"]] if cert.get("event") else [])
    if events:
        which = (f"event {events[0]}" if len(events) == 1 else
                 f"events {events[0]} to {events[-1]} ({len(events)} dispose events, each "
                 f"naming the one before)")
        print(f"certificate of destruction: {which} of the audit trail; "
              f"destroyed on {', '.join(cert.get('destroyed_on') or []) or 'no unit yet'}")
    if cert.get("pending"):
        print(f"NOT destroyed yet: {cert['pending']}")
    held = cert.get("still_held")
    if held:
        last = max(o["retain_until"] for o in held["objects"])
        print(f"NOT destroyed yet on the S3 unit {held['unit']}: {len(held['objects'])} "
              f"objects still hold the data, locked until {last} at the latest (a lock "
              f"cannot end early; the objects are listed in the disposal_done events; "
              f"they are no longer lengthened, and the first dispose after that date "
              f"deletes them)")
    gone = cert.get("bucket_destroyed")
    if gone:
        print(f"deleted from the S3 unit {gone['unit']}: {len(gone['objects'])} objects "
              f"whose locks had ended and that a newer object replaces (listed in the "
              f"bucket_destroyed event)")


# -- selftest -----------------------------------------------------------------------------------

def cmd_selftest(args):
    from . import selftest
    say = (lambda line: None) if args.json else print
    report = selftest.run(args.mountpoint, progress=say)
    if args.json:
        _out(report)
    else:
        n = sum(1 for c in report["checks"] if not c["ok"])
        print(f"{'PASSED' if report['ok'] else f'FAILED ({n} checks)'}; report stored as "
              f"record {report['report_serial']} at {report['report']}")
    return 0 if report["ok"] else EXIT_FINDING
