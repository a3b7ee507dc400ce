"""A verify or scrub pass in pieces (the background scrub's): it stops between segments or
windows of records, records where it stands in the chain, and goes on from there in another
process; the pieces together find what one walk finds, and report it once."""
import os
import random
import time

import pytest

from tests.conftest import clear_immutable, make_pair
from tests.conftest import flip_byte as flip
from wormfs.mirror import background, scrub, verification
from wormfs.mirror.scrubcursor import Cursor
from wormfs.store import disposal
from wormfs.store.index import Index
from wormfs.store.store import Store

from .test_dispose import rebuilt_equals_live

SEG = 256 << 10
DAY = 86400


@pytest.fixture
def filled(tmp_path, fake_time, monkeypatch):
    monkeypatch.setattr(scrub, "WINDOW", 4)      # several windows of records
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time,
                     mirror_time_source=fake_time, segment_size=SEG, default_retention="1d")
    with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
        for i in range(14):   # r12 expires after a day (in a late segment)
            put(st, f"r{i}", random.Random(i).randbytes(50_000 + 7_000 * i),
                retain=None if i == 12 else "2032-01-15")
    yield p, m, fake_time
    clear_immutable(str(tmp_path))


def put(st, name, data, retain="2032-01-15"):
    ino = st.create(1, name.encode(), 0o644, None).ino
    if retain:
        st.set_retain_until(ino, retain, None)
    st.write(ino, 0, data)
    return st.seal(ino)


def opened(p, t):
    return Store(p, time_source=t, mirror_time_source=t)


def in_pieces(p, t, repair=True, between=None, **kw):
    """Run a pass a piece at a time, each in a new Store (a new process's view), pausing at
    every chance; ``between(st, n)`` runs after piece n. Returns (final report, pieces)."""
    n = 0
    while True:
        with opened(p, t) as st:
            rep = verification.run(st, repair=repair, cause="background",
                                   resume=st.scrub_resume(), pause=lambda: True, **kw)
            n += 1
            if rep.resume is None:
                return rep, n
            if between is not None:
                between(st, n)


def scrub_events(p, t):
    with Store(p, readonly=True, time_source=t) as st:
        return [e for e in st.events() if e["type"] in ("scrub", "verify")]


def test_a_pass_in_pieces_reads_what_one_walk_reads_and_reports_once(filled):
    p, m, t = filled
    with opened(p, t) as st:
        whole = verification.run(st).as_dict()
    rep, n = in_pieces(p, t)
    assert rep.ok and n > 4
    got = rep.as_dict()
    # The pass began after the whole walk's verify event: one frame more on each unit.
    assert [(u["frames"], u["records"]) for u in got["units"]] == \
        [(u["frames"] + 1, 14) for u in whole["units"]]
    evs = scrub_events(p, t)[1:]            # after the whole walk's verify event
    assert [e.get("piece") for e in evs[:-1]] == list(range(1, n))
    assert all(e["resume"]["v"] == 1 for e in evs[:-1])
    assert evs[-1]["pieces"] == n and "resume" not in evs[-1] and evs[-1]["ok"]
    with opened(p, t) as st:
        assert st.scrub_resume() is None
        last = st.last_verification()
        assert last["kind"] == "scrub" and last["time"] == evs[-1]["time"]
    # The index keeps the cursor as a replay of the log does (rebuild-index), on both units.
    for unit in (p, m):
        rebuilt_equals_live(unit)


def test_while_a_pass_is_in_pieces_status_keeps_the_last_whole_verification(filled):
    p, m, t = filled
    with opened(p, t) as st:
        verification.run(st)
        before = st.last_verification()
        rep = verification.run(st, repair=True, cause="background", pause=lambda: True)
        assert rep.resume is not None
        assert st.last_verification() == before
        cur = Cursor.from_dict(st.scrub_resume())
        assert cur.pieces == 1 and cur.next == 2 and cur.phase == "log"
        # A whole pass in between ends the one in pieces: the next begins afresh.
        verification.run(st, repair=True)
        assert st.scrub_resume() is None


@pytest.mark.parametrize("side", ["primary", "mirror"])
def test_damage_found_in_a_later_piece_is_repaired_and_counted_by_the_pass(filled, side):
    p, m, t = filled
    segs = sorted(f for f in os.listdir(os.path.join(p, "segments")) if f.endswith(".seg"))
    victim = os.path.join(p if side == "primary" else m, "segments", segs[-1])
    flip(victim, os.path.getsize(victim) // 2)
    sound = m if side == "primary" else p      # where to read the chain from meanwhile
    rep, n = in_pieces(p, t, repair=False)
    assert not rep.ok and rep.count >= 2      # the frame, and the record holding it
    evs = scrub_events(sound, t)
    assert [e["ok"] for e in evs[:-1]][0] is True and evs[-1]["ok"] is False
    assert evs[-1]["findings"] == rep.count
    rep, n = in_pieces(p, t, repair=True)
    assert rep.ok and rep.repaired >= 1, rep.findings
    assert scrub_events(p, t)[-1]["repaired"] == rep.repaired   # p is sound again
    with opened(p, t) as st:
        assert verification.run(st, deep=True).ok


def test_what_comes_between_pieces_is_the_next_pass_s_and_no_false_finding(filled):
    """Records sealed and disposed of between two pieces: the pass walks what was there when
    it began (its records, its log), does not mistake the changes for damage (a disposed
    record's chunks gone from a segment it has still to walk), and the next pass takes
    them in."""
    p, m, t = filled

    def meanwhile(st, n):
        if n == 2:
            put(st, "late", os.urandom(300_000))
            t.advance(2 * DAY)
            cert = disposal.run(st, None)
            assert [r["path"] for r in cert["records"]] == ["/r12"]

    rep, n = in_pieces(p, t, between=meanwhile)
    assert rep.ok, rep.findings
    assert [u["records"] for u in rep.as_dict()["units"]] == [13, 13]   # r12 is gone
    assert any("a disposal ran" in note
               for e in scrub_events(p, t) for note in e.get("notes", ()))
    with opened(p, t) as st:
        again = verification.run(st, deep=True)
        assert again.ok and [u["records"] for u in again.as_dict()["units"]] == [14, 14]


@pytest.mark.parametrize("garbage", [{"v": 2}, {"v": 1, "units": "x"}, "text", 7,
                                     {"v": 1, "started": 0, "units": [], "last_serial": 1,
                                      "total": 0}])
def test_a_cursor_that_does_not_parse_starts_a_new_pass(filled, garbage):
    p, m, t = filled
    with pytest.raises(ValueError):
        Cursor.from_dict(garbage)
    with opened(p, t) as st:
        rep = verification.run(st, repair=True, cause="background", resume=garbage)
    assert rep.ok and rep.resume is None and rep.pieces == 0
    assert [u["records"] for u in rep.as_dict()["units"]] == [14, 14]


def test_a_cursor_of_other_units_starts_a_new_pass(filled):
    p, m, t = filled
    with opened(p, t) as st:
        rep = verification.run(st, repair=True, pause=lambda: True)
        cur = rep.resume.to_dict()
        cur["units"][1]["serial"] = "WU-OTHER"
        rep = verification.run(st, repair=True, resume=cur)
    assert rep.ok and rep.pieces == 0 and [u["records"] for u in rep.as_dict()["units"]] \
        == [14, 14]


def test_the_background_scrub_goes_on_after_a_restart_where_it_stood(filled, monkeypatch):
    """The daemon's thread: stopped in the middle of a pass it records where it stood; the
    next one (a remount) goes on from there at once, and finishes the pass."""
    p, m, t = filled
    monkeypatch.setattr(background, "MIN_RATE", 4 << 20)
    first_wait = background.BackgroundScrub._first_wait
    monkeypatch.setattr(background.BackgroundScrub, "_first_wait", lambda self, i: 0.0)
    with opened(p, t) as st:
        bg = background.BackgroundScrub(st, piece_seconds=0)
        deadline = time.monotonic() + 30
        while st.scrub_resume() is None or Cursor.from_dict(st.scrub_resume()).pieces < 3:
            assert time.monotonic() < deadline and bg.thread.is_alive()
            time.sleep(0.01)
        bg.stop()
        assert not bg.thread.is_alive()
        stopped_at = Cursor.from_dict(st.scrub_resume())
    monkeypatch.setattr(background.BackgroundScrub, "_first_wait", first_wait)
    with opened(p, t) as st:
        assert st.last_verification() is None      # so only the cursor says: go on now
        bg = background.BackgroundScrub(st, piece_seconds=0)
        deadline = time.monotonic() + 60
        while st.scrub_resume() is not None:
            assert time.monotonic() < deadline and bg.thread.is_alive()
            time.sleep(0.05)
        bg.stop()
    evs = [e for e in scrub_events(p, t) if e["cause"] == "background"]
    pieces = [e["piece"] for e in evs if "piece" in e]
    assert pieces == list(range(1, len(pieces) + 1))      # never back to the start
    assert pieces[-1] >= stopped_at.pieces and evs[-1]["pieces"] == len(pieces) + 1
    assert evs[-1]["ok"] and "resume" not in evs[-1]


class _Waits:
    """The background scrub's stop event, recording how long the pacer asks to sleep
    (and not sleeping)."""
    def __init__(self):
        self.asked = []

    def wait(self, seconds):
        self.asked.append(seconds)
        return False

    def is_set(self):
        return False


def test_a_new_pass_is_paced_from_its_own_start_not_from_a_cursor_it_cannot_use(
        filled, monkeypatch):
    """A pass left in pieces a day ago, resumed, is a day behind its schedule and reads at
    once; but when the recorded cursor no longer fits the units (the mirror is unreachable
    at the remount), the pass that begins instead is new and must be paced from now, not run
    as one unpaced burst on the old cursor's day."""
    p, m, t = filled
    monkeypatch.setattr(background, "MIN_RATE", 1 << 10)   # pacing shows at this size
    with opened(p, t) as st:
        rep = verification.run(st, repair=True, cause="background", pause=lambda: True)
        assert rep.resume is not None
    t.advance(DAY)

    def one_pass(st):
        bg = object.__new__(background.BackgroundScrub)
        bg.store, bg.piece_seconds, bg._stop = st, 10 ** 6, _Waits()
        assert bg._one_pass(interval=30 * DAY) is not None
        return bg._stop.asked

    with opened(p, t) as st:
        assert st.scrub_resume() is not None
        assert one_pass(st) == []       # the cursor fits: a day behind, no sleep
    with opened(p, t) as st:
        rep = verification.run(st, repair=True, cause="background", pause=lambda: True)
        assert rep.resume is not None
    t.advance(DAY)
    os.rename(m, m + ".away")
    try:
        with opened(p, t) as st:
            assert st.scrub_resume() is not None
            asked = one_pass(st)
    finally:
        os.rename(m + ".away", m)
    assert asked and max(asked) > 60     # ~1 MB at 1 KiB/s: paced over minutes


def _set_meta(unit, value):
    ix = Index(os.path.join(unit, "index"))
    try:
        with ix.write() as txn:
            ix.put_meta(txn, "scrub_resume", value)
    finally:
        ix.close()


def test_an_index_edited_behind_the_daemon_s_back_cannot_shorten_a_pass(filled):
    """The index keeps only the seq of the last piece's event; the cursor is read from the
    log. Pointed at a piece of a pass that has ended, at an event that is no piece, or at
    nothing, the scrub takes no cursor (a whole new pass), and verify --deep reports the
    edit."""
    p, m, t = filled
    rep, n = in_pieces(p, t)                     # a pass in pieces, ended
    old_piece = [e for e in scrub_events(p, t) if "resume" in e][-1]
    assert Cursor.from_dict(old_piece["resume"]).phase == "records"
    not_a_piece = scrub_events(p, t)[-1]["seq"]
    for forged in (old_piece["seq"], not_a_piece, 10 ** 9, "7", {"v": 1}):
        _set_meta(p, forged)
        with opened(p, t) as st:
            assert st.scrub_resume() is None, forged
            deep = verification.run(st, deep=True)
        assert any(f["kind"] == "index" and "'meta'" in f["detail"] for f in deep.findings)
        _set_meta(p, None)
    # What the scrub then does is a whole pass: every record, both units.
    with opened(p, t) as st:
        ix = st.ix
        with ix.write() as txn:
            ix.drop_meta(txn, "scrub_resume")
        rep = verification.run(st, repair=True, cause="background",
                               resume=st.scrub_resume())
    assert rep.ok and [u["records"] for u in rep.as_dict()["units"]] == [14, 14]
