"""Child process of the power-cut test: writes through a wormfs mount for ever, from several
threads, and after each call that returned appends what must survive to a journal on a disk
that is not cut (fsynced line by line):

    closed NAME BLAKE3      close() of a new file returned: NAME is a record with that digest
    intent NAME BLAKE3      about to write NAME with that content (so a sealed NAME is whole)
    retain NAME DATE        a retain-until extension returned
    hold NAME CASE          a legal hold returned
    aged NAME EPOCH         NAME (under short/, retained for seconds) was closed at EPOCH
    unlinking NAME -        about to unlink the expired record NAME (so it may be gone)
    deleted NAME -          unlink of an expired record returned: NAME is gone for good
    disposing - EPOCH       about to run ``wormfs dispose``, which deletes what has expired

Small and large files, repeated content (dedup), retention changes and holds, deletions of
expired records and disposal; the parent cuts the power at a random moment
(tests/crash/test_powercut.py)."""
import os
import random
import subprocess
import sys
import threading
import time

# An expired record is deleted only well after its retention ends, so that a mirror whose
# clock restarted a little behind the primary's still agrees it has expired.
DELETE_AFTER_S = 60

import blake3

# What a call gets when the daemon dies under it (the cut): ENOTCONN, EIO, ENOENT, and
# ECONNABORTED for a request the kernel had already sent.
CUT_ERRNOS = (107, 5, 2, 103)


def main(mnt, journal, seed, threads, store):
    aged, deleted = [], set()
    for line in open(journal).read().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "aged":
            aged.append((float(parts[2]), parts[1]))
        elif len(parts) == 3 and parts[0] == "deleted":
            deleted.add(parts[1])
    due = [n for t, n in aged if t < time.time() - DELETE_AFTER_S and n not in deleted]
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
                if e.errno in CUT_ERRNOS:
                    return
                if e.errno != 1:            # EPERM: an extension that is no extension
                    raise

    def reaper():
        """Short-lived records: write some, delete those long expired, now and then
        dispose."""
        rng = random.Random(seed * 100 + 99)
        try:
            os.makedirs(os.path.join(mnt, "short"), exist_ok=True)
            os.setxattr(os.path.join(mnt, "short"), "user.worm.retention", b"2s")
            for i in range(1, 4):
                name = f"short/s{seed}-{i}.eml"
                data = rng.randbytes(rng.choice([100, 9000, 200_000]))
                digest = blake3.blake3(data).hexdigest()
                note(f"intent {name} {digest}")
                with open(os.path.join(mnt, name), "wb") as f:
                    f.write(data)
                note(f"closed {name} {digest}")
                note(f"aged {name} {time.time():.3f}")
            for name in due:
                try:
                    os.stat(os.path.join(mnt, name))
                except FileNotFoundError:
                    note(f"deleted {name} -")   # an unlink a cut interrupted did happen
                    continue
                # Any other error (ENOTCONN: the daemon is already dead, the cut) says
                # nothing about the file, and os.path.exists() would have called it gone.
                note(f"unlinking {name} -")
                try:
                    os.unlink(os.path.join(mnt, name))
                except PermissionError:
                    # Not expired yet by the compliance clock: after a reboot (every cut
                    # is one) it resumes where it stopped and does not count the downtime
                    # that time.time() does. A later cut tries again.
                    continue
                note(f"deleted {name} -")
            if due and rng.random() < 0.5:
                note(f"disposing - {time.time():.3f}")
                subprocess.run([sys.executable, "-m", "wormfs", "dispose", store],
                               capture_output=True, timeout=120)
        except OSError as e:
            if e.errno not in CUT_ERRNOS:
                raise

    errors = os.open(journal + ".errors", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def guarded(fn, *args):
        """An unexpected error goes to JOURNAL.errors in one write (a traceback printed to
        stderr may be cut short by the kill that follows)."""
        try:
            fn(*args)
        except BaseException as e:
            os.write(errors, f"{fn.__name__}{args}: {type(e).__name__}: {e}\n".encode())

    ts = [threading.Thread(target=guarded, args=(worker, k), daemon=True)
          for k in range(threads)]
    ts.append(threading.Thread(target=guarded, args=(reaper,), daemon=True))
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
