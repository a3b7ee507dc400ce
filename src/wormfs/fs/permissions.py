"""POSIX permission checks, done here rather than by the kernel (no ``default_permissions``).

Why: with ``default_permissions`` the kernel would answer an unprivileged write to a record
(mode r--r--r--) with EACCES before wormfs sees it, so the refusal would be neither EPERM nor
in the audit trail. wormfs checks WORM first (EPERM, audited) and the mode bits second (EACCES),
with the same rules as the kernel's generic_permission: owner, then group (primary or
supplementary), then other; root passes every check.
"""
import stat

from ..errors import AccessDenied, NotPermitted

R, W, X = 4, 2, 1


def _root(actor):
    return actor is None or actor.uid == 0


def _in_group(actor, gid):
    return actor.gid == gid or gid in actor.groups


def _setid_cleared(mode):
    """``mode`` without set-user-ID, and without set-group-ID where the group may execute
    (what Linux clears on a write or a chown); None if neither is set."""
    kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    return mode & ~kill if mode & kill else None


def _bits(actor, rec):
    mode = rec.mode
    if actor.uid == rec.uid:
        return (mode >> 6) & 7
    if _in_group(actor, rec.gid):
        return (mode >> 3) & 7
    return mode & 7


def allowed(actor, rec, want):
    if _root(actor):
        return True
    return _bits(actor, rec) & want == want


def check(actor, rec, want, what="permission denied"):
    if not allowed(actor, rec, want):
        raise AccessDenied(what)


def check_delete(actor, dir_rec, victim):
    """Removing or renaming ``victim`` out of ``dir_rec``: write and search on the directory,
    and with the sticky bit only the owner of the entry or of the directory."""
    check(actor, dir_rec, W | X)
    if _root(actor):
        return
    if dir_rec.mode & stat.S_ISVTX and actor.uid not in (dir_rec.uid, victim.uid):
        raise NotPermitted("sticky directory: only the owner may remove this entry")


def check_owner(actor, rec, what):
    if not _root(actor) and actor.uid != rec.uid:
        raise NotPermitted(f"only the owner may {what}")


def check_chown(actor, rec, uid, gid):
    """Linux's chown_ok/chgrp_ok: root may do anything; the owner may give the file to one
    of their groups (or leave owner and group as they are); anyone else nothing, not even a
    change to the same values."""
    if _root(actor):
        return
    if uid is not None and (uid != rec.uid or actor.uid != rec.uid):
        raise NotPermitted("only root may change a file's owner")
    if gid is not None:
        check_owner(actor, rec, "change the group")
        if gid != rec.gid and not _in_group(actor, gid):
            raise NotPermitted("the owner may only choose one of their own groups")


def check_setattr(actor, rec, mode, uid, gid):
    """chmod and chown on a file that is not a record; returns (mode, uid, gid) as they are
    to be applied, with the set-id bits POSIX clears: chmod by an owner outside the file's
    group drops set-group-ID; a chown of a regular file drops set-user-ID, and set-group-ID
    when the group may execute."""
    if mode is not None:
        check_owner(actor, rec, "change the mode")
        group = gid if gid is not None else rec.gid
        if not _root(actor) and not _in_group(actor, group):
            mode &= ~stat.S_ISGID
    check_chown(actor, rec, uid, gid)
    if rec.is_file and (uid is not None or gid is not None):
        cleared = _setid_cleared(mode if mode is not None else rec.mode)
        if cleared is not None:
            mode = cleared
    return mode, uid, gid


def check_times(actor, rec, now):
    """utimensat: the owner (or root) may set any times; with write permission anyone may
    set them to now; nobody else."""
    if _root(actor) or actor.uid == rec.uid:
        return
    if not now:
        raise NotPermitted("only the owner may set a file's times")
    check(actor, rec, W)


def kill_on_write(actor, rec):
    """The mode after a write by ``actor``: set-user-ID goes, and set-group-ID when the group
    may execute, unless root writes. None when nothing changes."""
    if _root(actor) or not rec.is_file:
        return None
    return _setid_cleared(rec.mode)
