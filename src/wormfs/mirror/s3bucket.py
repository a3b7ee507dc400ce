"""One S3 Object Lock bucket prefix, as wormfs uses it: the only module that speaks S3.

Every object wormfs writes is one PUT (never multipart: Ceph 16.2 ignores lock headers on
CreateMultipartUpload, research/scaleout.md) carrying Content-MD5, COMPLIANCE mode, a
retain-until and the BLAKE3 of its bytes (metadata ``b3``). Nothing counts as stored until
it has been read back: ``put`` HEADs the version it wrote and checks its length, checksum,
mode and retain-until; ``extend`` and ``legal_hold`` read the lock back the same way.

Where the bucket is: ``s3://BUCKET/PREFIX``; the endpoint comes from the unit (``--s3-endpoint``
at mkfs) or the usual AWS configuration (AWS_ENDPOINT_URL, ~/.aws/config), and so do the
credentials and the region. Requests are bounded (timeouts, a few retries): an unreachable
bucket is an error within seconds, never a hang, so the primary goes on and marks its
records 'pending'.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import io
import threading

import blake3

from ..errors import IntegrityError, StoreError

SCHEME = "s3://"
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 30
ATTEMPTS = 2

_POOL, _POOL_LOCK = None, threading.Lock()


def _side():
    """A few threads for requests that can go beside another one (boto3 clients are
    thread-safe): the listing that proves a version first, beside the HEAD that reads it
    back."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="wormfs-s3")
        return _POOL


class Unreachable(StoreError):
    """The bucket could not be reached or refused to work (network, credentials, 5xx).
    ``code`` is the S3 error code when the store answered with one."""

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


def is_s3(text):
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_url(text):
    """'s3://BUCKET/PREFIX' -> (bucket, prefix without slashes at either end)."""
    if not is_s3(text):
        raise StoreError(f"{text!r} is not an s3:// address")
    bucket, _, prefix = text[len(SCHEME):].partition("/")
    prefix = prefix.strip("/")
    if not bucket or not all(c.isalnum() or c in "-." for c in bucket) or bucket != bucket.lower():
        raise StoreError(f"{text!r}: bad bucket name (lower-case letters, digits, '-' and '.')")
    if not prefix:
        raise StoreError(f"{text!r}: give a prefix (s3://BUCKET/PREFIX): a unit keeps its "
                         f"objects under one")
    if any(p in ("", ".", "..") for p in prefix.split("/")):
        raise StoreError(f"{text!r}: bad prefix")
    return bucket, prefix


def to_datetime(us):
    return datetime.datetime.fromtimestamp(us / 1e6, tz=datetime.timezone.utc)


def to_us(dt):
    return int(dt.timestamp() * 1_000_000)


def _client(endpoint):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreError("the S3 client (boto3) is not installed: pip install boto3") from None
    cfg = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                 retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=cfg)


class Bucket:
    def __init__(self, url, endpoint=None, clock=None):
        """``clock``: a BucketClock (s3clock.py) told the Date of every response."""
        self.url = url
        self.name, self.prefix = parse_url(url)
        self.endpoint = endpoint
        self.clock = clock
        self.s3 = _client(endpoint)

    def key(self, rel):
        return f"{self.prefix}/{rel}"

    # -- errors ---------------------------------------------------------------------------

    def _call(self, what, fn, **kw):
        from botocore.exceptions import BotoCoreError, ClientError
        sent = self.clock.sent() if self.clock is not None else None
        try:
            r = fn(Bucket=self.name, **kw)
            if sent is not None:
                self.clock.note(r.get("ResponseMetadata", {}).get("HTTPHeaders"), sent)
            return r
        except ClientError as e:
            if sent is not None:
                self.clock.note(e.response.get("ResponseMetadata", {}).get("HTTPHeaders"),
                                sent)
            err = e.response.get("Error", {})
            code = err.get("Code", "?")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
                raise FileNotFoundError(f"{self.url}: {what}: no such object") from None
            if code == "NoSuchBucket":
                raise Unreachable(f"{self.url}: the bucket {self.name} does not exist",
                                  code) from None
            if code in ("AccessDenied", "Forbidden", "403", "InvalidAccessKeyId",
                        "SignatureDoesNotMatch"):
                raise PermissionError(f"{self.url}: {what}: refused by the store ({code}: "
                                      f"{err.get('Message') or 'access denied'})") from None
            raise Unreachable(f"{self.url}: {what}: {code}"
                              f"{' (HTTP ' + str(status) + ')' if status else ''}: "
                              f"{err.get('Message') or ''}".rstrip(": "), code) from None
        except BotoCoreError as e:
            raise Unreachable(f"{self.url}: {what}: {e}") from None

    # -- the bucket -----------------------------------------------------------------------

    def check_lockable(self, create=False):
        """The bucket must have Object Lock (and so versioning) on. With ``create`` a missing
        bucket is created with Object Lock and a one-day COMPLIANCE default retention, the
        net under any object a client might send without lock headers. Returns a list of
        notes for the operator."""
        notes = []
        try:
            cfg = self._call("object lock configuration",
                             self.s3.get_object_lock_configuration)
        except Unreachable as e:
            if e.code == "ObjectLockConfigurationNotFoundError":
                raise StoreError(f"{self.url}: bucket {self.name} has no Object Lock; create "
                                 f"it with Object Lock enabled (docs/OPERATIONS.md)") from None
            if not create or e.code != "NoSuchBucket":
                raise
            self._call("create bucket", self.s3.create_bucket,
                       ObjectLockEnabledForBucket=True)
            self._call("default retention", self.s3.put_object_lock_configuration,
                       ObjectLockConfiguration={
                           "ObjectLockEnabled": "Enabled",
                           "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
            notes.append(f"created bucket {self.name} with Object Lock and a one-day "
                         f"COMPLIANCE default retention")
            return notes
        lock = cfg.get("ObjectLockConfiguration", {})
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise StoreError(f"{self.url}: Object Lock is not enabled on bucket {self.name}; "
                             f"a WORM duplicate needs it (docs/OPERATIONS.md)")
        rule = lock.get("Rule", {}).get("DefaultRetention")
        if not rule:
            notes.append(f"bucket {self.name} has no default retention; wormfs locks every "
                         f"object itself, but a COMPLIANCE default retention is a safety net "
                         f"(docs/OPERATIONS.md)")
        elif rule.get("Mode") != "COMPLIANCE":
            notes.append(f"bucket {self.name}'s default retention is {rule.get('Mode')}, "
                         f"not COMPLIANCE")
        ver = self._call("versioning", self.s3.get_bucket_versioning)
        if ver.get("Status") != "Enabled":
            raise StoreError(f"{self.url}: versioning is not enabled on bucket {self.name}")
        return notes

    def is_empty(self):
        r = self._call("list", self.s3.list_object_versions, Prefix=self.prefix + "/",
                       MaxKeys=1)
        return not r.get("Versions") and not r.get("DeleteMarkers")

    def versions(self, rel_prefix=""):
        """Yield a Version for every version and delete marker under the unit's prefix
        (+ ``rel_prefix``). The versions of a key come newest first, as S3 lists them (the
        order, not the timestamps, says which is first: two PUTs can share a second); the
        delete markers of a page follow its versions."""
        kw = {"Prefix": self.key(rel_prefix)}
        cut = len(self.prefix) + 1
        while True:
            r = self._call("list versions", self.s3.list_object_versions, **kw)
            rows = [Version(v["Key"][cut:], v["VersionId"], v["Size"],
                            (v.get("ETag") or "").strip('"'), to_us(v["LastModified"]),
                            False) for v in r.get("Versions", [])]
            rows += [Version(d["Key"][cut:], d["VersionId"], 0, "",
                             to_us(d["LastModified"]), True)
                     for d in r.get("DeleteMarkers", [])]
            yield from rows
            if not r.get("IsTruncated"):
                return
            kw["KeyMarker"] = r["NextKeyMarker"]
            if r.get("NextVersionIdMarker"):
                kw["VersionIdMarker"] = r["NextVersionIdMarker"]

    def config_problems(self):
        """How the bucket no longer protects what it holds: Object Lock off, versioning not
        Enabled, a default retention other than COMPLIANCE, a lifecycle rule that expires or
        removes versions. One line each."""
        out = []
        try:
            cfg = self._call("object lock configuration",
                             self.s3.get_object_lock_configuration)
            lock = cfg.get("ObjectLockConfiguration", {})
            if lock.get("ObjectLockEnabled") != "Enabled":
                out.append(f"Object Lock is not enabled on bucket {self.name}")
            rule = lock.get("Rule", {}).get("DefaultRetention")
            if rule and rule.get("Mode") != "COMPLIANCE":
                out.append(f"bucket {self.name}'s default retention is {rule.get('Mode')} "
                           f"({rule.get('Days') or rule.get('Years')} "
                           f"{'days' if rule.get('Days') else 'years'}), not COMPLIANCE: "
                           f"objects sent without a lock could be removed")
        except Unreachable as e:
            if e.code != "ObjectLockConfigurationNotFoundError":
                raise
            out.append(f"bucket {self.name} has no Object Lock configuration")
        ver = self._call("versioning", self.s3.get_bucket_versioning)
        if ver.get("Status") != "Enabled":
            out.append(f"versioning on bucket {self.name} is {ver.get('Status') or 'off'}, "
                       f"not Enabled")
        try:
            rules = self._call("lifecycle", self.s3.get_bucket_lifecycle_configuration)
        except Unreachable as e:
            if e.code not in ("NoSuchLifecycleConfiguration",):
                raise
            rules = {}
        for r in rules.get("Rules", []):
            if r.get("Status") != "Enabled":
                continue
            acts = [k for k in ("Expiration", "NoncurrentVersionExpiration",
                                "AbortIncompleteMultipartUpload", "Transitions",
                                "NoncurrentVersionTransitions") if r.get(k)]
            if not acts:
                continue
            scope = r.get("Filter", {}).get("Prefix", r.get("Prefix", ""))
            if scope and not (self.prefix + "/").startswith(scope) and \
                    not scope.startswith(self.prefix + "/"):
                continue   # another prefix's rule
            out.append(f"bucket {self.name} has a lifecycle rule {r.get('ID') or ''!r} "
                       f"({', '.join(acts)}) over this unit's objects: whatever it removes "
                       f"once a lock ends is not wormfs's disposal")
        return out

    # -- objects --------------------------------------------------------------------------

    def put(self, rel, data, retain_until_us, legal_hold=False, meta=None):
        """Store ``data`` as a new version of ``rel``, locked in COMPLIANCE mode until
        ``retain_until_us`` (whole seconds, rounded up), and read it back. Returns
        (version id, retain-until us as stored, BLAKE3 hex)."""
        data = bytes(data)
        return self._put(rel, data, len(data), hashlib.md5(data), blake3.blake3(data),
                         retain_until_us, legal_hold, meta)

    def put_file(self, rel, path, size, retain_until_us, legal_hold=False):
        """``put`` of the first ``size`` bytes of a file, streamed (a segment can be GiBs)."""
        md5, b3 = hashlib.md5(), blake3.blake3()
        with open(path, "rb") as f:
            left = size
            while left:
                piece = f.read(min(left, 8 << 20))
                if not piece:
                    raise IntegrityError(f"{path} is shorter than {size} bytes")
                md5.update(piece)
                b3.update(piece)
                left -= len(piece)
            f.seek(0)
            return self._put(rel, _Bounded(f, size), size, md5, b3, retain_until_us,
                             legal_hold, None)

    def _put(self, rel, body, size, md5, b3, retain_until_us, legal_hold, meta):
        b3 = b3.hexdigest()
        until = _whole_second(retain_until_us)
        kw = dict(Key=self.key(rel), Body=body, ContentLength=size,
                  ContentMD5=base64.b64encode(md5.digest()).decode(),
                  ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=to_datetime(until),
                  Metadata={"b3": b3, **(meta or {})})
        if legal_hold:
            kw["ObjectLockLegalHoldStatus"] = "ON"
        r = self._call(f"put {rel}", self.s3.put_object, **kw)
        version = r.get("VersionId")
        if not version:
            raise StoreError(f"{self.url}: the store gave no version id for {rel}: is "
                             f"versioning on?")
        # The read-back and the listing of the key's versions are independent: side by side
        # (one round trip instead of two on the seal's path).
        listing = _side().submit(self.first_version, rel)
        h = self.head(rel, version)
        first = listing.result()
        hold_check = legal_hold
        if first is not None and first != version:
            # The bucket's truth for the key is its first version (s3survey.py). If that
            # holds these very bytes, it is wormfs's own earlier upload (a crash between the
            # PUT and its record): it is the one that counts, locked as this one must be.
            # Otherwise another writer was first, and nothing here counts as stored.
            fh = self.head(rel, first)
            if fh["size"] == size and fh["b3"] == b3 and fh["etag"] in (None, md5.hexdigest()):
                version = first
                if (fh["retain_until"] or 0) < until:
                    self.extend(rel, version, until)
                if legal_hold and not fh["legal_hold"]:
                    self.legal_hold(rel, version, True)
                hold_check = True if legal_hold else None   # an earlier hold may stay
            else:
                raise IntegrityError(f"{self.url}: {rel}: the key's first version {first} "
                                     f"holds other bytes than wormfs wrote: another writer "
                                     f"was first (a forgery put in place before it?)")
            h = self.head(rel, version)   # the earlier upload, as it is locked now
        problems = []
        if h["size"] != size:
            problems.append(f"{h['size']} bytes stored, {size} sent")
        if h["b3"] != b3:
            problems.append("its BLAKE3 metadata differs")
        if h["etag"] and h["etag"] != md5.hexdigest():
            problems.append("its ETag is not the MD5 of what was sent")
        problems += lock_problems(h, until, hold_check)
        if problems:
            raise IntegrityError(f"{self.url}: {rel} version {version} read back wrong: "
                                 f"{'; '.join(problems)}")
        return version, h["retain_until"], b3

    def first_version(self, rel):
        """The id of the oldest version of exactly ``rel`` (None if it has none)."""
        key, first, kw = self.key(rel), None, {"Prefix": self.key(rel)}
        while True:
            r = self._call(f"list versions of {rel}", self.s3.list_object_versions, **kw)
            for v in r.get("Versions", []):
                if v["Key"] == key:
                    first = v["VersionId"]   # newest first: the last one seen is the oldest
            if not r.get("IsTruncated"):
                return first
            kw["KeyMarker"] = r["NextKeyMarker"]
            if r.get("NextVersionIdMarker"):
                kw["VersionIdMarker"] = r["NextVersionIdMarker"]

    def head(self, rel, version=None):
        kw = {"Key": self.key(rel)}
        if version:
            kw["VersionId"] = version
        h = self._call(f"head {rel}", self.s3.head_object, **kw)
        until = h.get("ObjectLockRetainUntilDate")
        return {"size": h.get("ContentLength"), "version": h.get("VersionId"),
                "etag": (h.get("ETag") or "").strip('"') if "-" not in (h.get("ETag") or "")
                else None,
                "b3": h.get("Metadata", {}).get("b3"), "meta": h.get("Metadata", {}),
                "mode": h.get("ObjectLockMode"),
                "retain_until": to_us(until) if until else None,
                "legal_hold": h.get("ObjectLockLegalHoldStatus") == "ON"}

    def get(self, rel, version=None, start=None, length=None):
        kw = {"Key": self.key(rel)}
        if version:
            kw["VersionId"] = version
        if start is not None:
            kw["Range"] = f"bytes={start}-{start + length - 1}"
        r = self._call(f"get {rel}", self.s3.get_object, **kw)
        from botocore.exceptions import BotoCoreError
        try:
            return r["Body"].read()
        except (BotoCoreError, OSError) as e:
            raise Unreachable(f"{self.url}: get {rel}: {e}") from None

    def extend(self, rel, version, retain_until_us):
        """Lengthen a version's COMPLIANCE lock (the store refuses to shorten one) and read
        it back. Returns the retain-until as stored."""
        until = _whole_second(retain_until_us)
        self._call(f"extend {rel}", self.s3.put_object_retention, Key=self.key(rel),
                   VersionId=version, Retention={"Mode": "COMPLIANCE",
                                                 "RetainUntilDate": to_datetime(until)})
        h = self.head(rel, version)
        problems = lock_problems(h, until, None)
        if problems:
            raise IntegrityError(f"{self.url}: {rel} version {version}: the lengthened lock "
                                 f"read back wrong: {'; '.join(problems)}")
        return h["retain_until"]

    def delete_version(self, rel, version):
        """Delete one version for good (no delete marker): only once its lock has ended,
        which the store itself enforces."""
        self._call(f"delete {rel}", self.s3.delete_object, Key=self.key(rel),
                   VersionId=version)

    def legal_hold(self, rel, version, on):
        self._call(f"legal hold {rel}", self.s3.put_object_legal_hold, Key=self.key(rel),
                   VersionId=version, LegalHold={"Status": "ON" if on else "OFF"})
        h = self.head(rel, version)
        if h["legal_hold"] != bool(on):
            raise IntegrityError(f"{self.url}: {rel} version {version}: the legal hold reads "
                                 f"back {'ON' if h['legal_hold'] else 'OFF'}")


class Version:
    """One entry of a version listing: an object version or a delete marker."""
    __slots__ = ("rel", "version", "size", "etag", "modified_us", "delete_marker")

    def __init__(self, rel, version, size, etag, modified_us, delete_marker):
        self.rel, self.version, self.size, self.etag = rel, version, size, etag
        self.modified_us, self.delete_marker = modified_us, delete_marker


class _Bounded(io.RawIOBase):
    """A file seen only up to ``size`` bytes (what was hashed is what is sent), seekable so
    that the client can rewind it for a retry."""

    def __init__(self, f, size):
        super().__init__()
        self.f, self.size = f, size

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.f.tell()

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_END:
            offset, whence = self.size + offset, io.SEEK_SET
        return self.f.seek(min(offset, self.size), whence)

    def readinto(self, buf):
        n = max(0, min(len(buf), self.size - self.f.tell()))
        return self.f.readinto(memoryview(buf)[:n]) if n else 0


def lock_problems(h, until_us, legal_hold):
    """What is wrong with a HEAD's lock, against the retain-until and (unless None) the legal
    hold it must have."""
    out = []
    if h["mode"] != "COMPLIANCE":
        out.append(f"lock mode {h['mode'] or 'none'}, not COMPLIANCE")
    if h["retain_until"] is None or h["retain_until"] < until_us:
        out.append(f"retained until {h['retain_until']}, not {until_us}")
    if legal_hold is not None and bool(legal_hold) != h["legal_hold"]:
        out.append(f"legal hold {'ON' if h['legal_hold'] else 'OFF'}")
    return out


def _whole_second(us):
    """S3 keeps retain-until dates in whole seconds: round up, never down."""
    return -(-us // 1_000_000) * 1_000_000
