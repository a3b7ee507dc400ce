"""The record store: append-only segments (the truth), an LMDB index (derived), staging."""
