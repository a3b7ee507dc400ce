"""The ``user.worm.*`` extended attributes of SPEC.md, over the store API.

Reading never changes anything. Writing maps each name to one store call; the store checks
the rules and audits refusals. Malformed values are EINVAL and audited here (the store raises
InvalidValue before it knows an operation was attempted).
"""
from .. import retention
from ..errors import InvalidValue, NoSuchAttribute, Unsupported
from ..timeutil import format_us

PREFIX = "user.worm."
HOLD = PREFIX + "hold."
READ_ONLY = ("state", "serial", "committed", "blake3", "mirror")
MAX_VALUE = 4096


def _decode_name(name):
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _state(store, rec):
    if rec.sealed and retention.expired(rec.retention, store.now()):
        return "expired"
    return rec.state.value


def list_names(store, rec):
    if rec.is_dir:
        return [PREFIX + "retention"] if rec.retention else []
    out = [PREFIX + "state", PREFIX + "retain_until"]
    if rec.sealed:
        out += [PREFIX + "serial", PREFIX + "committed", PREFIX + "blake3", PREFIX + "mirror"]
        if rec.retention["event_period"] is not None and rec.retention["event_date"]:
            out.append(PREFIX + "event")
        out += [HOLD + h for h in sorted(rec.holds)]
    return out


def get_value(store, rec, name):
    """The value of one attribute (bytes); NoSuchAttribute when the inode has none."""
    n = _decode_name(name)
    if n is None or not n.startswith(PREFIX) or n not in list_names(store, rec):
        raise NoSuchAttribute(name)
    key = n[len(PREFIX):]
    if key == "retention":
        value = rec.retention
    elif key == "state":
        value = _state(store, rec)
    elif key == "retain_until":
        r = rec.retention if rec.sealed else \
            store.prospective_retention(rec.ino)
        value = retention.display(r)
    elif key == "serial":
        value = str(rec.serial)
    elif key == "committed":
        value = format_us(rec.committed)
    elif key == "blake3":
        value = rec.blake3
    elif key == "mirror":
        value = store.record_mirror_status(rec)
    elif key == "event":
        value = format_us(rec.retention["event_date"])
    else:
        value = rec.holds[key[len("hold."):]]
    return value.encode("utf-8", "surrogateescape")


def _value_text(store, rec, n, value, actor):
    if len(value) > MAX_VALUE:
        _invalid(store, rec, n, f"value longer than {MAX_VALUE} bytes", actor)
    try:
        # Exact: no trimming of spaces or a trailing NUL (SPEC "Values are exact").
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        _invalid(store, rec, n, "value is not UTF-8 text", actor)
    if "\0" in text:
        _invalid(store, rec, n, "value holds a NUL byte", actor)
    return text


def _invalid(store, rec, n, reason, actor):
    store.refuse("setxattr", f"{n}: {reason}", actor, ino=rec.ino, errno_name="EINVAL",
                 exc=InvalidValue)


def set_value(store, rec, name, value, actor):
    n = _decode_name(name)
    if n is None or not n.startswith(PREFIX):
        # Only wormfs's own attributes are kept; anything else has nowhere to live.
        raise Unsupported(f"only user.worm.* attributes are kept, not {name!r}")
    key = n[len(PREFIX):]
    ino = rec.ino
    if key in READ_ONLY:
        store.refuse("setxattr", f"{n} is read-only", actor, ino=ino)
    text = _value_text(store, rec, n, value, actor)
    try:
        if key == "retain_until":
            store.set_retain_until(ino, text, actor)
        elif key == "retention":
            store.set_dir_retention(ino, text, actor)
        elif key == "event":
            store.set_event_date(ino, text, actor)
        elif key.startswith("hold."):
            store.place_hold(ino, key[len("hold."):], text, actor)
        else:
            raise InvalidValue(f"no attribute {n}; wormfs knows user.worm.retain_until, "
                               f"user.worm.event, user.worm.hold.NAME, user.worm.retention")
    except InvalidValue as e:
        _invalid(store, rec, n, str(e), actor)


def remove_value(store, rec, name, actor):
    n = _decode_name(name)
    if n is None or not n.startswith(PREFIX) or n not in list_names(store, rec):
        raise NoSuchAttribute(name)
    if n.startswith(HOLD):
        store.release_hold(rec.ino, n[len(HOLD):], actor)
    else:
        store.refuse("removexattr", f"{n} cannot be removed", actor, ino=rec.ino)

