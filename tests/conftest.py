"""Shared fixtures: units in temporary directories, and an injectable clock.

``FakeTime`` replaces the system clocks *inside the test process only*; the product has no
way to select it (no flag, no environment variable)."""
import os
import uuid

import pytest

from wormfs.store.hostfs import set_immutable
from wormfs.store.index import Index
from wormfs.store.store import DEFAULT_SCRATCH_PATTERNS, Store, create_store
from wormfs.store.unit import write_unit
from wormfs.timeutil import US, parse_date


class FakeTime:
    def __init__(self, start="2026-01-15T09:00:00Z"):
        self.wall = parse_date(start)
        self.boot = 1_000 * US
        self.bid = "boot-1"
        self._boots = 1
        # A clock faked in one source only: the kernel's uptime file, or this process's
        # clocks (wall and boot) against the kernel's file times.
        self.uptime_skew = 0
        self.process_skew = 0
        # The true time of this fake world, as another machine's clock (an S3 bucket's Date)
        # shows it: real time passing moves it, setting this host's clock does not.
        self.true = self.wall
        self.server_skew = 0

    def wall_us(self):
        return self.wall

    def boot_us(self):
        return self.boot

    def boot_id(self):
        return self.bid

    def uptime_us(self):
        return self.boot + self.uptime_skew

    def kernel_wall_us(self, probe_path):
        return self.wall - self.process_skew

    def server_us(self, date_us):
        return self.true + self.server_skew

    def advance(self, seconds):
        """Real time passes: both clocks move."""
        self.wall += int(seconds * US)
        self.boot += int(seconds * US)
        self.true += int(seconds * US)

    def jump_wall(self, seconds):
        """Someone sets the system clock; no real time passes."""
        self.wall += int(seconds * US)

    def reboot(self, downtime_seconds):
        self._boots += 1
        self.bid = f"boot-{self._boots}"
        self.boot = 5 * US
        self.wall += int(downtime_seconds * US)
        self.true += int(downtime_seconds * US)


def flip_byte(path, offset, mask=0x40):
    """Damage one byte of a unit's file in place, as bit rot or a hand with a hex editor
    would: the immutable flag and read-only mode of a finished segment are lifted for it (the
    flag is left off, the mode restored)."""
    set_immutable(str(path), False)
    mode = os.stat(path).st_mode & 0o7777
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))
    os.chmod(path, mode)


def clear_immutable(root):
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".seg"):
                set_immutable(os.path.join(dirpath, f), False)


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def unit_path(tmp_path):
    path = str(tmp_path / "unit")
    yield path
    clear_immutable(str(tmp_path))


def make_unit(path, time_source=None, default_retention="6y", segment_size=128 << 20,
              admin_gid=None, mode="compliance"):
    create_store(path, role="primary", mode=mode, label="test", segment_size=segment_size,
                 settings={"scratch_patterns": DEFAULT_SCRATCH_PATTERNS, "scratch_ttl": "24h"},
                 init={"default_retention": default_retention, "admin_gid": admin_gid,
                       "time_source": time_source})
    return path


def make_pair(primary, mirror, time_source=None, mirror_time_source=None,
              segment_size=128 << 20, default_retention="6y", settings=None):
    """A primary unit and its mirror, as mkfs makes them."""
    log_uuid = str(uuid.uuid4())
    write_unit(mirror, role="mirror", mode="compliance", label="test", peer_serial="WU-P",
               peer_path=primary, serial="WU-M", log_uuid=log_uuid, segment_size=segment_size)
    create_store(primary, role="primary", mode="compliance", label="test",
                 segment_size=segment_size, peer_serial="WU-M", peer_path=mirror,
                 serial="WU-P", log_uuid=log_uuid,
                 settings=dict({"scratch_patterns": DEFAULT_SCRATCH_PATTERNS,
                                "scratch_ttl": "24h", "mirror_max_lag": "24h"},
                               **(settings or {})),
                 init={"default_retention": default_retention, "admin_gid": None,
                       "time_source": time_source, "mirror_time_source": mirror_time_source})
    return primary, mirror


@pytest.fixture
def store(unit_path, fake_time):
    make_unit(unit_path, fake_time)
    st = Store(unit_path, time_source=fake_time)
    yield st
    st.close()


def staged_files(store):
    """Names in the unit's staging/ that hold a file's bytes (not the empty spares)."""
    return sorted(n for n in os.listdir(os.path.join(store.path, "staging"))
                  if not n.startswith("spare-"))


def dump_index(path):
    """Every key and value of a unit's index, for comparing a live index with a rebuilt one."""
    ix = Index(os.path.join(path, "index"), readonly=True)
    try:
        return ix.dump()
    finally:
        ix.close()
