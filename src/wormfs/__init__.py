"""wormfs: a content-addressed WORM file system for broker-dealer books and records."""

__version__ = "0.1.0"
