"""An export built a record at a time (admin/export.py): the same files an export held in
memory made, checked with the stock tools, in every format, and in pages of the selection."""
import csv
import io
import json
import os
import subprocess
import tarfile
import zipfile

import pytest

from wormfs.admin import auditlog, export, records
from wormfs.admin.records import Selection


@pytest.fixture
def filled(store):
    st = store
    d = st.mkdir(1, b"mail", 0o755, None).ino
    for i in range(12):
        ino = st.create(d if i % 3 else 1, b"m%02d.eml" % i, 0o644, None).ino
        st.write(ino, 0, b"message %d\n" % i * (i + 1))
        st.seal(ino)
        if i % 4 == 0:
            st.place_hold(ino, "CASE-%d" % i, "inquiry" if i else "", None)
    return st


def files_of(out):
    if out.endswith(".zip"):
        with zipfile.ZipFile(out) as z:
            return {n: z.read(n) for n in z.namelist()}
    if out.endswith(".tar"):
        with tarfile.open(out) as t:
            return {m.name: t.extractfile(m).read() for m in t if m.isfile()}
    found = {}
    for dirpath, _, names in os.walk(out):
        for n in names:
            p = os.path.join(dirpath, n)
            found[os.path.relpath(p, out)] = open(p, "rb").read()
    return found


@pytest.mark.parametrize("suffix", ["", ".zip", ".tar"])
def test_an_export_made_a_record_at_a_time_is_what_the_stock_tools_check(filled, tmp_path,
                                                                         suffix,
                                                                         monkeypatch):
    monkeypatch.setattr(records, "PAGE", 5)          # several pages of the selection
    out = str(tmp_path / ("prod" + suffix))
    summary = export.run(filled, out, Selection())
    got = files_of(out)
    recs = list(records.select(filled, Selection()))
    assert summary["records"] == len(recs) == 12 and summary["serials"] == "1-12"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".wormfs-export-")]
    # index.json is exactly json.dumps of its content (as when it was built in memory).
    index = json.loads(got["index.json"])
    assert got["index.json"] == json.dumps(index, indent=2, ensure_ascii=False).encode() + b"\n"
    assert [r["serial"] for r in index["records"]] == [r.serial for r in recs]
    assert index["export"]["records"] == 12 and index["export"]["selection"] == {"first": 1}
    rows = list(csv.DictReader(io.StringIO(got["index.csv"].decode())))
    assert [int(r["serial"]) for r in rows] == [r.serial for r in recs]
    # audit.jsonl: every event about an exported record, once, in seq order.
    inos = {r.ino for r in recs}
    want = [p + b"\n" for ev, p in auditlog.iter_events(filled.log, filled.ix)
            if auditlog.subjects(ev)[0] & inos]
    assert got["audit.jsonl"] == b"".join(want)
    for r in index["records"]:
        assert r["audit_events"] == sorted(r["audit_events"]) and r["audit_events"]
    html = got["index.html"].decode()
    assert html.count("<tr><td>") >= 12 and html.count('<h3 id="audit-') == 12
    # The sums list every file but themselves, sorted; the stock tools agree.
    for sums in ("SHA256SUMS", "B3SUMS"):
        names = [line.split("  ", 1)[1] for line in got[sums].decode().splitlines()]
        assert names == sorted(set(got) - {"SHA256SUMS", "B3SUMS"})
    if not suffix:
        for tool, sums in (("sha256sum", "SHA256SUMS"), ("b3sum", "B3SUMS")):
            r = subprocess.run([tool, "-c", "--quiet", sums], cwd=out, capture_output=True)
            assert r.returncode == 0, r.stdout + r.stderr
    if suffix == ".zip":
        r = subprocess.run(["unzip", "-tq", out], capture_output=True, text=True)
        assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr
        assert not [n for n in os.listdir(tmp_path) if n.endswith((".entries", ".partial"))]


def zip_members(path):
    with open(path, "rb") as f:
        return {name: b"".join(chunks) for name, chunks in export._zip_members(f)}


def test_a_zip_whose_directory_takes_its_zip64_form_reads_back(filled, tmp_path,
                                                               monkeypatch):
    """Past 65,535 members or 4 GiB a zip's directory takes its zip64 form (a zip64 end
    record, offsets in an extra field): the read-back walks that too. zipfile's limits are
    lowered here so that twelve records take it."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    out = str(tmp_path / "prod.zip")
    export.run(filled, out, Selection())
    with open(out, "rb") as f:
        assert b"PK\x06\x06" in f.read()         # the zip64 end record
    monkeypatch.undo()
    assert zip_members(out) == files_of(out)
    r = subprocess.run(["unzip", "-tq", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("where", ["record", "directory"])
def test_a_zip_damaged_after_it_was_written_fails_the_read_back(filled, tmp_path,
                                                                monkeypatch, where):
    """The read-back reads the zip from the file, as a consumer would: a byte changed in
    a record or in the directory between writing and reading fails the export, and
    nothing is left that looks complete."""
    closed = export._Zip.close_writing

    def close_and_damage(self):
        closed(self)
        with open(self.tmp, "r+b") as f:
            data = f.read()
            at = data.index(b"message 7\n") if where == "record" else \
                data.rindex(b"PK\x01\x02") + 16          # the last entry's CRC-32
            f.seek(at)
            f.write(bytes([data[at] ^ 1]))

    monkeypatch.setattr(export._Zip, "close_writing", close_and_damage)
    out = str(tmp_path / "prod.zip")
    with pytest.raises(export.ExportFailed):
        export.run(filled, out, Selection())
    assert [n for n in os.listdir(tmp_path) if n.startswith(("prod", ".wormfs"))] == []


def test_a_top_level_name_like_a_metadata_file_puts_the_records_under_records(store,
                                                                              tmp_path):
    ino = store.create(1, b"README.txt", 0o644, None).ino
    store.write(ino, 0, b"a record named like the production's own README")
    store.seal(ino)
    out = str(tmp_path / "prod")
    export.run(store, out, Selection())
    got = files_of(out)
    assert got["records/README.txt"].startswith(b"a record named")
    assert got["README.txt"].startswith(b"wormfs export")


def test_pages_of_a_selection_are_the_selection(filled, monkeypatch):
    sels = [Selection(), Selection(path="/mail/*"), Selection(first=3, last=9),
            Selection(held=True), Selection(path="/m*", first=2)]
    whole = [[r.serial for r in records.select(filled, s)] for s in sels]
    for page in (1, 2, 5):
        monkeypatch.setattr(records, "PAGE", page)
        assert [[r.serial for r in records.select(filled, s)] for s in sels] == whole
        for s in sels:
            assert all(len(p) <= page for p in records.select_pages(filled, s))
