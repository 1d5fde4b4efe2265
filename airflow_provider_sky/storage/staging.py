"""Staging: region buckets for tasks placed away from their data, and a content-keyed copy cache.

- `staging_bucket_name(cloud, region, account)`: ``sky-stage-<region>-<hash>``, the same on every
  worker and run for one (cloud, region, project/account), valid on S3, GCS and Azure.
- `ensure_staging_bucket(store, region)`: creates it when missing, with a lifecycle rule where the
  store supports one (S3 expiration, GCS delete; Azure needs an account management policy, see
  `AZURE_LIFECYCLE_NOTE`).
- `stage(src, dst, cache=...)`: a verified `transfer`, skipped outright when the source listing
  (key, size, etag/checksum) hashes to the digest recorded at the last verified copy to `dst`, so an
  unchanged input is neither re-listed at the destination nor re-copied on the next run.

Plain Python: no Airflow imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_sky.state.staging_cache import StagingCacheRecord

from .base import ObjectInfo, StorageError, Store
from .transfer import TransferEngine, TransferEstimate, TransferReport
from .uri import parse_uri, store_for

log = logging.getLogger("airflow_provider_sky.storage.staging")

STAGING_PREFIX = "sky-stage"
DEFAULT_LIFECYCLE_DAYS = 7
SCHEME_OF_CLOUD = {"aws": "s3", "gcp": "gs", "azure": "az", "local": "file"}
AZURE_LIFECYCLE_NOTE = (
    "not set: Azure Blob has no per-container lifecycle in the data-plane API; add a storage-account "
    "management policy (Portal > Lifecycle management, or azure-mgmt-storage ManagementPolicies) with a "
    f"'delete blobs N days after modification' rule whose prefixMatch is '{STAGING_PREFIX}-'"
)
_DAY = 86400.0

# --------------------------------------------------------------------------- names

_S3_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_AZURE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


def bucket_name_problem(cloud: str, name: str) -> str | None:
    """Why `name` is not a valid bucket/container name on `cloud` (None when it is)."""
    if cloud == "aws":
        if not _S3_NAME.match(name) or ".." in name or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
            return "S3 names are 3-63 lower-case letters, digits, '-' or '.', starting and ending alnum"
        if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
            ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
        ):
            return "S3 reserves this prefix/suffix"
    elif cloud == "gcp":
        if not _GCS_NAME.match(name) or ".." in name:
            return "GCS names are 3-63 lower-case letters, digits, '-', '_' or '.', starting and ending alnum"
        if name.startswith("goog") or "google" in name or "g00gle" in name:
            return "GCS forbids names starting with 'goog' or containing 'google'"
    elif cloud == "azure":
        if not _AZURE_NAME.match(name):
            return "Azure container names are 3-63 lower-case letters, digits and single inner hyphens"
    elif cloud == "local":
        if not name or "/" in name or name in (".", ".."):
            return "a local staging directory name must be one path component"
    else:
        return f"no staging buckets on cloud {cloud!r} (supported: {', '.join(SCHEME_OF_CLOUD)})"
    return None


def staging_bucket_name(cloud: str, region: str | None, account: str | None = None) -> str:
    """``sky-stage-<region>-<hash>``: deterministic per (cloud, region, project/account), valid on
    every cloud (the hash of all three keeps globally-unique S3/GCS names apart between accounts)."""
    cloud = cloud.lower()
    region_norm = (region or "").strip().lower()
    digest = hashlib.sha256(f"{cloud}\n{region_norm}\n{account or ''}".encode()).hexdigest()[:10]
    room = 63 - len(STAGING_PREFIX) - len(digest) - 2
    slug = re.sub(r"[^a-z0-9]+", "-", region_norm).replace("goog", "g-oog").replace("g00g", "g-00g")
    slug = slug.strip("-")[:room].strip("-") or "any"  # (GCS rejects names containing "google")
    name = f"{STAGING_PREFIX}-{slug}-{digest}"
    problem = bucket_name_problem(cloud, name)
    if problem:
        raise ValueError(f"staging bucket name {name!r} is invalid on {cloud}: {problem}")
    return name


def staging_key(source_uri: str) -> str:
    """Where a source lands inside a staging bucket: ``<scheme>/[<account>/]<bucket>/<key>``, keeping
    the source's trailing '/' (a prefix stays a prefix, an object stays an object)."""
    loc = parse_uri(source_uri)
    parts = [loc.scheme, *([loc.account] if loc.account else []), *([loc.bucket] if loc.bucket else [])]
    return "/".join(parts) + "/" + loc.key


def staging_uri(
    cloud: str, bucket: str, key: str = "", *, account: str | None = None, local_root: str = ""
) -> str:
    """The URI of `key` in a staging bucket (`account`: Azure storage account; `local_root`: the
    directory holding local staging directories)."""
    scheme = SCHEME_OF_CLOUD.get(cloud)
    if scheme is None:
        raise ValueError(f"no staging buckets on cloud {cloud!r} (supported: {', '.join(SCHEME_OF_CLOUD)})")
    if scheme == "az":
        if not account:
            raise ValueError("an Azure staging URI needs the storage account name")
        return f"az://{account}/{bucket}/{key}"
    if scheme == "file":
        return f"file://{local_root.rstrip('/')}/{bucket}/{key}"
    return f"{scheme}://{bucket}/{key}"


# --------------------------------------------------------------------------- buckets


@dataclass(frozen=True)
class BucketSetup:
    uri: str
    created: bool
    lifecycle: str  # what was done about object expiry, for the task log


def ensure_staging_bucket(
    store: Store, region: str | None, lifecycle_days: int | None = DEFAULT_LIFECYCLE_DAYS
) -> BucketSetup:
    """Create the store's bucket in `region` when missing, with an expiry of `lifecycle_days` (None:
    no rule). An existing bucket is used as it is (its rules are not touched)."""
    uri = store.uri()
    try:
        exists = store.bucket_exists()
    except Exception as exc:
        raise StorageError(
            f"cannot check staging bucket {uri}: {exc} (a bucket of that name may belong to another account)"
        ) from exc
    if exists:
        return BucketSetup(uri, False, "existing bucket: rules left as they are")
    if store.scheme == "gs" and lifecycle_days:
        return BucketSetup(uri, *_create_gcs(store, region, lifecycle_days))
    store.create_bucket(region)
    if not lifecycle_days:
        lifecycle = "none requested"
    elif store.scheme == "s3":
        lifecycle = _s3_lifecycle(store, lifecycle_days)
    elif store.scheme == "az":
        lifecycle = AZURE_LIFECYCLE_NOTE
    else:
        lifecycle = "none (local directory)"
    log.info("created staging bucket %s in %s; lifecycle: %s", uri, region or "the default region", lifecycle)
    return BucketSetup(uri, True, lifecycle)


def _s3_lifecycle(store: Any, days: int) -> str:
    store.client.put_bucket_lifecycle_configuration(
        Bucket=store.bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "sky-stage-expiry",
                    "Filter": {"Prefix": ""},
                    "Status": "Enabled",
                    "Expiration": {"Days": int(days)},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        },
    )
    return f"objects expire {days} days after creation; incomplete uploads after 1 day"


def _create_gcs(store: Any, region: str | None, days: int) -> tuple[bool, str]:
    """Create a GCS bucket with its delete rules in the same request (no window without them)."""
    from google.api_core.exceptions import Conflict

    from .base import SCRATCH_PREFIX

    bucket = store.client.bucket(store.bucket)
    bucket.add_lifecycle_delete_rule(age=int(days))
    bucket.add_lifecycle_delete_rule(age=1, matches_prefix=[SCRATCH_PREFIX])
    try:
        store.client.create_bucket(bucket, location=region)
    except Conflict:
        return False, "existing bucket (created concurrently): rules left as they are"
    lifecycle = f"objects deleted {days} days after creation; upload scratch after 1 day"
    log.info(
        "created staging bucket %s in %s; lifecycle: %s",
        store.uri(),
        region or "the default region",
        lifecycle,
    )
    return True, lifecycle


# --------------------------------------------------------------------------- listings and the cache


@dataclass(frozen=True)
class SourceListing:
    """The objects a transfer of `key` would copy, keyed relative to `prefix` ('' for one object)."""

    prefix: str
    objects: Mapping[str, ObjectInfo]
    single: bool

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects.values())


def list_source(store: Store, key: str) -> SourceListing:
    """List what `transfer` copies from `key`: the object itself when one has that exact name,
    else everything under ``key/`` (directory markers excluded)."""
    if key and not key.endswith("/"):
        info = store.head(key)
        if info is not None:
            return SourceListing(key, {"": info}, True)
        key += "/"
    objects = {o.key[len(key) :]: o for o in store.list(key) if not o.key.endswith("/")}
    return SourceListing(key, objects, False)


def _fingerprint(info: ObjectInfo) -> str:
    if info.etag:
        return f"etag:{info.etag.strip(chr(34))}"
    sums = info.checksums()
    if sums:
        return ",".join(f"{k}:{v}" for k, v in sorted(sums.items()))
    return f"mtime:{info.mtime!r}"


def listing_digest(listing: SourceListing | Mapping[str, ObjectInfo]) -> str:
    """sha256 over the sorted (relative key, size, etag or checksum) of every object."""
    objects = listing.objects if isinstance(listing, SourceListing) else listing
    h = hashlib.sha256()
    for rel in sorted(objects):
        info = objects[rel]
        h.update(f"{rel}\t{info.size}\t{_fingerprint(info)}\n".encode())
    return h.hexdigest()


class StagingCache(Protocol):
    """Where `stage` records verified copies (`state.staging_cache.StateStagingCache` in production)."""

    def get(self, dest_uri: str) -> StagingCacheRecord | None: ...

    def put(self, record: StagingCacheRecord) -> None: ...


class MemoryStagingCache:
    """A process-local `StagingCache` (tests, one-off scripts)."""

    def __init__(self) -> None:
        self.records: dict[str, StagingCacheRecord] = {}

    def get(self, dest_uri: str) -> StagingCacheRecord | None:
        return self.records.get(dest_uri)

    def put(self, record: StagingCacheRecord) -> None:
        self.records[record.dest_uri] = record


# --------------------------------------------------------------------------- staging copy


class CostLimitError(StorageError):
    """The estimated egress cost is above the caller's limit; nothing was copied."""

    def __init__(self, src_uri: str, dst_uri: str, estimate: TransferEstimate, limit: float):
        self.estimate = estimate
        self.limit = limit
        super().__init__(
            f"refusing to copy {src_uri} -> {dst_uri}: estimated egress cost ${estimate.cost_usd:.4f} "
            f"({estimate.files} objects, {estimate.bytes / 1e9:.3f} GB at ${estimate.price_per_gb}/GB, "
            f"{estimate.src_region or '?'} -> {estimate.dst_region or '?'}) exceeds max_cost_usd="
            f"${limit:.4f}; raise max_cost_usd or run the task nearer its data"
        )


class StagingEngine(TransferEngine):
    """`TransferEngine` that reuses a listing already made, reports the estimate to a callback before
    any byte moves, and enforces a cost limit with `CostLimitError`."""

    def __init__(
        self,
        *args: Any,
        listing: SourceListing | None = None,
        on_estimate: Callable[[TransferEstimate], None] | None = None,
        max_cost_usd: float | None = None,
        cancel_event: threading.Event | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._listing = listing
        self._on_estimate = on_estimate
        self._limit = max_cost_usd
        if cancel_event is not None:
            self.cancelled = cancel_event
        self.dst_listing: dict[str, ObjectInfo] = {}
        self.skipped_rels: set[str] = set()
        self.resolved_dst_key = self.dst_key

    def _resolve(self) -> tuple[str, str, ObjectInfo | None]:
        resolved = super()._resolve()
        self.resolved_dst_key = resolved[1]
        return resolved

    def _list(self, store: Store, prefix: str) -> dict[str, ObjectInfo]:
        if store is self.src and self._listing is not None and prefix == self._listing.prefix:
            return dict(self._listing.objects)
        objects = super()._list(store, prefix)
        if store is self.dst:
            self.dst_listing = objects
        return objects

    def plan(self, pool: Any) -> Any:
        items, extraneous, skipped = super().plan(pool)
        self.skipped_rels = set(skipped)
        return items, extraneous, skipped

    def estimate(self, items: Any) -> TransferEstimate:
        est = super().estimate(items)
        if self._on_estimate is not None:
            self._on_estimate(est)
        if self._limit is not None and est.cost_usd is not None and est.cost_usd > self._limit:
            raise CostLimitError(self.report.src_uri, self.report.dst_uri, est, self._limit)
        return est


@dataclass
class StageResult:
    report: TransferReport
    cache_hit: bool
    digest: str
    source_files: int
    source_bytes: int


def stage(
    src_uri: str,
    dst_uri: str,
    *,
    src_store: Store | None = None,
    dst_store: Store | None = None,
    src_options: Mapping[str, Any] | None = None,
    dst_options: Mapping[str, Any] | None = None,
    cache: StagingCache | None = None,
    expire_after_days: float | None = None,
    clock: Callable[[], float] = time.time,
    listing: SourceListing | None = None,
    **engine_options: Any,
) -> StageResult:
    """Copy `src_uri` to `dst_uri` like `transfer`, unless `cache` vouches for an unchanged copy.

    The source is listed once; when its digest equals the one recorded for `dst_uri` (same source,
    not expired) nothing else is done. Otherwise the listing feeds the copy and, once every object is
    verified, the digest is recorded. `expire_after_days` (the destination's lifecycle) bounds how
    long a record is trusted: up to the oldest destination object's age minus a day's margin.
    Engine options are `transfer`'s, plus `on_estimate`, `max_cost_usd`, `cancel_event`.
    `listing`: the source's `list_source` result when the caller already made it (not re-listed)."""
    src_loc, dst_loc = parse_uri(src_uri), parse_uri(dst_uri)
    src_id, dst_id = str(src_loc), str(dst_loc)
    owned: list[Store] = []
    if src_store is None:
        src_store = store_for(src_loc, **dict(src_options or {}))
        owned.append(src_store)
    if dst_store is None:
        dst_store = store_for(dst_loc, **dict(dst_options or {}))
        owned.append(dst_store)
    try:
        started = clock()
        if listing is None:
            listing = list_source(src_store, src_loc.key)
        digest = listing_digest(listing)
        result = StageResult(
            TransferReport(src_id, dst_id), False, digest, len(listing.objects), listing.bytes
        )
        record = cache.get(dst_id) if cache is not None else None
        if record is not None and record.valid_for(src_id, digest, started):
            r = result.report
            r.files_skipped, r.bytes_skipped = record.files, record.bytes
            r.verified, r.cost_usd, r.seconds = True, 0.0, clock() - started
            result.cache_hit = True
            log.info("staging cache hit: %s unchanged since its verified copy to %s", src_id, dst_id)
            return result
        engine = StagingEngine(
            src_store, src_loc.key, dst_store, dst_loc.key, listing=listing, **engine_options
        )
        result.report = engine.run()
        if cache is not None and result.report.verified and not result.report.dry_run:
            _record(cache, engine, listing, (src_id, dst_id, digest), started, expire_after_days)
        return result
    finally:
        for store in owned:
            with contextlib.suppress(Exception):
                store.close()


def _oldest_copy(engine: StagingEngine, listing: SourceListing, started: float) -> float | None:
    """When the oldest destination object of this copy was written (skipped objects are from an
    earlier run, and the lifecycle counts from then); None when unknown."""
    oldest = started
    for rel in engine.skipped_rels:
        info = engine.dst.head(engine.resolved_dst_key) if listing.single else engine.dst_listing.get(rel)
        if info is None or info.mtime is None:
            return None
        oldest = min(oldest, info.mtime)
    return oldest


def _record(
    cache: StagingCache,
    engine: StagingEngine,
    listing: SourceListing,
    ids: tuple[str, str, str],
    started: float,
    expire_after_days: float | None,
) -> None:
    src_id, dst_id, digest = ids
    expires_at = None
    if expire_after_days is not None:
        oldest = _oldest_copy(engine, listing, started)
        if oldest is None:
            return  # age unknown: do not vouch for the copy
        expires_at = oldest + (expire_after_days - 1) * _DAY
        if expires_at <= started:
            return
    cache.put(
        StagingCacheRecord(dst_id, src_id, digest, len(listing.objects), listing.bytes, started, expires_at)
    )


# --------------------------------------------------------------------------- account identity


def _azure_account(options: Mapping[str, Any]) -> str | None:
    conn_str = options.get("connection_string")
    if conn_str:
        parts = dict(p.split("=", 1) for p in str(conn_str).split(";") if "=" in p)
        if parts.get("AccountName"):
            return parts["AccountName"]
        url = parts.get("BlobEndpoint")
    else:
        url = options.get("account_url")
    if not url:
        return None
    from urllib.parse import urlsplit

    split = urlsplit(str(url))
    host = split.hostname or ""
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0]
    path = split.path.strip("/")  # emulators: http://127.0.0.1:10000/<account>
    return path.split("/", 1)[0] or None


def staging_account(scheme: str, options: Mapping[str, Any]) -> str:
    """What tells one account's staging buckets apart, from store options alone: the AWS account
    (``account_id``, else endpoint and key id on S3-compatible endpoints, else STS), the GCP project
    (option, else the ADC project) or the Azure storage account. Raises StorageError when unknown."""
    if scheme == "s3":
        if options.get("account_id"):
            return str(options["account_id"])
        if options.get("endpoint_url"):
            return f"{options['endpoint_url']}|{options.get('aws_access_key_id') or ''}"
        import boto3

        keys = (
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
            "region_name",
            "profile_name",
        )
        session = boto3.session.Session(**{k: options.get(k) for k in keys})
        try:
            return str(session.client("sts").get_caller_identity()["Account"])
        except Exception as exc:
            raise StorageError(f"cannot tell the AWS account for a staging bucket: {exc}") from exc
    if scheme == "gs":
        if options.get("project"):
            return str(options["project"])
        import google.auth

        try:
            _, project = google.auth.default()
        except Exception as exc:
            raise StorageError(f"cannot tell the GCP project for a staging bucket: {exc}") from exc
        if not project:
            raise StorageError("no GCP project for a staging bucket: set the connection's `project` extra")
        return str(project)
    if scheme == "az":
        account = _azure_account(options)
        if not account:
            raise StorageError(
                "no Azure storage account for a staging container: set `account_url` or "
                "`connection_string` on the wasb connection"
            )
        return account
    return "local"
