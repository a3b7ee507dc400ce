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
      2   1  type: 1 chunk, 2 event, 3 disposed chunk, 4 compressed event
      3   1  flags, zero (reserved)
      4   4  payload length
      8   8  xxh3-64 of the payload (seed 0)
      16  4  low 32 bits of xxh3-64 of (bytes 0..16 of this header || key)
      20  4  reserved, zero

    chunk frame: key = 32-byte BLAKE3-256 of the payload; payload = the chunk's bytes
    event frame: no key; payload = one event as canonical JSON (events.py)
    compressed event frame: no key; payload = a dictionary id (1 byte) and the event's
                 canonical JSON as raw DEFLATE (RFC 1951) with that preset dictionary
                 (eventdict.py). What the event is, and its hash in the chain, are those of
                 its JSON: compression is how it is stored, nothing else. read_frame hands
                 it out as an event frame, its payload the JSON.
    disposed chunk frame: what ``wormfs dispose`` leaves of a chunk frame it destroyed, in
                 place and at the same length, so that every offset in the log stays
                 valid: key = the chunk's id, payload = as many zero bytes (a hole in the
                 file where the host can punch one), checksum = xxh3 of those zeros

The payload checksum of a chunk frame is exactly the chunker's xxh3-64 of the chunk, so it is
never computed twice. xxh3 catches torn writes and bit rot on every read; BLAKE3 is identity,
checked at seal and by verify/scrub.
"""
import struct
import zlib

import xxhash

from ..errors import IntegrityError
from .eventdict import DICTIONARIES

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
T_ZEVENT = 4
KEY_LEN = {T_CHUNK: 32, T_EVENT: 0, T_DISPOSED: 32, T_ZEVENT: 0}
MAX_PAYLOAD = (1 << 32) - 1
ZDICT = 1          # the dictionary new compressed events use
# A compressor with the dictionary already loaded, copied for each event: loading it costs
# more than compressing an event. A 4 KiB window (it holds the dictionary and reaches back
# over an event) and small hash tables make the copy cheap (~100k instructions an event
# with the compression, against ~220k for a fresh full-size compressor) and compress as
# well. Any raw-DEFLATE reader inflates it (FORMAT.md's example uses a 32 KiB window).
_PRIMED = zlib.compressobj(6, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY,
                           DICTIONARIES[ZDICT])
_ZHEAD = bytes((ZDICT,))   # a compressed event's payload starts with its dictionary's id
# Only events up to this size are compressed (the small ones of every record, where the
# bytes count); a bigger one (the seal of a file of many gigabytes lists a chunk every 64 KiB)
# is written plain. So a compressed frame never inflates past it, and a forged one cannot
# make a reader inflate gigabytes.
MAX_ZEVENT = 1 << 20

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
    """The frame of one event (its canonical JSON): compressed (type 4) when that is
    smaller, as it is for every event but the tiniest, and the event is at most
    MAX_ZEVENT bytes."""
    if len(payload) <= MAX_ZEVENT:
        c = _PRIMED.copy()
        body = _ZHEAD + c.compress(payload) + c.flush()
        if len(body) < len(payload):
            return frame_header(T_ZEVENT, b"", len(body), _xxh3(body)) + body
    return frame_header(T_EVENT, b"", len(payload), _xxh3(payload)) + payload


def inflate_event(body):
    """The JSON of a compressed event frame's (checked) payload. FrameError if it is not
    one: an unknown dictionary, a DEFLATE stream that is broken, ends early, has bytes
    after its end, or inflates past MAX_ZEVENT. A checksum that matches such a payload was
    computed by whoever wrote it that way: it is damage all the same."""
    zdict = DICTIONARIES.get(body[0]) if len(body) else None
    if zdict is None:
        raise FrameError("compressed event frame with an unknown dictionary")
    d = zlib.decompressobj(-15, zdict=zdict)
    try:
        out = d.decompress(body[1:], MAX_ZEVENT + 1)   # a slice of a map or a view
    except zlib.error as e:
        raise FrameError(f"compressed event frame does not inflate: {e}") from None
    if len(out) > MAX_ZEVENT:
        raise FrameError(f"compressed event frame inflates past {MAX_ZEVENT} bytes")
    if not d.eof or d.unused_data or d.unconsumed_tail:
        raise FrameError("compressed event frame is not one whole DEFLATE stream")
    return out


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
    runs past ``end`` (``torn``). A compressed event comes out as an event frame
    (T_EVENT) with its JSON as the payload (bytes, inflated)."""
    ftype, key, plen, pxxh, hl = parse_header(buf[off:off + HEADER_PEEK], end - off)
    payload = buf[off + hl:off + hl + plen]
    check_payload(payload, pxxh)
    if ftype == T_ZEVENT:
        return T_EVENT, key, inflate_event(payload), hl + plen
    return ftype, key, payload, hl + plen


def event_payload(ftype, payload):
    """The JSON of an event frame's checked payload, for a reader that parsed the header
    itself; FrameError if the frame is not an event."""
    if ftype == T_EVENT:
        return payload
    if ftype == T_ZEVENT:
        return inflate_event(payload)
    raise FrameError("the frame there is not an event")
