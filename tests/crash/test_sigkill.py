"""Crash safety below FUSE: a process sealing records is SIGKILLed at random moments, many
times. After each kill the store reopens; every seal that returned is intact and verifiable, a
torn tail (if any) was cut, the index agrees with the segments, and the event chain holds."""
import os
import random
import signal
import subprocess
import sys
import time

import blake3

from wormfs.store.maintenance import rebuild_index, verify_log
from wormfs.store.store import Store

from ..conftest import dump_index, make_unit

KILLS = 25


def test_sigkill_while_sealing(unit_path):
    make_unit(unit_path, segment_size=2 << 20)
    rng = random.Random(17)
    sealed = {}
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here] + sys.path))
    for round_ in range(KILLS):
        child = subprocess.Popen([sys.executable, os.path.join(here, "sealer.py"), unit_path,
                                  str(round_), str(rng.choice([1, 3]))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(rng.uniform(0.3, 1.2))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert b"Traceback" not in err, err.decode()
        for line in out.decode().splitlines():
            if line.count(" ") == 2:   # a line cut by the kill is not a returned seal
                serial, path, digest = line.split()
                sealed[path] = (int(serial), digest)

        with Store(unit_path) as st:
            for path, (serial, digest) in sealed.items():
                rec = st.resolve(path)
                assert rec.sealed and rec.serial == serial
                assert rec.blake3 == digest
                data = st.read(rec.ino, 0, rec.size)
                assert blake3.blake3(data).hexdigest() == digest
            n_events, _ = verify_log(st.log, deep=(round_ % 5 == 0))
            assert n_events == st.journal.last_seq
    assert len(sealed) > KILLS   # the test did seal things between kills

    # The index that lived through all of it equals one rebuilt from the segments alone.
    live = dump_index(unit_path)
    os.rename(os.path.join(unit_path, "index"), os.path.join(unit_path, "index.live"))
    os.makedirs(os.path.join(unit_path, "index"))
    rebuild_index(unit_path)
    assert dump_index(unit_path) == live
