"""Group commit: seals that arrive together share one fdatasync.

Writers append under the store's lock and take a ticket (a count of appends) naming the log
position they reached. ``wait(ticket)`` returns once everything up to that ticket is durable.
One waiter at a time runs the sync for everyone appended so far; the others wait for it and
usually find their ticket covered. ``durable_pos`` is the log position known durable: only
frames before it are shipped to the mirror, so the mirror never holds what a crash of the
primary could take back.
"""
import threading


class GroupCommit:
    def __init__(self, sync):
        self._sync = sync
        self._cond = threading.Condition()
        self._appended = 0
        self._durable = 0
        self._appended_pos = None
        self.durable_pos = None
        self._syncing = False
        self.syncs = 0  # how many fdatasyncs ran (for tests and benchmarks)

    def note_append(self, pos):
        """Call under the store's write lock after an append reaching log position ``pos``;
        returns its ticket."""
        with self._cond:
            self._appended += 1
            self._appended_pos = pos
            return self._appended

    def wait(self, ticket):
        with self._cond:
            while self._durable < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, target_pos = self._appended, self._appended_pos
                self._cond.release()
                try:
                    self._sync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if target > self._durable:
                    self._durable, self.durable_pos = target, target_pos
                self.syncs += 1
                self._cond.notify_all()
