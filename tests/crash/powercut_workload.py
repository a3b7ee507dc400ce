"""Child process of the power-cut test: writes through a wormfs mount for ever, from several
threads, and after each call that returned appends what must survive to a journal on a disk
that is not cut (fsynced line by line):

    closed NAME BLAKE3      close() of a new file returned: NAME is a record with that digest
    intent NAME BLAKE3      about to write NAME with that content (so a sealed NAME is whole)
    retain NAME DATE        a retain-until extension returned
    hold NAME CASE          a legal hold returned

Small and large files, repeated content (dedup), retention changes and holds; the parent
cuts the power at a random moment (tests/crash/test_powercut.py)."""
import os
import random
import sys
import threading

import blake3


def main(mnt, journal, seed, threads):
    jf = open(journal, "a")
    lock = threading.Lock()

    def note(line):
        with lock:
            jf.write(line + "\n")
            jf.flush()
            os.fsync(jf.fileno())

    def worker(k):
        rng = random.Random(seed * 100 + k)
        i = 0
        done = []
        while True:
            i += 1
            name = f"p{seed}-{k}-{i}.eml"
            size = rng.choice([0, 1, 700, 5000, 70_000, 300_000, 2_500_000])
            data = bytes(size) if rng.random() < 0.2 else rng.randbytes(size)
            digest = blake3.blake3(data).hexdigest()
            note(f"intent {name} {digest}")
            try:
                with open(os.path.join(mnt, name), "wb") as f:
                    for off in range(0, size, 128 * 1024):
                        f.write(data[off:off + 128 * 1024])
            except OSError:
                return  # the mount is gone: the cut
            note(f"closed {name} {digest}")
            done.append(name)
            try:
                r = rng.random()
                if r < 0.15:
                    victim = rng.choice(done)
                    until = f"20{rng.randint(40, 60)}-01-01"
                    os.setxattr(os.path.join(mnt, victim), "user.worm.retain_until",
                                until.encode())
                    note(f"retain {victim} {until}")
                elif r < 0.25:
                    victim = rng.choice(done)
                    case = f"case-{rng.randint(1, 9)}"
                    os.setxattr(os.path.join(mnt, victim), f"user.worm.hold.{case}", b"cut")
                    note(f"hold {victim} {case}")
            except OSError as e:
                if e.errno in (107, 5, 2):  # ENOTCONN, EIO, ENOENT after the cut
                    return
                if e.errno != 1:            # EPERM: an extension that is no extension
                    raise

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
