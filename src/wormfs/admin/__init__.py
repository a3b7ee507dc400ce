"""What admins and examiners run against a store (SPEC "Admin and examiner commands"):
finding the unit behind a path, describing and selecting records, reading and verifying the
audit trail, exporting a production, disposing of expired records and the self-test."""
