"""A unit's identity and layout on disk.

    UNIT/
      unit.json     identity, written at mkfs (serial, role, peer, mode, parameters); changed
                    only by 'wormfs mirror promote|resync', which audit it
      mirror.json   on a primary: the mirror's last known state and acknowledged position
      FORMAT.md     the on-disk format, so the unit explains itself
      clock.json    compliance-clock state (clock.py)
      segments/     the append-only log: the truth
      index/        LMDB, derived, rebuildable
      staging/      bytes of files still open (not records)
      local/        on a mirror: its own event chain (changes it refused, repairs of itself)
      quarantine/   torn log tails cut at recovery, kept rather than destroyed
      lock          flock()ed by the one process that writes the unit
      index.dirty   present while a writer has the index open: holds the boot id (fsynced)
"""
import json
import os
import secrets
import uuid
from importlib import resources

from .. import __version__
from ..errors import StoreError
from .hostfs import atomic_write, fsync_dir

FORMAT_VERSION = 1
UNIT_KIND = "wormfs-unit"
DEFAULT_SEGMENT_SIZE = 128 << 20
SUBDIRS = ("segments", "index", "staging", "quarantine")


def new_serial():
    """A unit serial: WU- and 16 hex digits, unique with overwhelming probability."""
    return "WU-" + secrets.token_hex(8).upper()


def write_unit(path, *, role, mode, peer_serial=None, peer_path=None, label="",
               segment_size=DEFAULT_SEGMENT_SIZE, chunking=None, same_device=False,
               no_mirror=False, serial=None, log_uuid=None, peer_endpoint=None):
    """Create an empty unit directory (which must be empty or absent).

    ``log_uuid`` names the log the unit holds: a primary's own uuid, which its mirror shares,
    because the mirror holds the same segments byte for byte (their headers carry it)."""
    os.makedirs(path, exist_ok=True)
    if os.listdir(path):
        raise StoreError(f"{path} is not empty")
    unit = new_unit(role=role, mode=mode, peer_serial=peer_serial, peer_path=peer_path,
                    label=label, segment_size=segment_size, chunking=chunking,
                    same_device=same_device, no_mirror=no_mirror, serial=serial,
                    log_uuid=log_uuid)
    if peer_endpoint:
        unit["peer_endpoint"] = peer_endpoint
    for d in SUBDIRS:
        os.makedirs(os.path.join(path, d))
    atomic_write(os.path.join(path, "FORMAT.md"), format_doc())
    atomic_write(os.path.join(path, "unit.json"), json.dumps(unit, indent=2).encode() + b"\n")
    fsync_dir(path)
    return unit


def new_unit(*, role, mode, peer_serial, peer_path, label, segment_size, chunking,
             same_device, no_mirror, serial, log_uuid):
    """The unit.json of a new unit (as a dict)."""
    own = str(uuid.uuid4())
    return {
        "kind": UNIT_KIND,
        "format": FORMAT_VERSION,
        "serial": serial or new_serial(),
        "uuid": own,
        "log_uuid": log_uuid or own,
        "role": role,
        "mode": mode,
        "label": label,
        "peer_serial": peer_serial,
        "peer_path": peer_path,
        "same_device": same_device,
        "no_mirror": no_mirror,
        "segment_size": segment_size,
        "chunking": chunking,
        "created_by": f"wormfs {__version__}",
    }


def read_unit(path):
    try:
        with open(os.path.join(path, "unit.json")) as f:
            unit = json.load(f)
    except FileNotFoundError:
        raise StoreError(f"{path} is not a wormfs unit (no unit.json); create one with "
                         f"'wormfs mkfs'") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}/unit.json: {e}") from None
    if unit.get("kind") != UNIT_KIND:
        raise StoreError(f"{path}/unit.json does not describe a wormfs unit")
    if unit.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path} has format version {unit.get('format')}; this wormfs reads "
                         f"version {FORMAT_VERSION}")
    return unit


def log_uuid_bytes(unit):
    """The 16 bytes every segment header of the unit's log carries."""
    return bytes.fromhex(unit.get("log_uuid", unit["uuid"]).replace("-", ""))


def rewrite_unit(path, unit):
    """Replace unit.json (promotion, a new mirror): atomic, so a crash keeps one or the other."""
    atomic_write(os.path.join(path, "unit.json"), json.dumps(unit, indent=2).encode() + b"\n")


def format_doc():
    try:
        return resources.files("wormfs").joinpath("FORMAT.md").read_bytes()
    except (FileNotFoundError, OSError):
        return b"See docs/FORMAT.md in the wormfs source.\n"
