"""Segment files and the self-checking frames in them (docs/FORMAT.md, "Segments").

A segment is a 48-byte header followed by frames, back to back:

    segment header (48 bytes, little-endian)
      0   8  magic b"WORMFSSG"
      8   2  format version (1)
      10  2  header length (48)
      12  4  reserved, zero
      16  8  segment number
      24  16 unit id (the 16 bytes of the unit's UUID)
      40  8  xxh3-64 of bytes 0..40

    frame = fixed header (24 bytes) | key (type-specific length) | payload
      0   2  magic b"WF"
      2   1  type: 1 chunk, 2 event, 3 disposed chunk
      3   1  flags, zero (reserved: compression)
      4   4  payload length
      8   8  xxh3-64 of the payload (seed 0)
      16  4  low 32 bits of xxh3-64 of (bytes 0..16 of this header || key)
      20  4  reserved, zero

    chunk frame: key = 32-byte BLAKE3-256 of the payload; payload = the chunk's bytes
    event frame: no key; payload = one event as canonical JSON (events.py)
    disposed chunk frame: what ``wormfs dispose`` leaves of a chunk frame it destroyed, in
                 place and at the same length, so that every offset in the log stays
                 valid: key = the chunk's id, payload = as many zero bytes (a hole in the
                 file where the host can punch one), checksum = xxh3 of those zeros

The payload checksum of a chunk frame is exactly the chunker's xxh3-64 of the chunk, so it is
never computed twice. xxh3 catches torn writes and bit rot on every read; BLAKE3 is identity,
checked at seal and by verify/scrub.
"""
import struct

import xxhash

from ..errors import IntegrityError

SEG_MAGIC = b"WORMFSSG"
SEG_VERSION = 1
SEG_HEADER = struct.Struct("<8sHHIQ16s")  # 40 bytes, then u64 xxh3
SEG_HEADER_LEN = 48

FRAME_MAGIC = b"WF"
FIXED = struct.Struct("<2sBBIQII")
FIXED_LEN = FIXED.size  # 24
T_CHUNK = 1
T_EVENT = 2
T_DISPOSED = 3
KEY_LEN = {T_CHUNK: 32, T_EVENT: 0, T_DISPOSED: 32}
MAX_PAYLOAD = (1 << 32) - 1

_xxh3 = xxhash.xxh3_64_intdigest


def encode_segment_header(segno, unit_uuid_bytes):
    head = SEG_HEADER.pack(SEG_MAGIC, SEG_VERSION, SEG_HEADER_LEN, 0, segno, unit_uuid_bytes)
    return head + struct.pack("<Q", _xxh3(head))


def decode_segment_header(buf):
    """Return (segno, unit_uuid_bytes) or raise IntegrityError."""
    if len(buf) < SEG_HEADER_LEN:
        raise IntegrityError("segment header truncated")
    head = bytes(buf[:40])
    magic, version, hlen, _, segno, unit = SEG_HEADER.unpack(head)
    (check,) = struct.unpack_from("<Q", buf, 40)
    if magic != SEG_MAGIC or check != _xxh3(head):
        raise IntegrityError("bad segment header")
    if version != SEG_VERSION or hlen != SEG_HEADER_LEN:
        raise IntegrityError(f"unsupported segment format version {version}")
    return segno, unit


def frame_header(ftype, key, payload_len, payload_xxh3):
    """The fixed header plus key of a frame whose payload has the given length and xxh3."""
    head16 = struct.pack("<2sBBIQ", FRAME_MAGIC, ftype, 0, payload_len, payload_xxh3)
    check = _xxh3(head16 + key) & 0xFFFFFFFF
    return head16 + struct.pack("<II", check, 0) + key


def disposed_header(chunk_id, length):
    """The header of the disposed-chunk frame that replaces a chunk frame of ``length``."""
    return frame_header(T_DISPOSED, chunk_id, length, _xxh3(bytes(length)))


def encode_event(payload):
    return frame_header(T_EVENT, b"", len(payload), _xxh3(payload)) + payload


class FrameError(IntegrityError):
    """A frame is damaged or incomplete. ``torn`` if it runs past the end of the data."""

    def __init__(self, msg, torn=False):
        super().__init__(msg)
        self.torn = torn


def parse_header(buf, avail_after=None):
    """Check a frame's fixed header and key at the start of ``buf``.

    Returns (type, key, payload_len, payload_xxh3, header_len). ``avail_after`` is how many
    bytes exist from this position to the end of the file, to tell torn frames from damage."""
    if len(buf) < FIXED_LEN:
        raise FrameError("frame header truncated", torn=True)
    magic, ftype, flags, plen, pxxh, check, _ = FIXED.unpack_from(buf, 0)
    klen = KEY_LEN.get(ftype)
    if magic != FRAME_MAGIC or klen is None:
        raise FrameError("bad frame magic or type")
    if len(buf) < FIXED_LEN + klen:
        raise FrameError("frame key truncated", torn=True)
    key = bytes(buf[FIXED_LEN:FIXED_LEN + klen])
    if _xxh3(bytes(buf[:16]) + key) & 0xFFFFFFFF != check:
        raise FrameError("frame header checksum mismatch")
    if flags != 0:
        raise FrameError(f"unsupported frame flags {flags:#x}")
    total = FIXED_LEN + klen + plen
    if avail_after is not None and total > avail_after:
        raise FrameError("frame runs past end of segment", torn=True)
    return ftype, key, plen, pxxh, FIXED_LEN + klen


def check_payload(payload, pxxh):
    if _xxh3(payload) != pxxh:
        raise FrameError("frame payload checksum mismatch")


HEADER_PEEK = FIXED_LEN + 32  # the longest fixed header plus key
CHUNK_HEAD_LEN = FIXED_LEN + KEY_LEN[T_CHUNK]  # a chunk frame's fixed header and key


def check_chunk(head, payload, chunk_id, length):
    """Check a chunk frame read from the log against the chunk the index names: its header
    and key (``head``, or a buffer starting with them), then its payload's checksum.
    FrameError if it is not exactly that chunk."""
    ftype, key, plen, pxxh, _ = parse_header(head)
    if ftype != T_CHUNK or key != chunk_id or plen != length:
        raise FrameError("frame is not the expected chunk")
    check_payload(payload, pxxh)


def read_frame(buf, off, end):
    """Check the frame at ``off`` of ``buf``, whose data ends at ``end``: returns (type, key,
    payload, frame length), ``payload`` a slice of ``buf``. FrameError if it is damaged or
    runs past ``end`` (``torn``)."""
    ftype, key, plen, pxxh, hl = parse_header(buf[off:off + HEADER_PEEK], end - off)
    payload = buf[off + hl:off + hl + plen]
    check_payload(payload, pxxh)
    return ftype, key, payload, hl + plen
