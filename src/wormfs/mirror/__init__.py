"""Replication to the duplicate unit (SPEC "Duplicate (mirror)"), verification and repair
across both units."""
