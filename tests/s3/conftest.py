"""A real S3 Object Lock store for the S3 unit tests: a single-node Ceph RADOS Gateway on
127.0.0.1, started once per test session by packaging/dev/ceph-rgw.sh (which installs Debian's
Ceph packages if they are missing) and stopped by its PIDs at the end. One that is already
running (started by hand with the same script) is used and left running.

Where Ceph cannot start (no root, no package source, a port taken), every test here is
skipped with the script's own last words as the reason."""
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "dev" / "ceph-rgw.sh"
BASE = os.environ.get("CEPH_BASE", "/tmp/wormfs-ceph")
ENV_FILE = Path(BASE) / "s3.env"


def _read_env():
    env = {}
    for line in ENV_FILE.read_text().splitlines():
        k, _, v = line.partition("=")
        if k:
            env[k] = v
    return env


def _answers(endpoint):
    try:
        urllib.request.urlopen(endpoint, timeout=3).close()
        return True
    except Exception:
        return False


class Gateway:
    def __init__(self, env):
        self.env = env
        self.endpoint = env["AWS_ENDPOINT_URL"]

    def run(self, cmd):
        r = subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "CEPH_BASE": BASE})
        assert r.returncode == 0, f"ceph-rgw.sh {cmd}: {r.stdout}{r.stderr}"

    def stop_gateway(self):
        self.run("gw-stop")

    def start_gateway(self):
        self.run("gw-start")

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.env["AWS_DEFAULT_REGION"])


@pytest.fixture(scope="session")
def rgw():
    started = False
    if not (ENV_FILE.exists() and _answers(_read_env()["AWS_ENDPOINT_URL"])):
        if os.geteuid() != 0:
            pytest.skip("the S3 tests start Ceph RGW with packaging/dev/ceph-rgw.sh, which "
                        "needs root")
        r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                           timeout=900, env={**os.environ, "CEPH_BASE": BASE})
        if r.returncode != 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300,
                           env={**os.environ, "CEPH_BASE": BASE})
            last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
            pytest.skip(f"Ceph RGW could not start here (packaging/dev/ceph-rgw.sh start): "
                        f"{' | '.join(last)}")
        started = True
    gw = Gateway(_read_env())
    saved = {k: os.environ.get(k) for k in gw.env}
    os.environ.update(gw.env)
    try:
        yield gw
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300,
                           env={**os.environ, "CEPH_BASE": BASE})


@pytest.fixture
def s3_url(rgw, tmp_path, monkeypatch):
    """A fresh unit address in the shared test bucket, and a private read cache."""
    monkeypatch.setenv("WORMFS_S3_CACHE", str(tmp_path / "s3cache"))
    return f"s3://wormfs-tests/{uuid.uuid4().hex[:12]}"
