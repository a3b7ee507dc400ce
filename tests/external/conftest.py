from tests.fs.conftest import mount_factory  # noqa: F401
