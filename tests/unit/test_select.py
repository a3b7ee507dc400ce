"""The record index's path selection (admin/records.select, behind ls --path and export
--path): a glob with a literal directory at its head walks that subtree alone, and must give
exactly what matching every record's path gives, in serial order."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wormfs.admin import records
from wormfs.admin.records import Selection, literal_dir, select

NAMES = ["a", "b", "ab", "ba", "a.eml", "b.eml", "x[1]"]   # dirs: a, b, ab


@pytest.fixture
def tree(store):
    """Records at every depth of a small tree, an open file and an empty directory among
    them; names that a glob's ? and * can run across."""
    def mkdir(parent, name):
        return store.mkdir(parent, name.encode(), 0o755, None).ino

    def record(parent, name, seal=True):
        ino = store.create(parent, name.encode(), 0o644, None).ino
        store.write(ino, 0, name.encode())
        if seal:
            store.seal(ino)
    dirs = {"": 1}
    for path in ["a", "b", "a/a", "a/b", "a/a/b", "b/ab", "ab", "empty"]:
        parent, _, name = path.rpartition("/")
        dirs[path] = mkdir(dirs[parent], name)
    for d, ino in dirs.items():
        if d != "empty":
            for n in NAMES[3:]:
                record(ino, n)
    record(dirs["a"], "open.eml", seal=False)
    return store


def every_path(store, sel):
    """The reference: every live record, by serial, matched by path."""
    return [r.serial for r in select(store, Selection(first=sel.first, last=sel.last))
            if sel.matches_path(r.path)]


part = st.sampled_from(NAMES + ["*", "?", "a*", "*.eml", "[ab]", "a?", "**", ""])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(part, min_size=1, max_size=4), lead=st.booleans(),
       trail=st.booleans(), first=st.integers(1, 30), span=st.none() | st.integers(0, 30))
def test_a_subtree_walk_selects_what_matching_every_path_selects(tree, parts, lead, trail,
                                                                 first, span):
    glob = ("/" if lead else "") + "/".join(parts) + ("/" if trail else "")
    sel = Selection(path=glob, first=first, last=None if span is None else first + span)
    assert [r.serial for r in select(tree, sel)] == every_path(tree, sel), literal_dir(glob)


def test_a_literal_directory_is_walked_alone(tree, monkeypatch):
    seen = []
    real = tree.ix.list_dir
    monkeypatch.setattr(tree.ix, "list_dir", lambda txn, d, *a: seen.append(d) or real(
        txn, d, *a))
    got = [r.path for r in select(tree, Selection(path="/a/a/*"))]
    assert sorted(got) == sorted(f"/a/a/{d}{n}" for d in ("", "b/") for n in NAMES[3:])
    assert len(set(seen)) == 2                       # /a/a and /a/a/b, nothing else
    assert list(select(tree, Selection(path="/nowhere/*"))) == []
    assert list(select(tree, Selection(path="/ba/x*"))) == []   # a file on the way


def test_a_selection_too_big_for_the_subtree_walk_walks_the_serials(tree, monkeypatch):
    monkeypatch.setattr(records, "SUBTREE_MATCHES", 2)
    sel = Selection(path="/a/*")
    assert [r.serial for r in select(tree, sel)] == every_path(tree, sel)
    assert len(every_path(tree, sel)) > 2


@pytest.fixture
def dated(store, fake_time):
    """Records sealed over time: some in the same microsecond, some days apart."""
    import random
    rnd = random.Random(3)
    times = []
    for i in range(40):
        fake_time.advance(rnd.choice([0, 0, 1e-6, 1, 3600, 86400 * 3]))
        ino = store.create(1, b"r%02d" % i, 0o644, None).ino
        store.write(ino, 0, b"%d" % i)
        times.append(store.seal(ino).committed)
    return store, times


def by_time(store, sel):
    """The reference: every live record, by serial, matched by commit time."""
    return [r.serial for r in select(store, Selection(first=sel.first, last=sel.last))
            if sel.matches(r)]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.integers(-2, 41), b=st.integers(-2, 41), delta=st.sampled_from([-1, 0, 1]),
       first=st.integers(1, 45), span=st.none() | st.integers(0, 45),
       which=st.sampled_from(["since", "until", "both"]))
def test_a_commit_time_range_bisects_to_what_matching_every_record_gives(dated, a, b, delta,
                                                                          first, span,
                                                                          which):
    store, times = dated

    def at(i):
        return (times[0] - 10 if i < 0 else times[-1] + 10 if i >= len(times)
                else times[i] + delta)
    sel = Selection(first=first, last=None if span is None else first + span)
    if which in ("since", "both"):
        sel.since = at(a)
    if which in ("until", "both"):
        sel.until = at(b)
    assert [r.serial for r in select(store, sel)] == by_time(store, sel)


def test_a_log_whose_times_step_back_is_walked_not_bisected(dated, monkeypatch):
    store, times = dated
    sel = Selection(since=times[20], until=times[30])
    want = by_time(store, sel)
    assert want
    looked = []
    real = store.ix.serial_ino
    monkeypatch.setattr(store.ix, "serial_ino",
                        lambda txn, s: looked.append(s) or real(txn, s))
    assert [r.serial for r in select(store, sel)] == want
    assert len(looked) < 15                       # bisected: a few lookups
    monkeypatch.setattr(store.ix, "times_in_order", lambda txn: False)
    assert [r.serial for r in select(store, sel)] == want
