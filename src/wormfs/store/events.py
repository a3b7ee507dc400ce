"""Events: the audit trail, the replication stream and the record of every state change.

An event is one JSON object, encoded canonically (keys sorted, no spaces, ASCII only, names
that are not UTF-8 carried as surrogate escapes \\udcXX of their bytes). Common fields:

    seq   1, 2, 3 ... without gaps within a unit
    prev  hex BLAKE3-256 of the previous event's encoded bytes (64 zeros for seq 1)
    time  compliance-clock time, ISO 8601 UTC
    type  what happened (docs/FORMAT.md lists every type and its fields)
    actor {uid, gid, pid, program, user} of the process that caused it, when one did

The hash of an event is BLAKE3-256 of its encoded bytes; a chain is valid when every ``prev``
equals the hash of the event before it and ``seq`` counts up by one.
"""
import json
import os

import blake3

GENESIS = "0" * 64


# Built once: json.dumps with any non-default argument builds a new encoder on every call,
# which was a fifth of an event's encoding time. The bytes are the same.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_DECODE = json.JSONDecoder().decode


def encode(obj):
    return _ENCODE(obj).encode()


def loads(raw):
    """``json.loads`` of stored bytes, without its encoding detection for the usual case:
    what we write is ASCII. Anything else (a BOM, UTF-16, bytes that are not UTF-8) goes
    to ``json.loads`` itself, so every input parses exactly as it did, or fails as it did."""
    if type(raw) is not str:
        try:
            return _DECODE(raw.decode("utf-8"))
        except (ValueError, AttributeError):  # AttributeError: json.loads says what is wrong
            pass
    return json.loads(raw)


decode = loads  # an event's payload is stored JSON like the index's records


def event_hash(payload):
    return blake3.blake3(payload).hexdigest()


def subjects(ev):
    """The inodes and serials an event is about: its ``ino`` and ``replaced``, its
    ``serial`` and ``serials`` (whatever else it holds; a malformed one gives what it has)."""
    inos, serials = set(), set()
    for k in ("ino", "replaced"):
        if type(ev.get(k)) is int:
            inos.add(ev[k])
    if type(ev.get("serial")) is int:
        serials.add(ev["serial"])
    more = ev.get("serials")
    if type(more) is list:
        serials.update(s for s in more if type(s) is int)
    return inos, serials


def name_str(name):
    """File names are bytes on Linux; events carry them as str (surrogateescape)."""
    return os.fsdecode(name) if isinstance(name, bytes) else name


def name_bytes(name):
    return os.fsencode(name)


def actor_dict(actor):
    return None if actor is None else actor.as_dict()
