"""The FUSE mount: a thin translation of kernel requests into store calls.

operations.py  the pyfuse3 handlers (one per request type), handle and lookup-count tables
attrs.py       inode dict -> stat attributes
permissions.py POSIX permission checks (we check, not the kernel, so WORM refusals are EPERM)
xattrs.py      the user.worm.* extended attributes
closers.py     who still holds a file open, from /proc (to seal on the last close)
daemon.py      mount lifecycle: open, recover, serve, housekeeping, unmount
"""
