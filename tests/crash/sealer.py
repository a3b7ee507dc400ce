"""Child process for the crash tests: seals records for ever and, after each seal returns,
prints 'serial path blake3' (so the parent knows what must survive). Killed with SIGKILL."""
import random
import sys

import blake3

from wormfs.actor import Actor
from wormfs.store.store import Store


def main(path, seed, threads):
    import threading
    st = Store(path)
    actor = Actor(0, 0, 0, "sealer")
    out_lock = threading.Lock()

    def worker(k):
        rng = random.Random(seed * 100 + k)
        i = 0
        while True:
            i += 1
            name = f"w{seed}-{k}-{i}".encode()
            size = rng.choice([0, 1, 100, 5000, 70_000, 300_000, 1_200_000])
            data = rng.randbytes(size)
            if rng.random() < 0.3:   # some repeated content, to exercise dedup
                data = bytes(size)
            f = st.create(1, name, 0o644, actor)
            for off in range(0, size, 256 * 1024):
                st.write(f.ino, off, data[off:off + 256 * 1024])
            r = st.seal(f.ino, actor)
            with out_lock:
                sys.stdout.write(f"{r.serial} /{name.decode()} {blake3.blake3(data).hexdigest()}\n")
                sys.stdout.flush()

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
