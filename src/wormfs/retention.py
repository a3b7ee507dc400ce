"""Retention rules, as pure functions over a record's retention fields.

A retention is a dict with four fields (stored in the inode, carried in events):

    until        us or None      a fixed retain-until (a floor when event-based)
    indefinite   bool            retained for ever (life of the enterprise)
    event_period str or None     event-based: retained until event date + period
    event_date   us or None      set once by a records admin; None = event pending

Effective retain-until: indefinite > event pending > max(until, event_date + period).
Only ``extend`` changes a record's retention, and it only ever lengthens it (R7).
"""
from .errors import InvalidValue, Refused
from .timeutil import DATE_FORMS, DURATION_FORMS, format_us, parse_date, parse_duration

INDEFINITE = "indefinite"
EVENT_PREFIX = "event+"
RETAIN_FORMS = f"{DATE_FORMS}, '{INDEFINITE}', or 'event+PERIOD' (PERIOD: {DURATION_FORMS})"


def empty():
    return {"until": None, "indefinite": False, "event_period": None, "event_date": None}


def is_valid(v):
    """Whether ``v`` is a retention dict of the shape above (for events received from
    elsewhere: the mirror checks before it applies one)."""
    def us(x):
        return x is None or (isinstance(x, int) and not isinstance(x, bool))
    return (isinstance(v, dict) and set(v) == set(empty())
            and isinstance(v["indefinite"], bool) and us(v["until"]) and us(v["event_date"])
            and (v["event_period"] is None or isinstance(v["event_period"], str)))


def parse_value(text):
    """Parse a value written to user.worm.retain_until (or a directory default with
    ``parse_default``)."""
    s = text if isinstance(text, str) else ""
    r = empty()
    if s == INDEFINITE:
        r["indefinite"] = True
    elif s.startswith(EVENT_PREFIX):
        try:
            r["event_period"] = str(parse_duration(s[len(EVENT_PREFIX):]))
        except InvalidValue:
            raise InvalidValue(f"bad retention {text!r}: use {RETAIN_FORMS}") from None
    else:
        try:
            r["until"] = parse_date(s)
        except InvalidValue:
            raise InvalidValue(f"bad retention {text!r}: use {RETAIN_FORMS}") from None
    return r


def parse_default(text):
    """Validate a default retention (store or directory): a period, 'indefinite' or
    'event+PERIOD'. Returns the canonical text."""
    s = text if isinstance(text, str) else ""
    if s == INDEFINITE:
        return s
    if s.startswith(EVENT_PREFIX):
        return EVENT_PREFIX + str(parse_duration(s[len(EVENT_PREFIX):]))
    try:
        return str(parse_duration(s))
    except InvalidValue:
        raise InvalidValue(
            f"bad retention period {text!r}: use {DURATION_FORMS}, '{INDEFINITE}' or "
            f"'event+PERIOD'") from None


def from_default(default_text, committed_us):
    """The retention a record gets at seal from a default period."""
    r = empty()
    if default_text == INDEFINITE:
        r["indefinite"] = True
    elif default_text.startswith(EVENT_PREFIX):
        r["event_period"] = default_text[len(EVENT_PREFIX):]
    else:
        r["until"] = parse_duration(default_text).after(committed_us)
    return r


def combine(a, b, base_us):
    """A retention that keeps a record at least as long as both ``a`` and ``b`` (neither has
    an event date yet): how a record's floor and its owner's wish meet at the seal."""
    if a["indefinite"] or b["indefinite"]:
        return dict(empty(), indefinite=True)
    out = empty()
    out["until"] = max(a["until"] or 0, b["until"] or 0) or None
    periods = [p for p in (a["event_period"], b["event_period"]) if p is not None]
    if periods:
        out["event_period"] = max(periods, key=lambda p: _after_base(p, base_us))
    return out


def below(floor, wish, base_us):
    """Why ``wish`` would keep a file less long than ``floor`` (neither has an event date),
    or None: a date earlier than the floor's, a shorter event period, or anything but
    'indefinite' where the floor is indefinite (SPEC "retention floor")."""
    if wish["indefinite"]:
        return None
    if floor["indefinite"]:
        return "the file is retained indefinitely"
    if wish["event_period"] is not None:
        end = _after_base(wish["event_period"], base_us)
        if floor["event_period"] is not None and \
                end < _after_base(floor["event_period"], base_us):
            return f"event+{wish['event_period']} is shorter than event+{floor['event_period']}"
        if floor["until"] is not None and end < floor["until"]:
            return (f"event+{wish['event_period']} is shorter than the retention floor "
                    f"{format_us(floor['until'])}")
        return None
    if floor["until"] is not None and wish["until"] < floor["until"]:
        return (f"{format_us(wish['until'])} is earlier than the current retain-until "
                f"{format_us(floor['until'])}")
    return None


def effective(r):
    """('indefinite', None), ('pending', None) or ('until', us)."""
    if r["indefinite"]:
        return INDEFINITE, None
    if r["event_period"] is not None:
        if r["event_date"] is None:
            return "pending", None
        end = parse_duration(r["event_period"]).after(r["event_date"])
        return "until", max(end, r["until"] or 0)
    return "until", r["until"]


def display(r):
    """The value of user.worm.retain_until."""
    kind, until = effective(r)
    if kind == INDEFINITE:
        return INDEFINITE
    if kind == "pending":
        return EVENT_PREFIX + r["event_period"]
    return format_us(until) if until is not None else ""


def expired(r, now_us):
    kind, until = effective(r)
    return kind == "until" and until is not None and until <= now_us


def _after_base(period, base_us):
    return parse_duration(period).after(base_us)


def extend(old, new, base_us):
    """The retention after asking for ``new`` on a record that has ``old``; Refused if that
    would shorten it or change its kind to a shorter one. ``base_us`` (the commit time) is
    where two event periods are compared."""
    kind, until = effective(old)
    out = dict(old)
    if new["indefinite"]:
        out["indefinite"] = True
        return out
    if kind == INDEFINITE:
        raise Refused("retention is indefinite and cannot be replaced by a date")
    if new["event_period"] is not None:
        if old["event_date"] is not None:
            raise Refused("the event date is already set; the retention can only be "
                          "extended with a later date")
        if old["event_period"] is not None and (
                _after_base(new["event_period"], base_us)
                < _after_base(old["event_period"], base_us)):
            raise Refused(f"event+{new['event_period']} is shorter than event+"
                          f"{old['event_period']}")
        out["event_period"] = new["event_period"]
        return out
    # A date.
    if kind == "pending":
        raise Refused(f"retention is event+{old['event_period']} and pending; set the event "
                      f"date instead")
    if until is not None and new["until"] < until:
        raise Refused(f"{format_us(new['until'])} is earlier than the current retain-until "
                      f"{format_us(until)}")
    out["until"] = max(new["until"], old["until"] or 0)
    return out


def set_event(old, date_us):
    """The retention once the event happened at ``date_us``; Refused if not event-based or
    already set."""
    if old["event_period"] is None:
        raise Refused("the record has no event-based retention")
    if old["event_date"] is not None:
        raise Refused(f"the event date is already set ({format_us(old['event_date'])})")
    out = dict(old)
    out["event_date"] = date_us
    return out


def never_shorter(old, new, base_us):
    """Whether ``new`` keeps a record at least as long as ``old`` in every case: the check a
    mirror makes on a retention change it receives, whatever path produced it."""
    if new["indefinite"]:
        return True
    if old["indefinite"]:
        return False
    if (new["until"] or 0) < (old["until"] or 0):
        return False
    if old["event_period"] is not None:
        if new["event_period"] is None:
            return False
        if old["event_date"] is not None and new["event_date"] != old["event_date"]:
            return False
        if _after_base(new["event_period"], base_us) < _after_base(old["event_period"],
                                                                   base_us):
            return False
    return True
