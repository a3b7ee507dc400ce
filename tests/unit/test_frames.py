"""Compressed event frames (store/frames.py, docs/FORMAT.md "Frames"): events are stored as
raw DEFLATE with a preset dictionary that FORMAT.md quotes byte for byte, so a reader without
our code reads them back; what an event is and its hash in the chain are those of its JSON;
a compressed frame that does not inflate exactly is damage (found and repaired from the
peer), never a crash; and a log of plain event frames, as older versions wrote, reads and
rebuilds as before."""
import json
import os
import random
import re
import struct
import zlib

import blake3
import pytest
import xxhash

from tests.conftest import clear_immutable, dump_index, make_pair, make_unit
from wormfs.cli import main as cli
from wormfs.mirror import verification
from wormfs.store import frames as F
from wormfs.store.eventdict import DICTIONARY_1
from wormfs.store.store import Store

HEADER = struct.Struct("<2sBBIQII")


def put(st, name, data, parent=1):
    f = st.create(parent, name, 0o644, None)
    st.write(f.ino, 0, data)
    return st.seal(f.ino)


def fill(st, n=6):
    d = st.mkdir(1, b"mail", 0o755, None).ino
    rng = random.Random(5)
    for i in range(n):
        r = put(st, b"m%d.eml" % i, rng.randbytes(2560), parent=d)
        if i == 2:
            st.place_hold(r.ino, "case-7", "subpoena", None)
            st.set_retain_until(r.ino, "2040-01-01", None)


def dictionary_from_format_md(unit):
    """Dictionary 1 as the unit's own FORMAT.md gives it, checked against its stated hash."""
    with open(os.path.join(unit, "FORMAT.md"), encoding="utf-8") as f:
        doc = f.read()
    m = re.search(r"Dictionary 1 \(([\d,]+) bytes, BLAKE3-256\s+`([0-9a-f]{64})`\)"
                  r".*?```\n(.*?)\n\s*```", doc, re.S)
    size, digest, block = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
    d = "".join(line.strip() for line in block.splitlines()).encode("ascii")
    assert len(d) == size and blake3.blake3(d).hexdigest() == digest
    return d


def events_by_hand(unit, zdict):
    """Every event of the unit's log, read from the segment files with FORMAT.md alone:
    (frame type, stored payload length, JSON bytes)."""
    seg_dir = os.path.join(unit, "segments")
    out = []
    for name in sorted(os.listdir(seg_dir)):
        with open(os.path.join(seg_dir, name), "rb") as f:
            data = f.read()
        off = 48
        while off < len(data):
            magic, ftype, flags, plen, pxxh, _, _ = HEADER.unpack_from(data, off)
            assert magic == b"WF" and flags == 0
            klen = 32 if ftype in (1, 3) else 0
            payload = data[off + 24 + klen:off + 24 + klen + plen]
            assert xxhash.xxh3_64_intdigest(payload) == pxxh
            if ftype == 2:
                out.append((ftype, plen, payload))
            elif ftype == 4:
                assert payload[0] == 1
                out.append((ftype, plen,
                            zlib.decompressobj(-15, zdict=zdict).decompress(payload[1:])))
            off += 24 + klen + plen
    return out


def test_events_are_stored_compressed_and_read_back_from_format_md_alone(unit_path,
                                                                          fake_time):
    make_unit(unit_path, fake_time)
    with Store(unit_path, time_source=fake_time) as st:
        fill(st)
        ours = list(st.events())
    zdict = dictionary_from_format_md(unit_path)
    assert zdict == DICTIONARY_1
    got = events_by_hand(unit_path, zdict)
    assert [json.loads(raw) for _, _, raw in got] == ours
    prev = "0" * 64                      # the chain runs over the JSON, as before
    for _, _, raw in got:
        assert json.loads(raw)["prev"] == prev
        prev = blake3.blake3(raw).hexdigest()
    assert all(t == 4 for t, _, _ in got)
    seals = [(plen, len(raw)) for _, plen, raw in got if json.loads(raw)["type"] == "seal"]
    assert seals and all(plen < raw / 2.5 for plen, raw in seals)


def _zframe(body):
    return F.frame_header(F.T_ZEVENT, b"", len(body), xxhash.xxh3_64_intdigest(body)) + body


def _deflate(data, zdict=DICTIONARY_1):
    c = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    return c.compress(data) + c.flush()


EVENT = b'{"prev":"' + b"0" * 64 + b'","seq":1,"time_us":1,"type":"x"}'


@pytest.mark.parametrize("body,why", [
    (b"", "unknown dictionary"),
    (b"\x07" + _deflate(EVENT), "unknown dictionary"),
    (b"\x01" + _deflate(EVENT)[:-3], "not one whole"),
    (b"\x01" + _deflate(EVENT) + b"more", "not one whole"),
    (b"\x01" + b"\xff" * 40, "does not inflate"),
    (b"\x01" + _deflate(b" " * (F.MAX_ZEVENT + 10)), "inflates past"),
])
def test_a_compressed_frame_that_does_not_inflate_exactly_is_damage(body, why):
    """Checksums right (whoever wrote it computed them), contents not an event."""
    frame = _zframe(body)
    with pytest.raises(F.FrameError, match=why):
        F.read_frame(memoryview(frame), 0, len(frame))
    ftype, _, plen, pxxh, hl = F.parse_header(frame)
    with pytest.raises(F.FrameError, match=why):
        F.event_payload(ftype, frame[hl:hl + plen])


def test_what_is_written_plain_and_what_compressed():
    frame = F.encode_event(EVENT)
    assert frame[2] == F.T_ZEVENT
    assert F.read_frame(frame, 0, len(frame))[:3] == (F.T_EVENT, b"", EVENT)
    tiny = b'{"a":1}'                    # compression would not make it smaller
    assert F.encode_event(tiny)[2] == F.T_EVENT
    big = b'{"chunks":"' + b"0" * F.MAX_ZEVENT + b'"}'
    assert F.encode_event(big)[2] == F.T_EVENT


def _reseal_header(seg, off, body):
    """Write ``body`` as the payload of the frame at ``off`` with checksums made to match, as
    someone with the disk and our format would."""
    with open(seg, "r+b") as f:
        f.seek(off)
        head = bytearray(f.read(24))
        struct.pack_into("<Q", head, 8, xxhash.xxh3_64_intdigest(body))
        struct.pack_into("<I", head, 16, xxhash.xxh3_64_intdigest(bytes(head[:16])) & 0xFFFFFFFF)
        f.seek(off)
        f.write(bytes(head) + body)


def test_a_forged_compressed_event_with_matching_checksums_is_found_and_repaired(tmp_path,
                                                                                 fake_time):
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"), time_source=fake_time,
                     mirror_time_source=fake_time, segment_size=64 << 20)
    try:
        with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
            fill(st)
            st.log.roll()              # the forged frame lies in a finished segment
        seg = os.path.join(p, "segments", "0000000001.seg")
        from wormfs.store.hostfs import set_immutable
        set_immutable(seg, False)
        os.chmod(seg, 0o644)
        with open(seg, "rb") as f:
            data = f.read()
        off, n = 48, 0
        while True:               # the third compressed event
            _, ftype, _, plen, _, _, _ = HEADER.unpack_from(data, off)
            klen = 32 if ftype in (1, 3) else 0
            if ftype == 4:
                n += 1
                if n == 3:
                    break
            off += 24 + klen + plen
        _reseal_header(seg, off, b"\x01" + b"\xff" * (plen - 1))
        with Store(p, time_source=fake_time, mirror_time_source=fake_time) as st:
            rep = verification.run(st)
            assert not rep.ok
            assert any(f["unit"] == st.unit["serial"] and f.get("segment") == 1
                       and f.get("offset") == off for f in rep.findings), rep.findings
            fixed = verification.run(st, repair=True)
            assert fixed.repaired >= 1
            assert verification.run(st).ok
        with open(seg, "rb") as f:
            assert f.read() == data
    finally:
        clear_immutable(str(tmp_path))


def test_a_log_of_plain_event_frames_reads_and_rebuilds_as_before(unit_path, fake_time,
                                                                   monkeypatch):
    """A unit an older wormfs wrote (only type 2 event frames), then written to by this
    one: one chain across both kinds, verify clean, rebuild-index gives the same index."""
    plain = lambda payload: F.frame_header(   # noqa: E731 (the older writer)
        F.T_EVENT, b"", len(payload), xxhash.xxh3_64_intdigest(payload)) + payload
    with monkeypatch.context() as mp:
        mp.setattr(F, "encode_event", plain)
        make_unit(unit_path, fake_time, segment_size=300_000)
        with Store(unit_path, time_source=fake_time) as st:
            fill(st, 3)
    kinds = [t for t, _, _ in events_by_hand(unit_path, DICTIONARY_1)]
    assert set(kinds) == {2}
    with Store(unit_path, time_source=fake_time) as st:
        for i in range(3):
            put(st, b"new%d" % i, random.Random(i).randbytes(4000))
    kinds = [t for t, _, _ in events_by_hand(unit_path, DICTIONARY_1)]
    assert kinds[0] == 2 and kinds[-1] == 4
    from wormfs.store.maintenance import verify_log
    with Store(unit_path, time_source=fake_time) as st:
        verify_log(st.log)
    before = dump_index(unit_path)
    assert cli(["rebuild-index", unit_path]) == 0
    assert dump_index(unit_path) == before
