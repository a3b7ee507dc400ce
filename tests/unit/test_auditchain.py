"""audit --verify's chain walk (admin/auditlog.py): both units' chains walked in step, each
to its end, compared event by event, in memory that does not grow with the chain."""
import pytest

from tests.conftest import clear_immutable, make_pair, make_unit
from wormfs.admin.auditlog import verify_chains, verify_unit
from wormfs.store.store import Store


def fill(path, n, t):
    with Store(path, time_source=t) as st:
        for i in range(n):
            ino = st.create(1, f"r{i}".encode(), 0o644, None).ino
            st.write(ino, 0, b"x" * (i + 1))
            st.seal(ino)


@pytest.fixture
def two_units(tmp_path, fake_time):
    """Two stores with histories of their own (a forged mirror, as far as a walk sees)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    make_unit(a, fake_time)
    make_unit(b, fake_time)
    fill(a, 3, fake_time)
    fill(b, 5, fake_time)
    stores = [Store(a, readonly=True), Store(b, readonly=True)]
    yield [(s.unit["serial"] + ("-A" if i == 0 else "-B"), role, s.path, s.log, s.ix)
           for i, (s, role) in enumerate(zip(stores, ("primary", "mirror")))]
    for s in stores:
        s.close()
    clear_immutable(str(tmp_path))


def test_a_pair_verifies_every_event_of_both_chains(tmp_path, fake_time):
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time)
    fill(p, 4, fake_time)
    check = verify_unit(p)
    assert check.ok, check.findings
    events = [u["events"] for u in check.units]
    assert events[0] == events[1] > 8
    assert [u["verified"] for u in check.units] == events
    clear_immutable(str(tmp_path))


def test_chains_that_differ_are_named_at_their_first_difference(two_units):
    check = verify_chains(two_units)
    (ps, *_), (ms, *_) = two_units
    assert [u["verified"] for u in check.units] == [u["events"] for u in check.units]
    pn, mn = (u["events"] for u in check.units)
    assert mn > pn
    # The units' first events (unit_init) already differ: named once, then the length.
    assert [(f["unit"], f["seq"], f["detail"]) for f in check.findings] == [
        (ms, 1, f"event 1 differs between primary {ps} and mirror {ms}"),
        (ms, pn + 1, f"the mirror holds events the primary does not ({mn} against {pn})")]


def test_the_same_chain_on_both_sides_is_sound(two_units):
    primary, mirror = two_units
    check = verify_chains([mirror, mirror])   # the same chain twice: a prefix of itself
    assert check.ok and [u["verified"] for u in check.units] == [u["events"] for u in
                                                                   check.units]
    assert not verify_chains([primary]).findings
