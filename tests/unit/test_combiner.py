"""store/combiner.py: requests that arrive together run as one batch in one thread; each
caller gets its own result or error, and nobody waits for a batch that is over."""
import threading
import time

import pytest

from wormfs.store.combiner import Combiner


def test_one_caller_alone_runs_its_own_batch():
    seen = []
    c = Combiner(lambda batch: [seen.append(threading.get_ident()) or r.finish(r.args[0] * 2)
                                for r in batch])
    assert c.submit(21) == 42 and seen == [threading.get_ident()] and c.batches == 1


def test_requests_that_arrive_together_share_a_batch_and_get_their_own_answers():
    sizes, gate = [], threading.Event()

    def run(batch):
        sizes.append(len(batch))
        if len(sizes) == 1:
            gate.wait(5)  # the first batch holds the queue while the others arrive
        for r in batch:
            if r.args[0] % 5 == 0:
                r.finish(error=ValueError(r.args[0]))
            else:
                r.finish(r.args[0] + 1000)
    c = Combiner(run)
    out = {}

    def call(i):
        try:
            out[i] = c.submit(i)
        except ValueError as e:
            out[i] = ("error", e.args[0])
    first = threading.Thread(target=call, args=(1,))
    first.start()
    time.sleep(0.05)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(2, 22)]
    for t in rest:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in [first] + rest:
        t.join(5)
        assert not t.is_alive()
    assert out == {i: ("error", i) if i % 5 == 0 else i + 1000 for i in range(1, 22)}
    assert sizes[0] == 1 and sum(sizes) == 21 and len(sizes) < 21


def test_a_failed_batch_fails_its_requests_and_the_queue_goes_on():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError("the disk")
        for r in batch:
            r.finish("ok")
    c = Combiner(run)
    with pytest.raises(OSError):
        c.submit(1)
    assert c.submit(2) == "ok"


def test_a_request_from_inside_a_batch_is_refused_not_a_deadlock():
    c = Combiner(None)
    c._run_batch = lambda batch: [r.finish(c.submit(0)) for r in batch]
    with pytest.raises(RuntimeError, match="inside a batch"):
        c.submit(1)
