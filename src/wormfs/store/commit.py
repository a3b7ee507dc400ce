"""Group commit: seals that arrive together share one fdatasync.

Writers append under the store's lock and take a ticket (a count of appends). ``wait(ticket)``
returns once everything up to that ticket is durable. One waiter at a time runs the sync for
everyone appended so far; the others wait for it and usually find their ticket covered.
"""
import threading


class GroupCommit:
    def __init__(self, sync):
        self._sync = sync
        self._cond = threading.Condition()
        self._appended = 0
        self._durable = 0
        self._syncing = False
        self.syncs = 0  # how many fdatasyncs ran (for tests and benchmarks)

    def note_append(self):
        """Call under the store's write lock after an append; returns its ticket."""
        with self._cond:
            self._appended += 1
            return self._appended

    def wait(self, ticket):
        with self._cond:
            while self._durable < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target = self._appended
                self._cond.release()
                try:
                    self._sync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._durable = max(self._durable, target)
                self.syncs += 1
                self._cond.notify_all()
