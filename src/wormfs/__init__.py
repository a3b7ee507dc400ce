"""wormfs: a content-addressed WORM file system for broker-dealer books and records."""

__version__ = "0.1.0"

# The composition root: store/ reaches replication only through the seam mirror/ fills in
# (store/replication.py). Imported here, after __version__, so that every entry point has
# it; a unit with a duplicate is refused, never opened alone, if it is missing.
from .mirror import hooks as _replication_hooks  # noqa: E402,F401
