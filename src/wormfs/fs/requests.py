"""The control socket's requests, parsed into typed records before anything acts on them.

A request is one JSON object. Each op has a fixed set of fields, each of a fixed type; a
request with an unknown op, a missing or unknown field, or a value of the wrong type is
refused with a one-line reason and changes nothing. The daemon alone builds the events a
request causes: no field of a request is ever copied into an event unchecked (a caller who
could pick an event's type, seq, time or actor could rewrite the audit trail).
"""
from dataclasses import dataclass

from ..errors import InvalidValue

MAX_TEXT = 4096
MAX_LIST = 32 << 20  # the serial ranges of one export, as text


@dataclass(frozen=True)
class Check:
    deep: bool
    repair: bool


@dataclass(frozen=True)
class Dispose:
    dry_run: bool


@dataclass(frozen=True)
class ExportNote:
    """What an export records about itself (admin/commands.cmd_export)."""
    unit: str
    out: str
    format: str
    records: int
    bytes: int
    serials: str
    index_sha256: str
    selection: dict

    def fields(self):
        return {"unit": self.unit, "out": self.out, "format": self.format,
                "records": self.records, "bytes": self.bytes, "serials": self.serials,
                "index_sha256": self.index_sha256, "selection": dict(self.selection)}


@dataclass(frozen=True)
class Delete:
    """A privileged delete (enterprise mode): the record at ``path`` inside the store."""
    path: str
    reason: str


def _text(v, name):
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise InvalidValue(f"field {name!r} must be text of at most {MAX_TEXT} characters")
    return v


def _int(v, name):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidValue(f"field {name!r} must be a non-negative integer")
    return v


def _bool(v, name):
    if not isinstance(v, bool):
        raise InvalidValue(f"field {name!r} must be true or false")
    return v


def _serials(v, name):
    """Serial ranges as export writes them: '1-3,7'."""
    import re
    if not isinstance(v, str) or len(v) > MAX_LIST or \
            not re.fullmatch(r"(\d+(-\d+)?(,\d+(-\d+)?)*)?", v, re.ASCII):
        raise InvalidValue(f"field {name!r} must be serial ranges such as '1-3,7'")
    return v


def _selection(v, name):
    if not isinstance(v, dict) or len(v) > 32:
        raise InvalidValue(f"field {name!r} must be an object")
    out = {}
    for k, x in v.items():
        _text(k, name)
        if isinstance(x, (str, bool, int)) and not (isinstance(x, str) and len(x) > MAX_TEXT):
            out[k] = x
        elif isinstance(x, list) and len(x) <= 2 and all(isinstance(i, int) for i in x):
            out[k] = list(x)
        else:
            raise InvalidValue(f"field {name!r}.{k} has a value of the wrong type")
    return out


def _fields(obj, what, spec):
    """Check that ``obj`` has exactly the fields of ``spec`` (name -> parser)."""
    if not isinstance(obj, dict):
        raise InvalidValue(f"{what} must be a JSON object")
    unknown = set(obj) - set(spec)
    if unknown:
        raise InvalidValue(f"{what}: unknown field {sorted(unknown)[0]!r}")
    missing = set(spec) - set(obj)
    if missing:
        raise InvalidValue(f"{what}: missing field {sorted(missing)[0]!r}")
    return {k: parse(obj[k], k) for k, parse in spec.items()}


_EXPORT = {"unit": _text, "out": _text, "format": _text, "records": _int, "bytes": _int,
           "serials": _serials, "index_sha256": _text, "selection": _selection}


def parse(req):
    """The typed request of a decoded JSON line; InvalidValue saying what is wrong."""
    if not isinstance(req, dict):
        raise InvalidValue("a request must be a JSON object")
    op = req.get("op")
    body = {k: v for k, v in req.items() if k != "op"}
    if op == "check":
        return Check(**_fields(body, "check", {"deep": _bool, "repair": _bool}))
    if op == "dispose":
        return Dispose(**_fields(body, "dispose", {"dry_run": _bool}))
    if op == "note":
        f = _fields(body, "note", {"type": _text, "fields": lambda v, n: v})
        if f["type"] != "export":
            raise InvalidValue(f"the daemon does not record {f['type']!r} events")
        return ExportNote(**_fields(f["fields"], "export note", _EXPORT))
    if op == "delete":
        return Delete(**_fields(body, "delete", {"path": _text, "reason": _text}))
    raise InvalidValue(f"unknown request {op!r}")


def encode(r):
    """The JSON object of a typed request (the command's side)."""
    if isinstance(r, Check):
        return {"op": "check", "deep": r.deep, "repair": r.repair}
    if isinstance(r, Dispose):
        return {"op": "dispose", "dry_run": r.dry_run}
    if isinstance(r, ExportNote):
        return {"op": "note", "type": "export", "fields": r.fields()}
    if isinstance(r, Delete):
        return {"op": "delete", "path": r.path, "reason": r.reason}
    raise TypeError(r)
