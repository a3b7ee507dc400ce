"""A null pyfuse3 + trio file system: the FUSE ceiling for bench/fs.py.

It answers the requests a create/write/close loop, a sequential write and a directory
listing send, with the same pyfuse3, trio and mount options as wormfs, and keeps nothing but
each file's size and its directory's entries in memory: no store, no fsync. Whatever wormfs costs beyond this line is ours, not FUSE's.

    python bench/nullfs.py MOUNTPOINT      (foreground; unmount with fusermount3 -u)

Not a product and not run by CI.
"""
import errno
import os
import stat
import sys
import time

import pyfuse3
import trio

from wormfs.fs.daemon import raise_readahead

ROOT = pyfuse3.ROOT_INODE


class NullOps(pyfuse3.Operations):
    enable_writeback_cache = False  # as wormfs (fs/operations.py)

    def __init__(self):
        super().__init__()
        now = time.time_ns()
        self.attrs = {ROOT: self._attrs(ROOT, stat.S_IFDIR | 0o755, now)}
        self.names = {}            # (parent, name) -> ino
        self.entries = {ROOT: []}  # directory ino -> [(name, ino)] in creation order
        self.next_ino = ROOT + 1

    def _attrs(self, ino, mode, now):
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.st_mode, e.st_nlink = ino, mode, 2 if stat.S_ISDIR(mode) else 1
        e.st_uid, e.st_gid, e.st_size = os.getuid(), os.getgid(), 0
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = now
        e.attr_timeout = e.entry_timeout = 1.0
        e.st_blksize = 4096
        return e

    def _new(self, parent, name, mode):
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.attrs[ino] = self._attrs(ino, mode, time.time_ns())
        self.names[(parent, name)] = ino
        self.entries[parent].append((name, ino))
        if stat.S_ISDIR(mode):
            self.entries[ino] = []
        return self.attrs[ino]

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, start_id, token):
        # An entry's offset is its index + 1: a listing resumes where the last reply ended.
        entries = self.entries[fh]
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self.attrs[ino], i + 1):
                return

    async def releasedir(self, fh):
        pass

    async def getattr(self, ino, ctx=None):
        return self.attrs[ino]

    async def lookup(self, parent, name, ctx=None):
        ino = self.names.get((parent, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def setattr(self, ino, attr, fields, fh, ctx):
        e = self.attrs[ino]
        if fields.update_size:
            e.st_size = attr.st_size
        if fields.update_mtime:
            e.st_mtime_ns = attr.st_mtime_ns
        return e

    async def mkdir(self, parent, name, mode, ctx):
        return self._new(parent, name, stat.S_IFDIR | mode)

    async def create(self, parent, name, mode, flags, ctx):
        e = self._new(parent, name, stat.S_IFREG | mode)
        return pyfuse3.FileInfo(fh=e.st_ino), e

    async def open(self, ino, flags, ctx):
        return pyfuse3.FileInfo(fh=ino)

    async def write(self, fh, off, buf):
        e = self.attrs[fh]
        e.st_size = max(e.st_size, off + len(buf))
        return len(buf)

    async def read(self, fh, off, size):
        e = self.attrs[fh]
        return bytes(max(0, min(size, e.st_size - off)))

    async def flush(self, fh):
        pass

    async def release(self, fh):
        pass

    async def getxattr(self, ino, name, ctx):
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s


async def _main(mountpoint):
    try:
        async with trio.open_nursery() as nursery:
            # The read-ahead wormfs sets (fs/daemon.py), so that the ceiling reads as it does.
            nursery.start_soon(raise_readahead, mountpoint)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


def main():
    pyfuse3.init(NullOps(), sys.argv[1], {"fsname=nullfs", "subtype=nullfs"})
    trio.run(_main, sys.argv[1])


if __name__ == "__main__":
    main()
