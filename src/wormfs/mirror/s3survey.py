"""What an S3 unit's bucket holds, seen as a stranger with read access sees it, and which of it
is the unit's truth (docs/FORMAT.md §11).

Under a unit's prefix wormfs writes each key exactly once, locked in COMPLIANCE mode:

    unit.json     the unit
    tail/S/O      frames of segment S from offset O, one shipped batch
    seg/S         segment S whole, once the primary finished it
    dseg/S/Q      segment S from its start, once dispose event Q destroyed frames in it
    head/Q        the chain head the unit held (event Q), now and then (s3target.py)

Anyone with the primary's credentials can still *add*: a newer version of a key, a new key,
a delete marker. None of that can remove or change a locked version. So the truth is the
**first version** of each key, read by its version id; every addition is a finding, named in
one line, and never read as data:
- a later version of a key whose bytes differ (an identical one is a harmless re-upload);
- a delete marker (the version beneath it is read);
- a key wormfs never writes;
- (found while assembling the log, s3copy.py) objects of a segment that disagree other than
  by what a disposal destroyed, and tails that do not continue the log where it ends.
"""
from .s3bucket import to_datetime

KINDS = ("unit", "seg", "dseg", "tail", "head")


def parse_rel(rel):
    """(kind, segno, offset, seq) for a key wormfs writes, else None."""
    parts = rel.split("/")
    if rel == "unit.json":
        return "unit", 0, 0, 0
    if len(parts) == 2 and parts[0] == "seg" and parts[1].isdigit():
        return "seg", int(parts[1]), 0, 0
    if len(parts) == 3 and parts[0] == "tail" and parts[1].isdigit() and parts[2].isdigit():
        return "tail", int(parts[1]), int(parts[2]), 0
    if len(parts) == 3 and parts[0] == "dseg" and parts[1].isdigit() and parts[2].isdigit():
        return "dseg", int(parts[1]), 0, int(parts[2])
    if len(parts) == 2 and parts[0] == "head" and parts[1].isdigit():
        return "head", 0, 0, int(parts[1])
    return None


def head_rel(seq):
    return f"head/{seq:012d}"


class Entry:
    """One key: its first version (the truth) and what was added after it."""
    __slots__ = ("rel", "kind", "segno", "offset", "seq", "first", "later", "markers")

    def __init__(self, rel, kind, segno, offset, seq, first, later, markers):
        self.rel, self.kind, self.segno, self.offset, self.seq = rel, kind, segno, offset, seq
        self.first, self.later, self.markers = first, later, markers

    @property
    def size(self):
        return self.first.size

    @property
    def end(self):
        return self.offset + self.first.size


def _when(us):
    return f"{to_datetime(us):%Y-%m-%d %H:%M:%S}Z" if us else "?"


class Survey:
    def __init__(self, url):
        self.url = url
        self.entries = {}
        self.findings = []    # (rel, one line)

    def find(self, rel, text):
        self.findings.append((rel, f"{self.url}/{rel}: {text}"))

    def get(self, rel):
        return self.entries.get(rel)

    def of_kind(self, kind):
        return [e for e in self.entries.values() if e.kind == kind]

    def segs(self):
        return {e.segno: e for e in self.of_kind("seg")}

    def dsegs(self):
        """{segno: [Entry by dispose seq]}."""
        out = {}
        for e in sorted(self.of_kind("dseg"), key=lambda e: (e.segno, e.seq)):
            out.setdefault(e.segno, []).append(e)
        return out

    def tails(self):
        """{segno: [Entry by offset]}."""
        out = {}
        for e in sorted(self.of_kind("tail"), key=lambda e: (e.segno, e.offset)):
            out.setdefault(e.segno, []).append(e)
        return out

    def last_head(self):
        heads = self.of_kind("head")
        return max(heads, key=lambda e: e.seq) if heads else None


def survey(bucket):
    """List every version under the unit's prefix; returns a Survey."""
    groups = {}
    for v in bucket.versions():
        vers, marks = groups.setdefault(v.rel, ([], []))
        (marks if v.delete_marker else vers).append(v)
    sv = Survey(bucket.url)
    for rel in sorted(groups):
        vers, marks = groups[rel]
        parsed = parse_rel(rel)
        if parsed is None:
            sv.find(rel, "an object wormfs never writes under a unit's prefix: ignored")
            continue
        if not vers:
            sv.find(rel, f"only a delete marker ({_when(marks[0].modified_us)}), no version "
                    f"of it: ignored")
            continue
        first, later = vers[-1], vers[:-1]   # newest first: the last is the first written
        for v in later:
            if v.etag != first.etag or v.size != first.size:
                sv.find(rel, f"version {v.version} ({_when(v.modified_us)}) is not the one "
                        f"wormfs wrote (other bytes): ignored; the first version, locked "
                        f"when written, is read")
        for m in marks:
            sv.find(rel, f"a delete marker ({_when(m.modified_us)}) hides it: ignored; its "
                    f"locked version is read")
        kind, segno, offset, seq = parsed
        sv.entries[rel] = Entry(rel, kind, segno, offset, seq, first, later, marks)
    return sv


__all__ = ["survey", "Survey", "Entry", "parse_rel", "head_rel", "KINDS"]
