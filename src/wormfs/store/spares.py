"""Empty staging files kept for the next create.

Making a new file costs this unit's host file system an inode allocation: on the ext4 disk of
our benchmark host that is about 400 us, most of a 4 KiB file's raw create+write+fsync
(bench/RESULTS.md). A seal leaves a staging file it no longer needs; instead of unlinking it,
the store truncates it and keeps it, open, under a spare name (``staging/spare-N``). The next
create renames it to ``staging/<ino>``, which costs a rename (about 40 us there) and no open.

Nothing here is part of the unit's meaning: a spare holds no bytes, no index entry points at
it, and any number of them may be lost or left behind by a crash. A writable open adopts what
it finds (empty again, with O_NOFOLLOW so a link planted in staging/ is never followed, and
only a plain file with no other name is emptied) along
with staged files no unsealed inode owns (a seal or a removal that ended between its commit
and its unlink).
"""
import os
import stat
import threading
import uuid

from .hostfs import unlink_quiet

PREFIX = "spare-"
KEEP = 16  # open spares at most: enough for a burst of creates, few descriptors


class Spares:
    def __init__(self, staging, keep=KEEP):
        self.staging = staging
        self.keep = keep
        self._free = []  # (name, fd)
        self._next = 0
        self._lock = threading.Lock()

    def adopt(self, owned):
        """At a writable open: take every spare and every staged file whose name is not in
        ``owned`` (the inode numbers of unsealed files, as str); those beyond ``keep`` go."""
        names = sorted(os.listdir(self.staging))
        for name in names:  # first, so that a new spare name never lands on an old one
            if _is_spare(name):
                self._next = max(self._next, int(name[len(PREFIX):]) + 1)
        for name in names:
            if name in owned or not (name.isdigit() or _is_spare(name)):
                continue  # an unsealed file's bytes, or not ours to judge
            path = os.path.join(self.staging, name)
            if len(self._free) >= self.keep:
                _drop(path)
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                _drop(path)  # a link, a directory, ...: only the name goes
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    # A device or a fifo, or a file with another name elsewhere (a hard
                    # link put here): never emptied, only this name removed.
                    raise OSError("not a staging file")
                os.ftruncate(fd, 0)
                if name.isdigit():
                    spare = self._new_name()
                    os.rename(path, os.path.join(self.staging, spare))
                    name = spare
            except OSError:
                # Not usable as a spare: a failure here must not fail the store's open.
                os.close(fd)
                _drop(path)
                continue
            self._free.append((name, fd))

    def take(self, path):
        """An open, empty file now at ``path`` (replacing whatever was there), or None when
        no spare is left (or the one taken was tampered with: the caller makes a new one)."""
        with self._lock:
            if not self._free:
                return None
            name, fd = self._free.pop()
        try:
            os.rename(os.path.join(self.staging, name), path)
            # Empty again, and still the file the name now points at: bytes or a link put in
            # staging/ behind the store's back never become part of a new file.
            os.ftruncate(fd, 0)
            if os.lstat(path).st_ino != os.fstat(fd).st_ino:
                raise OSError("not the spare any more")
        except OSError:
            os.close(fd)
            return None
        return fd

    def give(self, fd, path):
        """The store is done with the staged file at ``path`` (open as ``fd``): keep it empty
        as a spare, or close and remove it when enough are kept. Never raises: a file that
        cannot be kept is just removed."""
        with self._lock:
            full = len(self._free) >= self.keep
            name = None if full else self._new_name()
        if name is not None:
            try:
                os.ftruncate(fd, 0)
                os.rename(path, os.path.join(self.staging, name))
            except OSError:
                pass
            else:
                with self._lock:
                    self._free.append((name, fd))
                return
        os.close(fd)
        unlink_quiet(path)

    def close(self):
        with self._lock:
            free, self._free = self._free, []
        for _, fd in free:
            os.close(fd)

    def _new_name(self):
        # Under _lock (or before the store is shared): names never repeat in a process.
        n = self._next
        self._next += 1
        return f"{PREFIX}{n}"


def _drop(path):
    """Remove a name found in staging/ at open. What cannot be removed (a directory, say) is
    renamed out of the way, to a name that is not an inode number: a create of that inode
    would otherwise fail for ever. The store's open never fails for it."""
    try:
        unlink_quiet(path)
    except OSError:
        try:
            os.rename(path, f"{path}.not-ours-{uuid.uuid4().hex[:8]}")
        except OSError:
            pass


def _is_spare(name):
    return name.startswith(PREFIX) and name[len(PREFIX):].isdigit()
