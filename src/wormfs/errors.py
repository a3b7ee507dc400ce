"""Exceptions of the store, each carrying the errno a Linux user expects.

The FUSE layer answers with ``exc.errno``; the CLI prints ``str(exc)`` as its one-line error.
Anything else escaping the store is a bug, logged and answered with EIO.
"""
import errno as _errno


class WormError(Exception):
    """Base of every error the store reports on purpose."""

    errno = _errno.EIO


class Refused(WormError):
    """WORM forbids this (audited by the store before it is raised)."""

    errno = _errno.EPERM


class InvalidValue(WormError):
    """A malformed value: bad date, duration, xattr value or name."""

    errno = _errno.EINVAL


class NotFound(WormError):
    errno = _errno.ENOENT


class NoSuchAttribute(WormError):
    errno = _errno.ENODATA


class Exists(WormError):
    errno = _errno.EEXIST


class NotEmpty(WormError):
    errno = _errno.ENOTEMPTY


class NotADirectory(WormError):
    errno = _errno.ENOTDIR


class IsADirectory(WormError):
    errno = _errno.EISDIR


class NameTooLong(WormError):
    errno = _errno.ENAMETOOLONG


class StoreFull(WormError):
    errno = _errno.ENOSPC


class FileTooBig(WormError):
    errno = _errno.EFBIG


class IntegrityError(WormError):
    """Stored bytes do not match their checksum or id. Never answered with wrong bytes."""

    errno = _errno.EIO


class StoreError(WormError):
    """The store cannot be opened or used as asked (not a unit, locked, wrong version...)."""

    errno = _errno.EIO


class AccessDenied(WormError):
    """Ordinary permission bits say no (not a WORM refusal, so not audited)."""

    errno = _errno.EACCES


class NotPermitted(WormError):
    """POSIX says EPERM for reasons that are not WORM (chown by a non-owner, sticky bit)."""

    errno = _errno.EPERM


class Unsupported(WormError):
    """Something this file system does not keep (e.g. xattrs outside user.worm.*)."""

    errno = _errno.ENOTSUP


def one_line(text):
    """A message as one printable line: control characters a user typed (a newline in a
    path, say) are shown escaped, so every error stays one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
