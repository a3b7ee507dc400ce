"""A full disk under the store: clean ENOSPC, nothing lost, and the mount works again as soon
as there is space. The store lives on a small tmpfs that the test grows afterwards, as an
admin would grow or clean up a volume."""
import errno
import os
import subprocess

import pytest

from .conftest import Mount, tmpfs_volume


@pytest.fixture
def small_volume():
    with tmpfs_volume("24m") as (_, back, made):
        yield back, made


def fill(path):
    """Fill the disk under ``path`` to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def state(path):
    return os.getxattr(path, "user.worm.state").decode()


def test_full_disk_gives_enospc_and_loses_nothing(small_volume):
    back, made = small_volume
    m = Mount(back)
    made.append(m)
    m.mount()
    kept = os.urandom(100_000)
    with open(m.path("kept.bin"), "wb") as f:
        f.write(kept)

    with pytest.raises(OSError) as failed:
        with open(m.path("big.bin"), "wb") as f:
            for _ in range(40):
                f.write(os.urandom(1 << 20))
    assert failed.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as failed:
        with open(m.path("more.txt"), "w") as f:
            f.write("more")
    assert failed.value.errno == errno.ENOSPC

    # Holds, extensions and the audit of a refusal still work on a disk full to the last
    # byte (filled beside the store): the space reserve.
    fill(back / "filler")
    for i in range(64):   # enough events to need pages the full disk does not have
        os.setxattr(m.path("kept.bin"), f"user.worm.hold.case-{i}", b"inquiry " * 120)
    os.setxattr(m.path("kept.bin"), "user.worm.hold.case-9", b"inquiry on a full disk")
    os.setxattr(m.path("kept.bin"), "user.worm.retain_until", b"2040-01-01")
    with pytest.raises(OSError) as refused:
        os.unlink(m.path("kept.bin"))
    assert refused.value.errno == errno.EPERM
    assert "space reserve" in " ".join(m.status()["reasons"])

    # The mount is alive and the record intact.
    assert sorted(os.listdir(m.mnt)) == [".wormfs", "big.bin", "kept.bin"]
    with open(m.path("kept.bin"), "rb") as f:
        assert f.read() == kept
    assert state(m.path("kept.bin")) == "sealed"
    assert state(m.path("big.bin")) == "open"   # not sealed as if it were complete

    # Space comes back: new files work at once, no remount needed.
    os.unlink(back / "filler")
    subprocess.run(["mount", "-o", "remount,size=128m", str(back)], check=True)
    with open(m.path("more.txt"), "w") as f:
        f.write("more")
    assert state(m.path("more.txt")) == "sealed"
    assert os.getxattr(m.path("kept.bin"), "user.worm.hold.case-9")

    # The file whose writes failed is recovered (here at unmount), under its own name.
    m.umount()
    m.mount()
    assert not os.path.exists(m.path("big.bin"))
    (name,) = os.listdir(m.path(".wormfs", "recovered"))
    assert name.endswith("-big.bin")
    rec = m.events("recovery")
    assert [e["path"] for e in rec] == ["/big.bin"]
    assert os.path.exists(os.path.join(m.store, "reserve"))   # made again at the open
    assert not any("space reserve" in r for r in m.status()["reasons"])
    with open(m.path("kept.bin"), "rb") as f:
        assert f.read() == kept
