"""The admin and examiner commands through a real mount and on stores that are not mounted:
info, ls, retain, hold, release, event, audit (and --verify on both units), export with
stock-tool verification."""
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from html.parser import HTMLParser

import pytest

from tests.conftest import clear_immutable, flip_byte
from wormfs.store import frames as F
from wormfs.store.store import Store

from .conftest import wormfs

FILES = {"mail/2026/01/a.eml": b"From: a\n\nhello\n",
         "mail/2026/02/b.eml": b"From: b\n\n" + os.urandom(300_000),
         "blotter/trades.csv": b"id,qty\n1,100\n",
         "top.txt": b"top\n",
         "empty": b""}


def write_tree(m, files=FILES):
    for rel, data in files.items():
        os.makedirs(os.path.dirname(m.path(rel)), exist_ok=True)
        with open(m.path(rel), "wb") as f:
            f.write(data)


def ls(*args):
    return json.loads(wormfs("ls", *args, "--json").stdout)


def test_info_ls_and_retention_commands_through_the_mount(mnt):
    write_tree(mnt)
    info = json.loads(wormfs("info", mnt.path("mail/2026/01/a.eml"), "--json").stdout)[0]
    assert info["path"] == "/mail/2026/01/a.eml" and info["size"] == len(FILES["mail/2026/01/a.eml"])
    assert info["blake3"] == os.getxattr(mnt.path("mail/2026/01/a.eml"), "user.worm.blake3").decode()
    assert info["writer_user"] == "root" and info["writer_program"] and info["writer_pid"]
    assert info["mirror"] == "synced" and info["state"] == "sealed"
    text = wormfs("info", mnt.path("top.txt")).stdout
    assert "retain until" in text and "writer" in text

    assert [r["path"] for r in ls(mnt.mnt, "--path", "/mail/*")] == [
        "/mail/2026/01/a.eml", "/mail/2026/02/b.eml"]
    assert [r["serial"] for r in ls(mnt.store, "--serial", "2-3")] == [2, 3]
    assert ls(mnt.store, "--held") == []
    assert len(ls(mnt.store, "--from", "2000-01-01", "--to", "2999-12-31")) == len(FILES)
    assert ls(mnt.store, "--to", "2001-01-01") == []
    assert ls(mnt.store, "--expiring-before", "2030-01-01") == []
    assert len(ls(mnt.store, "--expiring-before", "2040-01-01")) == len(FILES)

    target = mnt.path("blotter/trades.csv")
    committed = info_of(target)["committed"]
    r = wormfs("retain", target, "--for", "10y")
    assert r.returncode == 0
    assert info_of(target)["retain_until"][:4] == str(int(committed[:4]) + 10)
    before = mnt.last_seq()
    r = wormfs("retain", target, "--until", "2030-01-01", check=False)   # shorter
    assert r.returncode == 1 and "earlier than the current retain-until" in r.stderr
    refused = mnt.events("refused", since=before + 1)
    assert refused and refused[-1]["path"] == "/blotter/trades.csv"
    assert refused[-1]["actor"]["program"] in ("wormfs", "python")

    r = wormfs("hold", target, mnt.path("top.txt"), "--name", "SEC-2026-1", "--reason",
               "inquiry")
    assert [x["path"] for x in ls(mnt.store, "--held")] == ["/blotter/trades.csv", "/top.txt"]
    assert os.getxattr(target, "user.worm.hold.SEC-2026-1") == b"inquiry"
    r = wormfs("release", target, "--name", "NOPE", check=False)
    assert r.returncode == 1 and "no such hold" in r.stderr
    wormfs("release", target, "--name", "SEC-2026-1")
    assert [x["path"] for x in ls(mnt.store, "--held")] == ["/top.txt"]
    r = wormfs("event", target, "--date", "2026-01-01", check=False)
    assert r.returncode == 1 and "no event-based retention" in r.stderr


def info_of(path):
    return json.loads(wormfs("info", path, "--json").stdout)[0]


@pytest.mark.parametrize("args", [
    ("retain", "--until", "2031-13-01"), ("retain", "--until", "soon"), ("retain", "--for", "7q"),
    ("retain",), ("hold", "--name", "bad name!"), ("event", "--date", "yesterday"),
])
def test_bad_values_are_one_line_exit_2_and_change_nothing(mnt, args):
    write_tree(mnt, {"r.txt": b"r"})
    before = mnt.last_seq()
    r = wormfs(args[0], mnt.path("r.txt"), *args[1:], check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("wormfs: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    assert mnt.last_seq() == before


def test_commands_on_a_store_that_is_not_mounted(mnt):
    write_tree(mnt)
    mnt.umount()
    r = wormfs("hold", "--store", mnt.store, "/top.txt", "--name", "CASE-9")
    assert "holds CASE-9" in r.stdout
    r = wormfs("retain", "--store", mnt.store, "/top.txt", "--until", "2099-01-01")
    assert "2099-01-01" in r.stdout
    ev = mnt.events("hold")[-1]
    assert ev["path"] == "/top.txt" and ev["actor"]["program"] in ("wormfs", "python")
    info = json.loads(wormfs("info", "--store", mnt.store, "/top.txt", "--json").stdout)[0]
    assert info["holds"] == {"CASE-9": ""} and info["retain_until"].startswith("2099-01-01")
    r = wormfs("info", "--store", mnt.store, "/mail", check=False)
    assert r.returncode == 1 and "directory" in r.stderr
    r = wormfs("info", "/tmp", check=False)
    assert r.returncode == 1 and "not inside a wormfs mount" in r.stderr
    assert len(ls(mnt.mirror)) == len(FILES)      # the mirror unit answers too


# -- audit ---------------------------------------------------------------------------------------

def test_audit_formats_and_filters(mnt):
    write_tree(mnt)
    with pytest.raises(OSError):
        os.unlink(mnt.path("top.txt"))
    text = wormfs("audit", mnt.mnt).stdout
    assert "seal" in text and "refused" in text and "/top.txt" in text
    lines = wormfs("audit", mnt.store, "--format", "jsonl").stdout.splitlines()
    evs = [json.loads(x) for x in lines]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    # The lines are the stored bytes: each one's BLAKE3 is the next one's prev.
    import blake3
    for a, b in zip(lines, evs[1:]):
        assert blake3.blake3(a.encode()).hexdigest() == b["prev"]
    mine = [json.loads(x) for x in
            wormfs("audit", mnt.store, "--format", "jsonl", "--path", "/top.txt").stdout.splitlines()]
    assert {e["type"] for e in mine} >= {"create", "seal", "refused"}
    assert all(e.get("ino") == mine[0]["ino"] for e in mine)
    csv_out = wormfs("audit", mnt.store, "--format", "csv", "--path", "/mail/*").stdout
    assert csv_out.splitlines()[0].startswith("seq,time,type,outcome,user")
    since = evs[-1]["time"]
    assert wormfs("audit", mnt.store, "--format", "jsonl", "--since", since).stdout.strip()
    assert wormfs("audit", mnt.store, "--since", "2999-01-01").stdout == ""


def _flip_event_byte(unit, seq):
    with Store(str(unit), readonly=True) as st:
        with st.ix.read() as txn:
            segno, off = st.ix.event_pos(txn, seq)
        # the stored payload's length (compressed, it is shorter than the event's JSON)
        plen = F.parse_header(st.log.read(segno, off, F.FIXED_LEN))[2]
        path = st.log.path(segno)
    where = off + 24 + plen // 2
    flip_byte(path, where, 0x20)
    return path, where


@pytest.mark.parametrize("side", ["store", "mirror"])
def test_audit_verify_names_an_altered_event_on_either_unit(mnt, side):
    write_tree(mnt)
    r = wormfs("audit", mnt.mnt, "--verify")
    assert "OK" in r.stdout and "same on both units" in r.stdout
    mnt.umount()
    seq = 7
    _flip_event_byte(getattr(mnt, side), seq)
    r = wormfs("audit", mnt.store, "--verify", "--json", check=False)
    assert r.returncode == 1
    found = json.loads(r.stdout)["findings"]
    assert found and found[0]["seq"] == seq and f"event {seq}" in found[0]["detail"]
    unit_serial = json.loads((getattr(mnt, side) / "unit.json").read_text())["serial"]
    assert found[0]["unit"] == unit_serial
    r = wormfs("audit", mnt.mirror, "--verify", check=False)   # from the mirror's side too
    assert r.returncode == 1 and f"event {seq}" in r.stdout


# -- export --------------------------------------------------------------------------------------

class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self.links.append(a.get("href"))
        if "id" in a:
            self.ids.add(a["id"])


def _check_production(root, files):
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data
    for tool, sums in (("sha256sum", "SHA256SUMS"), ("b3sum", "B3SUMS")):
        r = subprocess.run([tool, "-c", sums], cwd=root, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count(": OK") == len(files) + 5   # records + index x3, audit, README
    index = json.loads((root / "index.json").read_text())
    assert {r["path"].lstrip("/") for r in index["records"]} == set(files)
    for r in index["records"]:
        assert r["sha256"] == hashlib.sha256(files[r["file"]]).hexdigest()
        assert r["writer_user"] == "root" and r["committed"] and r["retain_until"]
        assert r["audit_events"]
    rows = (root / "index.csv").read_text().splitlines()
    assert len(rows) == len(files) + 1 and rows[0].startswith("file,sha256,serial,path")
    page = _Rows()
    page.feed((root / "index.html").read_text())
    for r in index["records"]:
        assert f"#audit-{r['serial']}" in page.links and f"audit-{r['serial']}" in page.ids
    audit = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    serials = {r["serial"] for r in index["records"]}
    assert {e["serial"] for e in audit if e["type"] == "seal"} == serials
    assert "sha256sum -c SHA256SUMS" in (root / "README.txt").read_text()


def test_export_directory_verifies_with_stock_tools_and_catches_a_changed_byte(mnt, tmp_path):
    write_tree(mnt)
    before = mnt.last_seq()
    out = tmp_path / "production"
    r = wormfs("export", mnt.mnt, "--out", out)
    assert "exported 5 records" in r.stdout
    _check_production(out, FILES)
    ev = mnt.events("export", since=before + 1)
    assert len(ev) == 1 and ev[0]["records"] == 5 and ev[0]["actor"]["program"] in ("wormfs", "python")
    assert ev[0]["index_sha256"] == hashlib.sha256((out / "index.json").read_bytes()).hexdigest()
    victim = out / "mail/2026/02/b.eml"
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[1000] ^= 1
    victim.write_bytes(bytes(data))
    for tool, sums in (("sha256sum", "SHA256SUMS"), ("b3sum", "B3SUMS")):
        r = subprocess.run([tool, "-c", sums], cwd=out, capture_output=True, text=True)
        assert r.returncode != 0 and "b.eml: FAILED" in r.stdout
    r = wormfs("export", mnt.mnt, "--out", out, check=False)   # never overwrites
    assert r.returncode == 2 and "never overwrite" in r.stderr


def test_export_selection_zip_and_tar(mnt, tmp_path):
    write_tree(mnt)
    z = tmp_path / "mail.zip"
    wormfs("export", mnt.store, "--out", z, "--path", "/mail/*")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "z")
    _check_production(tmp_path / "z", {k: v for k, v in FILES.items() if k.startswith("mail/")})
    t = tmp_path / "all.tar"
    wormfs("export", mnt.store, "--out", t, "--serial", "1-")
    with tarfile.open(t) as tf:
        tf.extractall(tmp_path / "t")
    _check_production(tmp_path / "t", FILES)
    assert not list(tmp_path.glob("*.partial"))


def test_export_from_the_mirror_alone_without_a_mount(mnt, tmp_path):
    write_tree(mnt)
    mnt.umount()
    clear_immutable(str(mnt.store))
    shutil.rmtree(mnt.store)                    # the primary is lost
    out = tmp_path / "from-mirror"
    r = wormfs("export", mnt.mirror, "--out", out)
    assert "own chain" in r.stdout
    _check_production(out, FILES)
    assert wormfs("audit", mnt.mirror, "--verify").returncode == 0


# -- dispose -------------------------------------------------------------------------------------

def _write_with_retention(path, data, seconds):
    """A record retained ``seconds``: its directory's floor is set that short (root is a
    records admin); a file's own retain-until could only lengthen the store's 6y."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    os.setxattr(d, "user.worm.retention", f"{seconds}s".encode())
    with open(path, "wb") as f:
        f.write(data)


def test_dispose_through_the_mount_reclaims_only_unshared_data(mnt):
    import time
    common = os.urandom(3 << 20)
    first, second = common + os.urandom(400_000), common + os.urandom(400_000)
    _write_with_retention(mnt.path("short", "first"), first, 2)
    with open(mnt.path("second"), "wb") as f:
        f.write(second)
    stored = mnt.status()["stored_bytes"]
    r = wormfs("dispose", mnt.mnt, "--dry-run", "--json")
    assert json.loads(r.stdout)["records"] == []          # not expired yet
    time.sleep(2.5)
    dry = json.loads(wormfs("dispose", mnt.mnt, "--dry-run", "--json").stdout)
    assert [r["path"] for r in dry["records"]] == ["/short/first"]
    assert 350_000 < dry["bytes"] < 3 << 20                # its unique part only
    before = mnt.last_seq()
    out = wormfs("dispose", mnt.mnt).stdout
    assert "disposed of 1 record" in out and "certificate of destruction" in out
    assert mnt.status()["stored_bytes"] == stored - dry["bytes"]
    assert not os.path.exists(mnt.path("short", "first"))
    with open(mnt.path("second"), "rb") as f:
        assert f.read() == second
    cert = mnt.events("dispose", since=before + 1)[0]
    assert cert["records"] == [{k: dry["records"][0][k]
                                for k in ("serial", "path", "blake3", "size")}]
    r = wormfs("verify", mnt.mnt, check=False)
    assert r.returncode == 0, r.stdout
    assert wormfs("audit", mnt.store, "--verify").returncode == 0
    for unit in (mnt.store, mnt.mirror):
        data = b"".join(p.read_bytes() for p in sorted((unit / "segments").iterdir()))
        assert first[-200_000:-199_900] not in data and second[-200_000:-199_900] in data


# -- selftest ------------------------------------------------------------------------------------

def test_selftest_passes_on_a_sound_store_and_stores_its_report(mnt):
    before = mnt.last_seq()
    r = wormfs("selftest", mnt.mnt, "--json", check=False)
    assert r.returncode == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["ok"] and len(report["checks"]) >= 18
    with open(mnt.path(report["report"].lstrip("/"))) as f:
        stored = json.load(f)
    assert stored["ok"] and stored["checks"] == report["checks"]
    assert os.getxattr(mnt.path(report["report"].lstrip("/")), "user.worm.state") == b"sealed"
    refused = mnt.events("refused", since=before + 1)
    assert len(refused) >= 15 and {e["errno"] for e in refused} == {"EPERM"}
    # The canary is retained a day, not six years.
    canary = mnt.path(report["canary"].lstrip("/"))
    assert info_of(canary)["retain_until"] < "2100"


def test_selftest_fails_when_the_mirrors_audit_chain_is_damaged(mnt):
    write_tree(mnt, {"a": b"a"})    # its seal waits for the mirror: it holds events 1-5
    _flip_event_byte(mnt.mirror, 3)
    r = wormfs("selftest", mnt.mnt, check=False)
    assert r.returncode == 1
    assert "FAIL the audit chain is intact on both units" in r.stdout and "event 3" in r.stdout
