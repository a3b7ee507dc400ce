"""Chunker benchmark: wormfs's FastCDC vs pyfastcdc, same parameters, same buffer, same run.

    python bench/chunker.py [--size-mib 1024] [--rounds 5]

Prints GB/s for cut points only (ours vs pyfastcdc, median of interleaved rounds, and the
ratio), then chunk + BLAKE3 + xxh3 end to end through the streaming driver fed 1 MiB buffers
(as FUSE delivers them) vs pyfastcdc + blake3 + xxh3 on the whole buffer. Not run by CI.
"""
import argparse
import os
import statistics
import time

import blake3
import pyfastcdc
import xxhash

from wormfs import _chunker

MIN, AVG, MAX = 16 * 1024, 64 * 1024, 256 * 1024


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ours_cut(buf, params):
    _chunker.cut_points(buf, params)


def theirs_cut(buf, fc):
    for _ in fc.cut_buf(buf):
        pass


def ours_full(buf, params, feed=1 << 20):
    s = _chunker.StreamChunker(params)
    mv = memoryview(buf)
    for off in range(0, len(buf), feed):
        s.feed(mv[off:off + feed])
    s.finish()


def theirs_full(buf, fc):
    mv = memoryview(buf)
    for ch in fc.cut_buf(buf):
        piece = mv[ch.offset:ch.offset + ch.length]
        blake3.blake3(piece).digest()
        xxhash.xxh3_64_intdigest(piece)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    buf = os.urandom(args.size_mib << 20)
    gb = len(buf) / 1e9
    params = _chunker.Params(MIN, AVG, MAX)
    fc = pyfastcdc.FastCDC(AVG, min_size=MIN, max_size=MAX)
    assert _chunker.cut_points(buf[: 64 << 20], params) == [
        c.offset + c.length for c in fc.cut_buf(buf[: 64 << 20])
    ], "cut points differ from pyfastcdc"

    rows = [("cut points", ours_cut, params, theirs_cut, fc),
            ("chunk+blake3+xxh3", ours_full, params, theirs_full, fc)]
    print(f"buffer {args.size_mib} MiB random, min/avg/max {MIN}/{AVG}/{MAX}, "
          f"{args.rounds} interleaved rounds, median")
    for name, fo, po, ft, pt in rows:
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(gb / timed(lambda: fo(buf, po)))
            theirs.append(gb / timed(lambda: ft(buf, pt)))
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"{name:20s} wormfs {o:6.2f} GB/s   pyfastcdc {t:6.2f} GB/s   ratio {o / t:5.2f}x")


if __name__ == "__main__":
    main()
