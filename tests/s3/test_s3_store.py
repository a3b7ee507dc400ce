"""The S3 unit below the FUSE layer, with an injectable clock inside this process (the object
store keeps its own real clock): disposal with an S3 duplicate, and the shipping cache lost
and rebuilt from the bucket."""
import os
import random
import shutil
import time

import pytest

from tests.conftest import FakeTime, clear_immutable
from wormfs.mirror import verification
from wormfs.mirror.s3bucket import Bucket
from wormfs.mirror.s3state import S3State
from wormfs.mirror.s3target import cache_path, create_unit
from wormfs.store import disposal
from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, Store, create_store
from wormfs.timeutil import US, format_us

DAY = 86400


@pytest.fixture
def s3_store(tmp_path, s3_url):
    clock = FakeTime(start=format_us(int(time.time() * US)))
    path = str(tmp_path / "p")
    log_uuid = "6b3c2a54-3a0e-4b8e-9d51-4f0c8b1f0a11"
    create_unit(s3_url, None, dict(role="mirror", mode="compliance", peer_serial="WU-P",
                                   peer_path=path, label="t", segment_size=1 << 20,
                                   chunking=None, same_device=False, no_mirror=False,
                                   serial="WU-M", log_uuid=log_uuid))
    create_store(path, role="primary", mode="compliance", label="t", serial="WU-P",
                 peer_serial="WU-M", peer_path=s3_url, log_uuid=log_uuid,
                 segment_size=1 << 20,
                 settings={"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": "24h",
                           "mirror_max_lag": "24h"},
                 init={"default_retention": "1d", "admin_gid": None, "time_source": clock,
                       "mirror_time_source": clock})
    yield path, clock, s3_url
    clear_immutable(str(tmp_path))


def put(st, name, data):
    ino = st.create(1, name, 0o644, None)["ino"]
    st.write(ino, 0, data)
    return st.seal(ino)


def test_disposal_with_an_s3_duplicate_leaves_both_sound(s3_store):
    path, clock, url = s3_store
    rnd = random.Random(5)
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        gone = put(st, b"gone.eml", rnd.randbytes(600_000))
        put(st, b"kept.eml", rnd.randbytes(300_000))
        st.set_retain_until(st.lookup(1, b"kept.eml")["ino"], "2040-01-01", None)
        st.mirror_poll()
        clock.advance(2 * DAY)
        cert = disposal.run(st, None)
        assert [r["serial"] for r in cert["records"]] == [gone["serial"]]
        st.mirror_poll()
        assert st.mirror_state()[0] == "synced"
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    # The bucket cannot destroy before the locks end: its objects still hold the chunks, and
    # a unit read back from it drops them as the replay does.
    state = S3State(os.path.join(cache_path(path), "s3state.db"), readonly=True)
    try:
        assert all(o.retain_until > time.time() * US for o in state.live())
    finally:
        state.close()


def test_a_lost_shipping_cache_is_rebuilt_from_the_bucket(s3_store):
    path, clock, url = s3_store
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        for i in range(5):
            put(st, b"r%d" % i, os.urandom(300_000 + i))
        st.mirror_poll()
    clear_immutable(cache_path(path))
    shutil.rmtree(cache_path(path))
    with Store(path, time_source=clock, mirror_time_source=clock) as st:
        assert st.mirror_state()[0] == "synced"
        put(st, b"after", b"one more\n")
        st.mirror_poll()
        assert st.mirror.acked_seq == st._last_seq
        rep = verification.run(st, deep=True)
        assert rep.ok, rep.findings
    listed = [rel for rel, _ in Bucket(url).list()]
    assert any(r.startswith("seg/") for r in listed)
