"""Recording what a command did (an export, say) in the audit trail of the unit it worked on,
whoever holds that unit now.

- A primary that is mounted: its daemon appends the event (control socket); it knows the
  caller from the socket's credentials.
- A primary that is not mounted: this process opens it and appends the event.
- A mirror or retired unit: its log is its primary's, so the event goes to the primary's
  daemon if the primary is mounted (it reaches the mirror by replication), else into the
  unit's own chain (``local/``), which is how an export made from a mirror alone after the
  primary was lost stays on record.
"""
import os

from ..actor import Actor
from ..clock import ComplianceClock
from ..errors import StoreError
from ..fs import control, requests
from ..store.localchain import LocalChain
from ..store.hostfs import unit_in_use, unit_locked
from ..store.store import Store
from ..store.unit import read_unit


def record(unit_path, etype, fields):
    """Append event ``etype`` with ``fields``; returns where it went (a short description).
    StoreError if no unit could take it."""
    unit = read_unit(unit_path)
    fields = dict(fields, unit=unit["serial"])
    if unit["role"] == "primary":
        return _on_primary(unit_path, etype, fields)
    primary = unit.get("peer_path")
    if primary and os.path.exists(os.path.join(primary, "unit.json")) and unit_in_use(primary):
        try:
            return _on_primary(primary, etype, fields)
        except StoreError:
            pass  # the primary is held but does not answer: keep it on this unit
    return _on_own_chain(unit_path, unit, etype, fields)


def _on_primary(path, etype, fields):
    if unit_in_use(path):
        if etype != "export":
            raise StoreError(f"a mounted store's daemon records only exports, not {etype}")
        ev = control.request(path, requests.ExportNote(**fields))
        return f"event {ev['seq']} of {path}"
    with Store(path) as st:
        ev = st.note(etype, Actor.current(), **fields)
    return f"event {ev['seq']} of {path}"


def _on_own_chain(path, unit, etype, fields):
    with unit_locked(path, f"{path} is in use by another process; the {etype} could not be "
                           f"recorded"):
        clock = ComplianceClock(os.path.join(path, "clock.json"))
        chain = LocalChain(os.path.join(path, "local"),
                           bytes.fromhex(unit["uuid"].replace("-", "")))
        try:
            ev = chain.append(clock.now(), etype, actor=Actor.current().as_dict(), **fields)
        finally:
            chain.close()
            clock.persist()
    return f"event {ev['seq']} of the own chain of {path} (local/)"
