"""Stage a task's bucket inputs into the region its cluster runs in, before the job starts.

For every bucket URI in ``task.inputs`` and every bucket ``file_mounts`` source, the store's region
lookup says where the data lives. Data in another region or provider than the cluster is copied
(verified, incremental) into the deterministic staging bucket of the cluster's cloud and region
(``sky-stage-<region>-<hash>``, created with a lifecycle when missing, reused across runs), under
``<scheme>/[<account>/]<bucket>/<key>``. The content-keyed cache in the state DB skips the copy when
the source listing is unchanged since the last verified copy.

The result is a rewritten Task: its bucket ``file_mounts`` point at the near copies, and its env
has ``SKY_INPUTS`` (JSON ``{original URI: URI to read}``) for code that reads ``inputs`` directly.
Local and SSH-pool clusters need no staging bucket (they fetch directly); nothing happens there.

A cost ceiling (``max_staging_cost_usd``: the ``submit`` argument, else the task's
``config.max_staging_cost_usd``) is checked against the estimate of every copy before any copy.

`prestage` starts the same staging into the run plan's region in a background thread while the
cluster launches; `Prestaging.settle(cluster)` joins it before the submit, whose own staging is
then a cache hit (or, after a failover elsewhere, stages again into the real region). `report`
turns an outcome into the JSON record the operator puts in XCom. No Airflow imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.spec import Task
from airflow_provider_sky.spec.file_mounts import is_bucket_uri
from airflow_provider_sky.storage import StorageError, Store, parse_uri, store_for
from airflow_provider_sky.storage.staging import (
    DEFAULT_LIFECYCLE_DAYS,
    SCHEME_OF_CLOUD,
    SourceListing,
    StagingCache,
    ensure_staging_bucket,
    list_source,
    listing_digest,
    stage,
    staging_account,
    staging_bucket_name,
    staging_key,
    staging_uri,
)

log = logging.getLogger(__name__)

StoreOptions = Callable[[str], Mapping[str, Any]]

#: Clouds whose clusters get a staging bucket (local and ssh clusters fetch directly).
STAGING_CLOUDS = ("aws", "gcp", "azure")
INPUTS_ENV = "SKY_INPUTS"
COST_FIELD = "max_staging_cost_usd"
THROUGHPUT_HINT = 100e6  # bytes/s, for the time estimate (the transfer engine's default)
_MiB = 1 << 20
# GCS multi-regions and the region-name prefixes they cover (reads inside them are not egress).
_GCS_MULTI = {"us": ("us-", "northamerica-"), "eu": ("europe-",), "asia": ("asia-",)}


class StagingCostError(ConfigError):
    """The estimated egress cost of staging is above ``max_staging_cost_usd``; nothing was copied."""

    field = COST_FIELD

    def __init__(self, message: str, *, cloud: str | None, region: str | None, estimate: float, limit: float):
        super().__init__(
            message,
            cloud=cloud,
            region=region,
            fix=f"raise {COST_FIELD}, or run the task nearer its data (resources.infra)",
        )
        self.estimate = estimate
        self.limit = limit


@dataclass
class StagedInput:
    """What happened to one bucket input (one log line)."""

    source: str
    staged: str  # the URI the job reads (== source when read in place)
    src_cloud: str
    src_region: str | None
    copied: bool  # staged (copied now or by an earlier run)
    bytes: int = 0
    files: int = 0
    est_cost_usd: float | None = None
    est_seconds: float | None = None
    cache_hit: bool = False
    bytes_copied: int = 0
    seconds: float = 0.0
    note: str = ""


@dataclass
class StagingOutcome:
    task: Task
    mapping: dict[str, str] = field(default_factory=dict)  # original URI -> URI to read
    inputs: list[StagedInput] = field(default_factory=list)
    bucket: str | None = None  # the staging bucket URI, when one was used

    @property
    def env(self) -> dict[str, str]:
        return {INPUTS_ENV: json.dumps(self.mapping, sort_keys=True)} if self.mapping else {}


# --------------------------------------------------------------------------- what to stage


def _is_bucket(uri: str) -> bool:
    return is_bucket_uri(uri) or uri.lower().startswith("az://")


def bucket_sources(task: Task) -> list[str]:
    """Bucket URIs the task reads: its bucket ``inputs`` then its bucket ``file_mounts`` sources."""
    out = [name for name in task.inputs if _is_bucket(name)]
    out += [m.source for m in task.file_mounts.values() if m.source and _is_bucket(m.source)]
    return list(dict.fromkeys(out))


def wanted(task: Task, cloud: str | None) -> bool:
    """Whether a task on a cluster of `cloud` has anything to stage."""
    return cloud in STAGING_CLOUDS and bool(bucket_sources(task))


def cost_limit(task: Task, explicit: float | None = None) -> float | None:
    """The ceiling in USD: `explicit`, else the task's ``config.max_staging_cost_usd``."""
    raw = explicit if explicit is not None else (task.config or {}).get(COST_FIELD)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if value < 0:
        raise ConfigError(
            f"{COST_FIELD}: {raw!r} is not a non-negative number of dollars",
            fix=f"set {COST_FIELD} to e.g. 5.0 (USD), or leave it unset for no limit",
        )
    return value


def same_place(src_cloud: str, src_region: str | None, cloud: str, region: str | None) -> bool:
    """True when reading from (src_cloud, src_region) on a cluster in (cloud, region) is in-region."""
    if src_cloud != cloud or not src_region or not region:
        return False
    src_region, region = src_region.lower(), region.lower()
    if src_region == region:
        return True
    return cloud == "gcp" and region.startswith(_GCS_MULTI.get(src_region, ()))


def mount_uri(uri: str) -> str:
    """A URI `file_mounts` accepts: Azure as ``https://<account>.blob.core.windows.net/...``."""
    loc = parse_uri(uri)
    if loc.scheme == "az":
        return f"https://{loc.account}.blob.core.windows.net/{loc.bucket}/{loc.key}"
    return uri


def catalog_price(
    src_cloud: str, src_region: str | None, dst_cloud: str, dst_region: str | None
) -> float | None:
    """USD/GB from the catalog's egress tables; None when unknown."""
    try:
        from airflow_provider_sky.catalog.egress import Location, egress_price_per_gb

        return egress_price_per_gb(Location(src_cloud, src_region), Location(dst_cloud, dst_region))
    except Exception as exc:  # an unknown region must not stop the task; the log says so
        log.warning(
            "no egress price for %s/%s -> %s/%s: %s", src_cloud, src_region, dst_cloud, dst_region, exc
        )
        return None


# --------------------------------------------------------------------------- staging


@dataclass
class _Plan:
    item: StagedInput
    store: Store
    listing: SourceListing
    dest: str


def _options(store_options: StoreOptions | None, uri: str) -> dict[str, Any]:
    return dict(store_options(uri)) if store_options else {}


def _region(store: Store) -> str | None:
    try:
        region = store.region()
    except Exception as exc:
        log.warning("region lookup for %s failed (%s): staging it to be safe", store.uri(), exc)
        return None
    return region.lower() if region else None


class _Destination:
    """The staging bucket of one cluster's cloud and region, its store and URI builder."""

    def __init__(self, cloud: str, region: str, store_options: StoreOptions | None) -> None:
        self.cloud, self.region = cloud, region
        self.scheme = SCHEME_OF_CLOUD[cloud]
        probe = "az://account/container/" if self.scheme == "az" else f"{self.scheme}://bucket/"
        try:
            self.account = staging_account(self.scheme, _options(store_options, probe))
        except (StorageError, ValueError) as exc:
            raise ConfigError(
                f"input staging: {exc}", cloud=cloud, region=region,
                fix=f"give the {self.scheme}:// storage connection an account/project (storage_conn_ids)",
            ) from exc  # fmt: skip
        self.bucket = staging_bucket_name(cloud, region, self.account)
        self.root = staging_uri(cloud, self.bucket, "", account=self.account if self.scheme == "az" else None)
        options = _options(store_options, self.root)
        if self.scheme == "s3":
            options["region_name"] = region  # S3 wants the bucket's region for its requests
        elif self.scheme == "az":
            options.setdefault("region", region)
        self.options = options
        self._store: Store | None = None

    def uri(self, source: str) -> str:
        return staging_uri(
            self.cloud,
            self.bucket,
            staging_key(source),
            account=self.account if self.scheme == "az" else None,
        )

    def store(self, lifecycle_days: int | None) -> Store:
        """The staging bucket's store, the bucket created (with its lifecycle) when missing."""
        if self._store is None:
            store = store_for(parse_uri(self.root), **self.options)
            try:
                setup = ensure_staging_bucket(store, self.region, lifecycle_days)
            except Exception:
                with contextlib.suppress(Exception):
                    store.close()
                raise
            log.info(
                "staging bucket %s (%s/%s): %s; lifecycle: %s",
                setup.uri, self.cloud, self.region, "created" if setup.created else "exists", setup.lifecycle,
            )  # fmt: skip
            self._store = store
        return self._store

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()


def _log_line(item: StagedInput, cloud: str, region: str) -> None:
    cost = _usd(item.est_cost_usd) if item.est_cost_usd is not None else "unknown"
    eta = f"{item.est_seconds:.1f}s" if item.est_seconds is not None else "?"
    if not item.copied:
        log.info(
            "input %s (%s/%s) -> read in place on %s/%s (%s)",
            item.source, item.src_cloud, item.src_region or "?", cloud, region, item.note or "not staged",
        )  # fmt: skip
        return
    log.info(
        "input %s (%s/%s) -> %s (%s/%s): %s in %d objects, estimated egress %s / %s, cache %s, "
        "%s copied in %.2fs",
        item.source, item.src_cloud, item.src_region or "?", item.staged, cloud, region, _fmt(item.bytes),
        item.files, cost, eta, "hit" if item.cache_hit else "miss", _fmt(item.bytes_copied), item.seconds,
    )  # fmt: skip


def _usd(value: float) -> str:
    return f"${value:.4f}" if value == 0 or value >= 0.0001 else f"${value:.2g}"


def _fmt(n: float) -> str:
    return f"{n / _MiB:.1f} MiB" if n >= _MiB else f"{int(n)} B"


def _plan_one(
    source: str, dest: _Destination, store_options: StoreOptions | None, cache: StagingCache | None,
    price: Callable[..., float | None],
) -> tuple[StagedInput, _Plan | None]:  # fmt: skip
    loc = parse_uri(source)
    store = store_for(loc, **_options(store_options, source))
    region = _region(store)
    if loc.scheme == "az" and not region and dest.scheme == "az" and loc.account == dest.account:
        region = dest.region  # same storage account as the staging container: same region
    item = StagedInput(source, source, loc.cloud, region, copied=False)
    if same_place(loc.cloud, region, dest.cloud, dest.region):
        item.note = "same region"
        store.close()
        return item, None
    try:
        listing = list_source(store, loc.key)
    except Exception:
        store.close()
        raise
    item.bytes, item.files = listing.bytes, len(listing.objects)
    if not listing.objects:
        item.note = "no objects: nothing to stage"
        store.close()
        return item, None
    dst_uri = dest.uri(source)
    record = cache.get(str(parse_uri(dst_uri))) if cache is not None else None
    item.cache_hit = record is not None and record.valid_for(str(loc), listing_digest(listing), time.time())
    per_gb = None if item.cache_hit else price(loc.cloud, region, dest.cloud, dest.region)
    item.est_cost_usd = 0.0 if item.cache_hit else (None if per_gb is None else listing.bytes / 1e9 * per_gb)
    item.est_seconds = 0.0 if item.cache_hit else listing.bytes / THROUGHPUT_HINT
    item.staged, item.copied = mount_uri(dst_uri), True
    return item, _Plan(item, store, listing, dst_uri)


def _check_cost(plans: list[_Plan], limit: float | None, cloud: str, region: str) -> None:
    if limit is None:
        return
    unknown = [p.item.source for p in plans if p.item.est_cost_usd is None]
    if unknown:
        log.warning(
            "%s=%s is not enforced for %s: no egress price is known", COST_FIELD, limit, ", ".join(unknown)
        )
    total = sum(p.item.est_cost_usd or 0.0 for p in plans)
    if total > limit:
        parts = ", ".join(
            f"{p.item.source} ({_fmt(p.item.bytes)} from {p.item.src_cloud}/{p.item.src_region or '?'}, "
            f"{_usd(p.item.est_cost_usd or 0.0)})"
            for p in plans
            if p.item.est_cost_usd
        )
        raise StagingCostError(
            f"{COST_FIELD}: staging the task's inputs into {cloud}/{region} would cost an estimated "
            f"{_usd(total)} in egress, over the limit of {_usd(limit)}: {parts}; nothing was copied",
            cloud=cloud, region=region, estimate=total, limit=limit,
        )  # fmt: skip


def stage_task_inputs(
    task: Task,
    cloud: str | None,
    region: str | None,
    store_options: StoreOptions | None = None,
    *,
    cache: StagingCache | None = None,
    max_cost_usd: float | None = None,
    lifecycle_days: int | None = DEFAULT_LIFECYCLE_DAYS,
    egress_price_per_gb: Callable[..., float | None] = catalog_price,
    **engine_options: Any,
) -> StagingOutcome:
    """Stage the task's bucket inputs near a cluster in (`cloud`, `region`); see the module doc.

    `store_options(uri)` gives each store's credentials; `cache` is the content-keyed staging cache
    (`state.staging_cache.StateStagingCache` in production). Raises StagingCostError (before any
    copy) when the estimated egress of all copies together exceeds `max_cost_usd`."""
    sources = bucket_sources(task)
    if not sources or cloud not in STAGING_CLOUDS:
        return StagingOutcome(task)
    if not region:
        log.warning("input staging skipped: the %s cluster has no region recorded", cloud)
        return StagingOutcome(task)
    dest = _Destination(cloud, region.lower(), store_options)
    plans: list[_Plan] = []
    outcome = StagingOutcome(task)
    try:
        for source in sources:
            try:
                item, plan = _plan_one(source, dest, store_options, cache, egress_price_per_gb)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"input staging: cannot read {source}: {exc}", cloud=cloud, region=region,
                    fix="check the URI and its storage connection (storage_conn_ids) or SDK credentials",
                ) from exc  # fmt: skip
            outcome.inputs.append(item)
            if plan is not None:
                plans.append(plan)
        _check_cost(plans, max_cost_usd, cloud, dest.region)
        if plans:
            _copy(plans, dest, cache, lifecycle_days, egress_price_per_gb, engine_options, outcome)
    finally:
        for plan in plans:
            with contextlib.suppress(Exception):
                plan.store.close()
        dest.close()
    for item in outcome.inputs:
        if not item.copied:
            _log_line(item, cloud, dest.region)
    outcome.mapping = {item.source: item.staged for item in outcome.inputs}
    outcome.task = rewrite(task, outcome.mapping)
    return outcome


def _copy(
    plans: list[_Plan], dest: _Destination, cache: StagingCache | None, lifecycle_days: int | None,
    price: Callable[..., float | None], engine_options: Mapping[str, Any], outcome: StagingOutcome,
) -> None:  # fmt: skip
    try:
        dst_store = dest.store(lifecycle_days)
    except StorageError as exc:
        if dest.scheme != "az":
            raise ConfigError(
                f"input staging: cannot create staging bucket {dest.root}: {exc}",
                cloud=dest.cloud, region=dest.region, fix="check the storage connection's permissions",
            ) from exc  # fmt: skip
        # An Azure container lives in its account's region: no account there, so read in place.
        log.warning("input staging into %s skipped (%s): the nodes read the inputs in place", dest.root, exc)
        for plan in plans:
            plan.item.copied, plan.item.staged, plan.item.note = False, plan.item.source, f"not staged: {exc}"
        return
    outcome.bucket = dest.root
    for plan in plans:
        item = plan.item
        started = time.monotonic()
        try:
            result = stage(
                str(parse_uri(item.source)), plan.dest, src_store=plan.store, dst_store=dst_store,
                cache=cache, expire_after_days=lifecycle_days, listing=plan.listing,
                egress_price_per_gb=price, **dict(engine_options),
            )  # fmt: skip
        except Exception as exc:
            raise ConfigError(
                f"input staging: copying {item.source} -> {plan.dest} failed: {exc}",
                cloud=dest.cloud, region=dest.region,
                fix="retry the task (verified objects are not copied again), or check the storage connections",
            ) from exc  # fmt: skip
        item.seconds = time.monotonic() - started
        item.cache_hit = result.cache_hit
        item.bytes_copied = result.report.bytes_copied
        est = result.report.estimate
        if est is not None:
            item.est_seconds = est.seconds
            if est.cost_usd is not None:
                item.est_cost_usd = est.cost_usd
        _log_line(item, dest.cloud, dest.region)


def rewrite(task: Task, mapping: Mapping[str, str]) -> Task:
    """A copy of `task` whose bucket mounts read the staged URIs, with ``SKY_INPUTS`` in its env."""
    if not mapping:
        return task
    mounts = {
        dst: dataclasses.replace(m, source=mapping[m.source]) if m.source in mapping else m
        for dst, m in task.file_mounts.items()
    }
    envs = {**task.envs, INPUTS_ENV: json.dumps(dict(mapping), sort_keys=True)}
    return dataclasses.replace(task, file_mounts=mounts, envs=envs)


# --------------------------------------------------------------------------- reports


def report(outcome: StagingOutcome, cloud: str | None, region: str | None) -> dict[str, Any]:
    """A JSON-able record of one staging (for XCom): the destination and one entry per input."""
    return {
        "cloud": cloud,
        "region": region,
        "bucket": outcome.bucket,
        "inputs": [
            {
                "source": item.source,
                "staged": item.staged,
                "copied": item.copied,
                "src_region": item.src_region,
                "bytes": item.bytes,
                "files": item.files,
                "bytes_copied": item.bytes_copied,
                "cache_hit": item.cache_hit,
                "est_cost_usd": item.est_cost_usd,
                "seconds": round(item.seconds, 3),
                **({"note": item.note} if item.note else {}),
            }
            for item in outcome.inputs
        ],
        "bytes_copied": sum(item.bytes_copied for item in outcome.inputs),
    }


# --------------------------------------------------------------------------- staging while launching


class Prestaging:
    """Staging into the planned region, running in a daemon thread while the cluster launches.

    `result()` waits and returns the outcome (or raises what the staging raised); `settle(cluster)`
    applies the rules for the launched cluster (see `prestage`)."""

    def __init__(self, cloud: str, region: str, run: Callable[[], StagingOutcome]) -> None:
        self.cloud, self.region = cloud, region
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._run = run
        self._outcome: StagingOutcome | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, name=f"sky-prestage-{region}", daemon=True)
        self._thread.start()

    def _target(self) -> None:
        self.started_at = time.time()
        try:
            self._outcome = self._run()
        except BaseException as exc:  # kept for the caller's thread: never lost
            self._error = exc
        finally:
            self.finished_at = time.time()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> StagingOutcome:
        """The outcome, after waiting up to `timeout` seconds; raises what the staging raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"staging into {self.cloud}/{self.region} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def settle(self, cluster: Any) -> dict[str, Any]:
        """Wait for the staging and judge it against the launched `cluster` (its cloud and region).

        Returns a summary for XCom. Raises StagingCostError when the cluster is where the inputs were
        staged (the submit would refuse the same copies); any other failure is logged, and the
        submit-time staging retries. A cluster elsewhere (failover) leaves the copy unused."""
        here = (cluster.cloud, (cluster.region or "").lower()) == (self.cloud, self.region)
        where = f"{self.cloud}/{self.region}"
        summary: dict[str, Any] = {"cloud": self.cloud, "region": self.region, "used": False}
        try:
            outcome = self.result()
        except StagingCostError as exc:
            summary["error"] = str(exc)
            if here:
                raise
            log.info(
                "staging into the planned %s was refused (%s); the cluster is on %s/%s, where the "
                "submit checks the ceiling again", where, exc, cluster.cloud, cluster.region,
            )  # fmt: skip
            return summary
        except Exception as exc:
            summary["error"] = str(exc)
            log.warning("staging into %s while launching failed: %s; the submit stages again", where, exc)
            return summary
        finally:
            ended, began = self.finished_at or time.time(), self.started_at or time.time()
            summary["seconds"] = round(ended - began, 3)
        summary["bytes_copied"] = sum(item.bytes_copied for item in outcome.inputs)
        summary["bucket"], summary["used"] = outcome.bucket, here
        if here:
            log.info(
                "inputs staged into %s while the cluster launched (%.2fs, %s copied)",
                where, summary["seconds"], _fmt(summary["bytes_copied"]),
            )  # fmt: skip
        else:
            then = "stages the inputs again" if cluster.cloud in STAGING_CLOUDS else "reads them directly"
            log.info(
                "failover put the cluster on %s/%s, not the planned %s: the copy staged there while "
                "launching is unused, the submit %s", cluster.cloud, cluster.region, where, then,
            )  # fmt: skip
        return summary


def prestage(
    task: Task,
    placement: Mapping[str, Any] | None,
    store_options: StoreOptions | None = None,
    *,
    state: Any = None,
    max_cost_usd: float | None = None,
    **staging_options: Any,
) -> Prestaging | None:
    """Start staging the task's inputs into its planned (cloud, region) in a background thread.

    None when there is nothing to do: no placement, a placement off aws/gcp/azure or without a
    region, no bucket inputs, or a task with nothing to run (it is never submitted). `state` is the
    StateStore whose staging cache the submit-time staging consults afterwards (a cache hit then).
    The ceiling is resolved here, so a bad ``max_staging_cost_usd`` fails before the launch."""
    cloud = (placement or {}).get("cloud")
    region = (placement or {}).get("region")
    if not region or not (task.run or task.setup) or not wanted(task, cloud):
        return None
    limit = cost_limit(task, max_cost_usd)
    options = _Memo(store_options) if store_options is not None else None
    if options is not None:  # credentials are looked up in the caller's thread where possible
        for source in bucket_sources(task):
            options(source)
    cache = None
    if state is not None:
        from airflow_provider_sky.state.staging_cache import StateStagingCache

        cache = StateStagingCache(state)
    log.info("staging inputs into the planned %s/%s while the cluster launches", cloud, region)
    return Prestaging(
        str(cloud),
        str(region).lower(),
        lambda: stage_task_inputs(
            task, cloud, region, options, cache=cache, max_cost_usd=limit, **staging_options
        ),
    )


class _Memo:
    """Store options by URI, each looked up once."""

    def __init__(self, options: StoreOptions) -> None:
        self._options = options
        self._seen: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, uri: str) -> Mapping[str, Any]:
        with self._lock:
            if uri not in self._seen:
                self._seen[uri] = dict(self._options(uri))
            return self._seen[uri]
