"""LazyFS (../shared/vendor/lazyfs, github.com/dsrhaslab/lazyfs): a FUSE file system with its
own page cache that drops everything not fsynced on ``lazyfs::clear-cache``. Built once per
machine by the vendor's build-lazyfs.sh (no network)."""
import os
import subprocess
import time

from tests.external.pjdfstest import BUILD_ROOT, VENDOR

OUT = os.path.join(BUILD_ROOT, "lazyfs")


def build():
    binary = os.path.join(OUT, "lazyfs", "build", "lazyfs")
    if not os.path.exists(binary):
        r = subprocess.run(["bash", os.path.join(VENDOR, "build-lazyfs.sh"), OUT],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(binary):
            raise RuntimeError(f"building LazyFS failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return binary


def _mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


FUSECTL = "/sys/fs/fuse/connections"


def abort_fuse(path):
    """Abort the FUSE connection mounted on ``path`` (its requests fail at once, ENOTCONN),
    as a hung FUSE server is dealt with by hand. False if nothing is mounted there."""
    if not os.path.isdir(os.path.join(FUSECTL, ".")) or not os.listdir(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "none", FUSECTL], capture_output=True)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == str(path):
                minor = parts[2].split(":")[1]
                try:
                    with open(os.path.join(FUSECTL, minor, "abort"), "w") as a:
                        a.write("1")
                    return True
                except OSError:
                    return False
    return False


class LazyFS:
    """One LazyFS mount of ``root`` (the disk) on ``mnt``."""

    def __init__(self, workdir, name):
        self.root = os.path.join(workdir, f"{name}.disk")
        self.mnt = os.path.join(workdir, name)
        self.fifo = os.path.join(workdir, f"{name}.faults")
        self.done = os.path.join(workdir, f"{name}.done")
        self.config = os.path.join(workdir, f"{name}.toml")
        self.log = os.path.join(workdir, f"{name}.log")
        for d in (self.root, self.mnt):
            os.makedirs(d, exist_ok=True)
        # A small cache without eviction: once it is full, later writes go straight to the
        # disk while earlier ones wait in the cache (durable out of order, as on a real
        # disk). LazyFS's eviction is not used: with it an LMDB file reads back wrong pages
        # with no cut at all.
        with open(self.config, "w") as f:
            f.write(f'[faults]\nfifo_path="{self.fifo}"\nfifo_path_completed="{self.done}"\n'
                    f'[cache]\napply_eviction=false\n[cache.simple]\ncustom_size="16mb"\n'
                    f'blocks_per_page=1\n[filesystem]\nlog_all_operations=false\n'
                    f'logfile=""\n')
        self.proc = None

    def start(self):
        binary = build()
        for p in (self.fifo, self.done):
            if not os.path.exists(p):
                os.mkfifo(p)
        # LazyFS opens the completion FIFO for writing when it starts (which blocks until a
        # reader is there): ours stays open for its whole life.
        self._done_fd = os.open(self.done, os.O_RDONLY | os.O_NONBLOCK)
        self.proc = subprocess.Popen(
            [binary, self.mnt, "--config-path", self.config, "-o", "allow_other",
             "-o", "modules=subdir", "-o", f"subdir={self.root}", "-f"],
            cwd=os.path.dirname(os.path.dirname(binary)), stdout=open(self.log, "a"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not _mounted(self.mnt):
            assert self.proc.poll() is None, open(self.log).read()[-2000:]
            assert time.monotonic() < deadline, "LazyFS did not mount"
            time.sleep(0.05)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and _mounted(self.mnt)

    def clear_cache(self):
        """The power goes: every byte not fsynced is gone. Returns once LazyFS says so.
        False if LazyFS is not running (it crashed: its cache is gone all the same)."""
        if not self.alive():
            return False
        try:
            # Non-blocking: with no reader (a dead LazyFS) this fails instead of hanging.
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            os.write(fd, b"lazyfs::clear-cache\n")
        finally:
            os.close(fd)
        deadline = time.monotonic() + 30
        got = b""
        while b"finished::clear-cache" not in got:
            if not self.alive() or time.monotonic() > deadline:
                return False
            try:
                got += os.read(self._done_fd, 256)
            except BlockingIOError:
                time.sleep(0.01)
        return True

    def restart(self):
        """After LazyFS itself crashed or hung (bugs of LazyFS seen here: a general
        protection fault in libc; all its threads waiting on a lock after an extending
        truncate, ">> FTRUNCATE ... BEHAVE AS" in its log): mount it again over the same
        disk. What its cache held is lost, as in a power cut."""
        abort_fuse(self.mnt)
        self.stop()
        self.start()

    def stop(self):
        if _mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt])
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self.proc = None
            os.close(self._done_fd)
