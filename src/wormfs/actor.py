"""Who asked: the process behind a request, as recorded in every event."""
import functools
import os
import pwd
import time
from dataclasses import dataclass, field


@functools.lru_cache(maxsize=1024)
def _user_name(uid):
    # Every event names its user; reading /etc/passwd per event cost ~0.2 ms. A renamed
    # account shows its old name until the daemon restarts (the uid is recorded beside it).
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


ACTOR_TTL = 1.0
_recent = {}  # (uid, gid, pid) -> (monotonic time, Actor)


@dataclass(frozen=True)
class Actor:
    uid: int
    gid: int
    pid: int = 0
    program: str = ""
    groups: tuple = field(default=(), compare=False)

    @property
    def user(self):
        return _user_name(self.uid)

    def as_dict(self):
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "program": self.program,
                "user": self.user}

    @classmethod
    def from_pid(cls, uid, gid, pid):
        """Describe a process by pid (from /proc), as the FUSE layer sees its callers.
        Remembered for a second: a program writing many files asks many times, and reading
        /proc twice per request cost more than the rest of a small write."""
        key = (uid, gid, pid)
        now = time.monotonic()
        hit = _recent.get(key)
        if hit is not None and now - hit[0] < ACTOR_TTL:
            return hit[1]
        actor = cls._read_proc(uid, gid, pid)
        if len(_recent) >= 4096:
            _recent.clear()
        _recent[key] = (now, actor)
        return actor

    @classmethod
    def _read_proc(cls, uid, gid, pid):
        program, groups = "", ()
        try:
            with open(f"/proc/{pid}/comm") as f:
                program = f.read().strip()
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        groups = tuple(int(g) for g in line.split()[1:])
                        break
        except OSError:
            pass
        return cls(uid, gid, pid, program, groups)

    @classmethod
    def current(cls):
        """This process (the CLI acting on a store directly)."""
        try:
            with open("/proc/self/comm") as f:
                program = f.read().strip()
        except OSError:
            program = "wormfs"
        return cls(os.getuid(), os.getgid(), os.getpid(), program, tuple(os.getgroups()))
