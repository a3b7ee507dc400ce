"""Requests that arrive together, carried out by one thread for all (flat combining).

Eight threads sealing at once each ran their seal themselves, and every one of them waited in
the group commit and then in the shipment to the mirror, where each round ended with a
notify_all: all the waiting threads woke, each took the interpreter's lock in turn, most went
back to sleep. perf put close to half of the daemon's CPU in those wake-ups and switches
(bench/RESULTS.md, "Eight writers"). Here a caller queues its request; if no thread is
working the queue, it becomes that thread and carries out everything queued so far in one
batch (the store makes a batch durable with one sync and one shipment). Everyone else sleeps
on a lock of its own and is woken exactly once: when its request is done, or to take the
queue over, the next batch, when the batch before ends with requests queued behind it.

One caller alone goes straight through: its batch is itself.
"""
import threading


class Request:
    """One caller's request: ``args`` in; ``result`` or ``error`` out once ``done``."""
    __slots__ = ("args", "done", "result", "error", "owner", "_wake")

    def __init__(self, args):
        self.args, self.done, self.result, self.error = args, False, None, None
        self.owner = threading.get_ident()
        self._wake = threading.Lock()
        self._wake.acquire()

    def finish(self, result=None, error=None):
        self.result, self.error, self.done = result, error, True


class Combiner:
    def __init__(self, run_batch):
        """``run_batch(requests)`` carries out a list of Requests, finishing each."""
        self._run_batch = run_batch
        self._lock = threading.Lock()
        self._queue = []
        self._running = False
        self._leader = None  # the thread running a batch
        self.batches = 0  # how many batches ran (for tests and benchmarks)

    def submit(self, *args):
        """Carry out a request with ``args``, in this thread or in the one working the
        queue; returns its result or raises its error."""
        req = Request(args)
        if self._leader == req.owner:
            # Queued behind the batch this thread is running, it would wait for itself.
            raise RuntimeError("a request submitted from inside a batch")
        with self._lock:
            self._queue.append(req)
            lead = not self._running
            self._running = True
        if not lead:
            req._wake.acquire()  # done, or handed the queue
        if not req.done:
            self._lead()
        if req.error is not None:
            raise req.error
        return req.result

    def _lead(self):
        """Run one batch: everything queued. Then wake the batch's callers, and hand the
        queue to the first request queued meanwhile (or leave it idle)."""
        with self._lock:
            batch, self._queue = self._queue, []
        me = self._leader = threading.get_ident()
        failure = None
        try:
            self._run_batch(batch)
        except BaseException as e:
            failure = e
            raise
        finally:
            self._leader = None
            self.batches += 1
            for r in batch:
                if not r.done:  # never left waiting for a batch that is over
                    r.finish(error=failure or RuntimeError("the request was not carried out"))
            with self._lock:
                nxt = self._queue[0] if self._queue else None
                self._running = nxt is not None
            for r in batch:
                if r.owner != me:
                    r._wake.release()
            if nxt is not None:
                nxt._wake.release()
