from tests.fs.conftest import mount_factory  # noqa: F401  (the fixture, for pytest)
