"""Retention rules: extend-only, holds, event-based, the compliance clock. Through the store,
with the clock injected (the product has no such hook)."""
import pytest

from wormfs import retention
from wormfs.actor import Actor
from wormfs.errors import InvalidValue, NoSuchAttribute, Refused
from wormfs.timeutil import Duration, format_us, parse_date, parse_duration

ROOT = Actor(0, 0, 1, "pytest")
USER = Actor(1000, 1000, 2, "pytest")
YEAR = 365 * 24 * 3600


def record(store, name=b"r.txt", data=b"hello", parent=1):
    f = store.create(parent, name, 0o644, USER)
    store.write(f.ino, 0, data)
    return store.seal(f.ino, USER)


def refusals(store):
    return [e for e in store.events() if e["type"] == "refused"]


def test_durations_and_dates():
    assert parse_duration("18m") == Duration(months=18, text="18m")
    assert parse_duration("P6Y").months == 72
    assert parse_duration("PT90S").seconds == 90
    assert parse_duration("3y").after(parse_date("2024-02-29")) == parse_date("2027-02-28")
    assert parse_duration("1m").after(parse_date("2026-01-31")) == parse_date("2026-02-28")
    assert format_us(parse_date("2032-01-31T17:00:00Z")) == "2032-01-31T17:00:00Z"
    for bad in ("7x", "", "0d", "P", "PT", "-3y", "3 y", "6Y6"):
        with pytest.raises(InvalidValue, match="bad duration"):
            parse_duration(bad)
    for bad in ("2032-13-01", "tomorrow", "2032-01-32", "", "20320131"):
        with pytest.raises(InvalidValue, match="bad date"):
            parse_date(bad)


def test_record_gets_store_default(store, fake_time):
    r = record(store)
    assert retention.display(r.retention) == "2032-01-15T09:00:00Z"


def test_directory_default_wins_over_store_default(store):
    d = store.mkdir(1, b"chat", 0o755, ROOT)
    store.set_dir_retention(d.ino, "18m", ROOT)
    sub = store.mkdir(d.ino, b"2026", 0o755, ROOT)
    r = record(store, parent=sub.ino)
    assert retention.display(r.retention) == "2027-07-15T09:00:00Z"


def test_file_xattr_wins_and_classes(store):
    for name, value, shown in ((b"a", "2040-01-01", "2040-01-01T00:00:00Z"),
                               (b"b", "indefinite", "indefinite"),
                               (b"c", "event+6y", "event+6y")):
        f = store.create(1, name, 0o644, USER)
        store.set_retain_until(f.ino, value, USER)
        r = store.seal(f.ino, USER)
        assert retention.display(r.retention) == shown


def test_extend_only(store):
    r = record(store)
    ino = r.ino
    store.set_retain_until(ino, "2035-01-01", USER)
    assert retention.display(store.inode(ino).retention) == "2035-01-01T00:00:00Z"
    with pytest.raises(Refused):
        store.set_retain_until(ino, "2034-01-01", USER)
    assert retention.display(store.inode(ino).retention) == "2035-01-01T00:00:00Z"
    store.set_retain_until(ino, "indefinite", USER)
    with pytest.raises(Refused):
        store.set_retain_until(ino, "2099-01-01", USER)
    assert retention.display(store.inode(ino).retention) == "indefinite"
    assert [e["op"] for e in refusals(store)] == ["set_retain_until", "set_retain_until"]


def test_malformed_values_change_nothing(store):
    r = record(store)
    before = store.inode(r.ino).retention
    n = len(list(store.events()))
    for bad in ("soon", "2032-02-30", "event+", "event+0d", "", "\udcff"):
        with pytest.raises(InvalidValue):
            store.set_retain_until(r.ino, bad, USER)
    assert store.inode(r.ino).retention == before
    assert len(list(store.events())) == n
    # A date in the past is earlier than the record's retain-until: a WORM refusal (SPEC:
    # "an earlier one ... is EPERM"), audited, not a bad value.
    with pytest.raises(Refused, match="earlier than the current retain-until"):
        store.set_retain_until(r.ino, "2020-01-01", USER)
    assert store.inode(r.ino).retention == before
    assert [e["type"] for e in store.events()][n:] == ["refused"]
    # On a file that is not a record yet, a past date is below its retention floor: EPERM
    # too (SPEC "retention floor").
    f = store.create(1, b"open", 0o644, USER)
    with pytest.raises(Refused, match="earlier than"):
        store.set_retain_until(f.ino, "2020-01-01", USER)


def test_expiry_hold_and_delete(store, fake_time):
    d = store.mkdir(1, b"short", 0o755, ROOT)
    store.set_dir_retention(d.ino, "3s", ROOT)
    r = record(store, parent=d.ino)
    with pytest.raises(Refused, match="retained until"):
        store.unlink(d.ino, b"r.txt", USER)
    fake_time.advance(4)
    store.place_hold(r.ino, "case-42", "SEC inquiry", ROOT)
    with pytest.raises(Refused, match="legal hold"):
        store.unlink(d.ino, b"r.txt", USER)
    with pytest.raises(Refused):
        store.release_hold(r.ino, "case-42", USER)   # not a records admin
    store.release_hold(r.ino, "case-42", ROOT)
    with pytest.raises(NoSuchAttribute):
        store.release_hold(r.ino, "case-42", ROOT)
    store.unlink(d.ino, b"r.txt", USER)
    ev = [e for e in store.events() if e["type"] == "delete"]
    assert ev and ev[0]["serial"] == r.serial and ev[0]["actor"]["uid"] == 1000
    assert [e["op"] for e in refusals(store)] == ["unlink", "unlink", "release"]


def test_event_based_pending_until_event_date(store, fake_time):
    d = store.mkdir(1, b"accounts", 0o777, ROOT).ino
    store.set_dir_retention(d, "1d", ROOT)  # a floor short enough for event+1y
    f = store.create(d, b"acct", 0o644, USER)
    store.set_retain_until(f.ino, "event+1y", USER)
    r = store.seal(f.ino, USER)
    fake_time.advance(3 * YEAR)
    with pytest.raises(Refused, match="event"):
        store.unlink(d, b"acct", USER)  # pending: never expires before the event
    with pytest.raises(Refused):
        store.set_retain_until(r.ino, "2030-01-01", USER)  # date would replace a pending event
    with pytest.raises(Refused):
        store.set_event_date(r.ino, "2027-01-01", USER)  # not a records admin
    store.set_event_date(r.ino, "2027-01-01", ROOT)
    assert retention.display(store.inode(r.ino).retention) == "2028-01-01T00:00:00Z"
    with pytest.raises(Refused, match="already set"):
        store.set_event_date(r.ino, "2027-06-01", ROOT)
    store.unlink(d, b"acct", USER)  # 2029 > 2028: expired


def test_forward_clock_jump_of_ten_years_expires_nothing(store, fake_time):
    record(store)
    fake_time.jump_wall(10 * YEAR)
    fake_time.advance(60)
    with pytest.raises(Refused, match="retained until"):
        store.unlink(1, b"r.txt", USER)
    kinds = [e["kind"] for e in store.events() if e["type"] == "clock"]
    assert "ahead" in kinds
    assert store.now() < parse_date("2026-01-16")


def test_clock_never_runs_backward(store, fake_time):
    t0 = store.now()
    fake_time.jump_wall(-5 * YEAR)
    fake_time.advance(10)
    # The kernel's realtime says no time passed over that check: the smallest source wins
    # (the clock stalls for it, never goes back), and the disagreement is on record.
    assert store.now() >= t0
    fake_time.advance(10)
    assert store.now() >= t0 + 10_000_000      # then real time counts again
    store.tick()
    kinds = [e["kind"] for e in store.events() if e["type"] == "clock"]
    assert "behind" in kinds and "disagree" in kinds


def test_a_faked_source_never_speeds_the_clock_and_deletions_wait(unit_path, fake_time):
    from ..conftest import make_unit
    from wormfs.clock import SETTLE_US
    from wormfs.store.store import Store
    from wormfs.timeutil import US
    make_unit(unit_path, fake_time, default_retention="1d")
    store = Store(unit_path, time_source=fake_time)
    record(store, name=b"r")
    t0 = store.now()
    # A clock library in the daemon: its wall and boot clocks run two years ahead of the
    # kernel's file times and uptime.
    fake_time.wall += 2 * YEAR * US
    fake_time.boot += 2 * YEAR * US
    fake_time.process_skew = 2 * YEAR * US
    fake_time.uptime_skew = -2 * YEAR * US
    fake_time.advance(5)
    assert t0 <= store.now() <= t0 + 6 * US
    with pytest.raises(Refused):
        store.unlink(1, b"r", ROOT)
    assert "faked clock" in store.clock_problems()[0] or "disagree" in store.clock_problems()[0]
    # Two real days pass under the fake: the record expires by the true time, but deletions
    # wait while this process's clock disagrees with the kernel's.
    fake_time.advance(2 * 86400)
    with pytest.raises(Refused, match="sources agree"):
        store.unlink(1, b"r", ROOT)
    # The fake goes: after SETTLE of agreement, deletions go by the true time.
    fake_time.wall -= 2 * YEAR * US
    fake_time.boot -= 2 * YEAR * US
    fake_time.process_skew = fake_time.uptime_skew = 0
    fake_time.advance(1)
    store.now()
    fake_time.advance(SETTLE_US / US + 1)
    store.unlink(1, b"r", ROOT)
    kinds = [e["kind"] for e in store.events() if e["type"] == "clock"]
    assert "disagree" in kinds and "settled" in kinds
    store.close()


def test_an_edited_clock_file_is_reported_and_ignored(unit_path, fake_time):
    import json
    from ..conftest import make_unit
    from wormfs.store.store import Store
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        t0 = st.now()
    path = f"{unit_path}/clock.json"
    with open(path) as f:
        state = json.load(f)
    state["compliance_us"] += 10 * YEAR * 10**6
    with open(path, "w") as f:
        json.dump(state, f)
    fake_time.reboot(downtime_seconds=60)     # even across a reboot
    with Store(unit_path, time_source=fake_time) as st:
        assert st.now() < t0 + 3600 * 10**6
        problems = st.clock_problems()
        assert problems and "clock.json" in problems[0] and "ignored" in problems[0]
        assert any(e["kind"] == "file" for e in st.events() if e["type"] == "clock")


def test_catch_up_is_bounded(store, fake_time):
    t0 = store.now()
    fake_time.jump_wall(30 * 24 * 3600)       # 30 days ahead
    fake_time.advance(365 * 24 * 3600 / 2)    # half a year of real time
    gained = store.now() - t0 - int(365 * 24 * 3600 / 2 * 1e6)
    assert 0 < gained <= int(3.5 * 24 * 3600 * 1e6) + 1  # at most 7 days per year


def test_clock_survives_restart_and_reboot(unit_path, fake_time):
    from ..conftest import make_unit
    from wormfs.store.store import Store
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        t0 = st.now()
    fake_time.advance(100)                    # same boot, daemon down for 100 s
    with Store(unit_path, time_source=fake_time) as st:
        assert st.now() - t0 >= 100_000_000
        t1 = st.now()
    fake_time.reboot(downtime_seconds=10 * YEAR)   # powered off and clock set far ahead
    with Store(unit_path, time_source=fake_time) as st:
        assert t1 <= st.now() < t1 + 60_000_000
        assert any(e["kind"] == "restart" for e in st.events() if e["type"] == "clock")


def test_holds_and_event_dates_need_a_records_admin(store):
    r = record(store)
    with pytest.raises(Refused):
        store.place_hold(r.ino, "case", "x", USER)
    admin = Actor(1000, 1000, 3, "pytest", groups=(4242,))
    with pytest.raises(Refused):
        store.place_hold(r.ino, "case", "x", admin)   # store has no admin group
    for bad in ("", "a b", "x" * 65, "ü"):
        with pytest.raises(InvalidValue):
            store.place_hold(r.ino, bad, "x", ROOT)
    with pytest.raises(InvalidValue):
        store.place_hold(r.ino, "case", "x" * 2000, ROOT)
    store.place_hold(r.ino, "case", "reason", ROOT)
    assert store.inode(r.ino).holds == {"case": "reason"}


def test_format_us_writes_what_strftime_writes_for_any_time():
    """format_us keeps the text of the last second it wrote (events come many to a second);
    whatever came before, each time must read exactly as datetime.strftime writes it."""
    import random
    from wormfs.timeutil import from_us

    def by_strftime(t):
        d = from_us(t)
        return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if d.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    rnd = random.Random(5)
    base = 1764625000000000
    times = [0, 1, -1, 999_999, 1_000_000, -1_000_000, -1_000_001, base, base + 1,
             253402300799999999, -62135596800000000]
    times += [rnd.randint(-62135596800000000, 253402300799999999) for _ in range(20000)]
    times += [base + rnd.randint(0, 3_000_000) for _ in range(5000)]  # same seconds, again
    for t in times:
        assert format_us(t) == by_strftime(t), t


def test_the_latest_expiry_is_the_longest_finite_retention(store):
    """Index.latest_expiry (what an S3 duplicate locks its objects until at least): the
    latest finite retain-until of any record; indefinite and pending ones have none."""
    with store.ix.read() as txn:
        assert store.ix.latest_expiry(txn) == 0
    a, b, c = record(store, b"a"), record(store, b"b"), record(store, b"c")
    store.set_retain_until(b.ino, "2090-01-01", USER)
    store.set_retain_until(c.ino, "indefinite", USER)
    with store.ix.read() as txn:
        assert store.ix.latest_expiry(txn) == parse_date("2090-01-01")
        assert store.ix.latest_expiry(txn) > retention.effective(store.inode(a.ino).retention)[1]
