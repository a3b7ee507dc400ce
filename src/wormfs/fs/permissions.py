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


def _bits(actor, rec):
    mode = rec["mode"]
    if actor.uid == rec["uid"]:
        return (mode >> 6) & 7
    if actor.gid == rec["gid"] or rec["gid"] in actor.groups:
        return (mode >> 3) & 7
    return mode & 7


def allowed(actor, rec, want):
    if actor is None or actor.uid == 0:
        return True
    return _bits(actor, rec) & want == want


def check(actor, rec, want, what="permission denied"):
    if not allowed(actor, rec, want):
        raise AccessDenied(what)


def check_delete(actor, dir_rec, victim):
    """Removing or renaming ``victim`` out of ``dir_rec``: write and search on the directory,
    and with the sticky bit only the owner of the entry or of the directory."""
    check(actor, dir_rec, W | X)
    if actor is None or actor.uid == 0:
        return
    if dir_rec["mode"] & stat.S_ISVTX and actor.uid not in (dir_rec["uid"], victim["uid"]):
        raise NotPermitted("sticky directory: only the owner may remove this entry")


def check_owner(actor, rec, what):
    if actor is not None and actor.uid != 0 and actor.uid != rec["uid"]:
        raise NotPermitted(f"only the owner may {what}")


def check_chown(actor, rec, uid, gid):
    if actor is None or actor.uid == 0:
        return
    if uid is not None and uid != rec["uid"]:
        raise NotPermitted("only root may change a file's owner")
    if gid is not None and gid != rec["gid"]:
        check_owner(actor, rec, "change the group")
        if gid != actor.gid and gid not in actor.groups:
            raise NotPermitted("the owner may only choose one of their own groups")
