"""What a primary's mirror looks like from outside the mount: for ``wormfs status`` and
``wormfs mirror status``, which may run while the store is mounted (they only read).

The mirror's own index says how far it got; the primary's mirror.json says what the mounted
(or last) primary process saw: since when the mirror has been behind, and why.
"""
import os

from ..errors import StoreError, WormError
from ..store.maintenance import unit_last_seq
from ..store.unit import read_unit
from ..store.localchain import LocalChain
from .s3bucket import is_s3
from .shipper import read_state


def mirror_report(primary_path, unit, primary_seq):
    """A dict: state (synced, lagging, unreachable, refused, diverged, wrong unit, none),
    serial, path, lag_events, behind_since, detail, refused (the mirror's last refusal),
    refused_kept (the refused events its log holds unapplied)."""
    if unit.get("no_mirror") or not unit.get("peer_path"):
        return {"state": "none", "serial": None, "path": None, "lag_events": None,
                "behind_since": None, "detail": "no mirror unit"}
    path = unit["peer_path"]
    saved = read_state(primary_path)
    out = {"serial": unit.get("peer_serial"), "path": path, "lag_events": None,
           "behind_since": saved.get("behind_since"), "detail": saved.get("reason"),
           "refused": None}
    if is_s3(path):
        return _s3_report(primary_path, primary_seq, saved, out)
    try:
        m = read_unit(path)
    except StoreError as e:
        out.update(state="unreachable", detail=str(e),
                   lag_events=max(0, primary_seq - saved.get("acked_seq", 0)))
        return out
    if m.get("serial") != unit.get("peer_serial"):
        out.update(state="wrong unit", detail=f"{path} holds unit {m.get('serial')}")
        return out
    try:
        seq = unit_last_seq(path)
    except Exception as e:  # lmdb errors: the unit is there but cannot be read
        out.update(state="unreadable", detail=str(e))
        return out
    out["lag_events"] = max(0, primary_seq - seq)
    _refusals(out, path, m)
    return _lag_state(out, saved, "the mirror holds every event")


def _refusals(out, unit_path, unit):
    """The mirror's own chain: its last refusal, and the refused events it keeps in its log
    without applying them (each is a difference between the two units for good)."""
    local = os.path.join(unit_path, "local")
    if not os.path.isdir(local):
        return
    try:
        chain = LocalChain(local, bytes.fromhex(unit["uuid"].replace("-", "")), readonly=True)
    except (WormError, OSError):
        return
    try:
        if chain.last_refused:
            out["refused"] = {"event_seq": chain.last_refused[0],
                              "reason": chain.last_refused[1]}
        out["refused_kept"] = [{"event_seq": ev["event_seq"],
                                "event_type": ev.get("event_type"),
                                "reason": ev.get("reason")} for ev in chain.kept]
    finally:
        chain.close()


def _s3_report(primary_path, primary_seq, saved, out):
    """An S3 unit as the primary's shipping cache knows it: how far the bucket holds the log
    (verified objects only), without asking the bucket."""
    from .s3state import STATE_FILE, S3State
    from .s3target import cache_path
    statefile = os.path.join(cache_path(primary_path), STATE_FILE)
    held = saved.get("acked_seq", 0)
    if os.path.exists(statefile):
        try:
            st = S3State(statefile, readonly=True)
            try:
                held = (st.get("head") or [0])[0]
            finally:
                st.close()
        except Exception as e:  # sqlite3 errors: report, never fail the status
            out["detail"] = f"cannot read {statefile}: {e}"
    out["lag_events"] = max(0, primary_seq - held)
    cache = cache_path(primary_path)
    try:
        _refusals(out, cache, read_unit(cache))
    except StoreError:
        pass  # no shipping cache yet
    return _lag_state(out, saved, "the bucket holds every event, locked")


def _lag_state(out, saved, synced_detail):
    """The state from the lag: synced at none, else what the primary process last saw
    (refused, diverged, unreachable), else lagging."""
    kept = out.get("refused_kept")
    if kept:
        # Sound events after them kept flowing, but the duplicate does not say what the
        # primary says about these: DEGRADED until someone looks (SPEC "Duplicate
        # robustness").
        last = kept[-1]
        out["state"] = "refused"
        out["detail"] = (f"the mirror refused {len(kept)} event{'s' if len(kept) > 1 else ''} "
                         f"of this store's log and keeps {'them' if len(kept) > 1 else 'it'} "
                         f"unapplied; the last: event {last['event_seq']} "
                         f"({last['event_type']}): {last['reason']}; 'wormfs mirror status' "
                         f"lists them, 'wormfs audit' shows them")
    elif out["lag_events"] == 0:
        out.update(state="synced", detail=synced_detail, behind_since=None)
    elif saved.get("state") in ("refused", "diverged", "unreachable"):
        out["state"] = saved["state"]
    else:
        out["state"] = "lagging"
        out["detail"] = out["detail"] or f"{out['lag_events']} events to ship"
    return out
