"""Launch with failover: try a placement's zones, classify each failure, block, ask for the next placement.

    adopt     an existing cluster of that name on any cloud (Airflow retry, second worker) is returned
    loop      placement = next_placement(blocklist)
              for each unblocked zone: launch; TransientError -> same zone again after a bounded
              exponential backoff (same attempt number, so the same idempotency token); any other
              error -> clean up what came up, block by the error's scope, next zone (zone scope) or
              next placement (region / cloud scope)
    end       success -> (handle, attempts); nothing left -> FailoverExhaustedError listing every
              attempt, unless `retry_until_up`, which clears the non-permanent blocks after a backoff
              and goes again until `total_timeout`

Every attempt is recorded with `StateStore.record_attempt` and reported to `on_attempt`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import (
    ConfigError,
    CredentialsError,
    ProvisionError,
    Scope,
    TransientError,
)
from airflow_provider_sky.provision.blocklist import BlockEntry, Blocklist
from airflow_provider_sky.provision.placement import Placement, PlacementSource, as_source
from airflow_provider_sky.state import StateStore

log = logging.getLogger(__name__)

GENERIC_FIX = "allow more regions, zones, instance types or clouds, or set retry_until_up to wait for capacity"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial * factor**n`` capped at `maximum`, with +-`jitter` (a fraction)."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.1

    def delay(self, n: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, n))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class Attempt:
    """One launch attempt (or adoption) and its outcome; `to_dict` is the XCom / task-log form."""

    number: int
    cloud: str
    region: str | None
    zone: str | None
    instance_type: str | None
    use_spot: bool
    hourly_price: float | None
    outcome: str  # launched | adopted | retry | failed
    error: ProvisionError | None
    seconds: float

    @property
    def where(self) -> str:
        text = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        if self.instance_type:
            text += f" {self.instance_type}"
        return text + (" [spot]" if self.use_spot else "")

    def describe(self) -> str:
        if self.error is None:
            return f"{self.where} -> {self.outcome}"
        return f"{self.where} -> {type(self.error).__name__}: {self.error.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "hourly_price": self.hourly_price,
            "outcome": self.outcome,
            "error": self.error.to_dict() if self.error else None,
            "seconds": round(self.seconds, 3),
        }


class FailoverExhaustedError(ProvisionError):
    """No placement worked; the message lists every attempt and what to change."""

    default_scope = Scope.CLOUD

    def __init__(self, cluster_name: str, attempts: list[Attempt], reason: str) -> None:
        failed = [a for a in attempts if a.error is not None]
        lines = [f"  {i}. {a.describe()}" for i, a in enumerate(failed, 1)]
        fixes = list(dict.fromkeys(a.error.fix for a in failed if a.error and a.error.fix))
        message = f"could not launch cluster {cluster_name}: {reason}; {len(failed)} failed attempt(s)"
        message += (":\n" + "\n".join(lines)) if lines else ""
        super().__init__(message, fix="; ".join([*fixes, GENERIC_FIX]))
        self.cluster_name = cluster_name
        self.attempts = list(attempts)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.message}\nfix: {self.fix}"


@functools.lru_cache(maxsize=256)
def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class _Budget(Exception):
    """Internal: max_attempts or total_timeout reached."""


class _Failover:
    def __init__(
        self,
        cluster_name: str,
        num_nodes: int,
        source: PlacementSource,
        clouds: Mapping[str, Cloud],
        store: StateStore,
        *,
        resources: Any,
        labels: Mapping[str, str] | None,
        max_attempts: int,
        total_timeout: float,
        retry_until_up: bool,
        backoff: Backoff,
        transient_retries: int,
        on_attempt: Callable[[Attempt], None] | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.cluster_name = cluster_name
        self.num_nodes = num_nodes
        self.source = source
        self.clouds = dict(clouds)
        self.store = store
        self.resources = resources
        self.labels = dict(labels or {})
        self.max_attempts = max_attempts
        self.retry_until_up = retry_until_up
        self.backoff = backoff
        self.transient_retries = transient_retries
        self.on_attempt = on_attempt
        self.sleep = sleep
        self.clock = clock
        self.deadline = clock() + total_timeout
        self.total_timeout = total_timeout
        self.blocklist = Blocklist()
        self.attempts: list[Attempt] = []
        self.launches = 0
        # Idempotency-token sequence: unique per zone try across calls, stable across transient retries.
        self.token_seq = len(store.list_attempts(cluster_name))

    # ---- bookkeeping ------------------------------------------------------------------------
    def record(
        self, p: Placement, zone: str | None, outcome: str, error: ProvisionError | None, started: float
    ) -> Attempt:
        row = self.store.record_attempt(
            self.cluster_name,
            outcome=outcome,
            cloud=p.cloud,
            region=(error.region if error and error.region else p.region),
            zone=zone,
            instance_type=p.instance_type,
            error_class=error,
        )
        attempt = Attempt(
            row.attempt, p.cloud, row.region, zone, p.instance_type, p.use_spot, p.hourly_price,
            outcome, error, self.clock() - started,
        )  # fmt: skip
        self.attempts.append(attempt)
        log.info("failover %s: attempt %d %s", self.cluster_name, attempt.number, attempt.describe())
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        return attempt

    def exhausted(self, reason: str) -> FailoverExhaustedError:
        return FailoverExhaustedError(self.cluster_name, self.attempts, reason)

    def check_budget(self) -> None:
        if self.launches >= self.max_attempts:
            raise _Budget(f"max_attempts ({self.max_attempts}) reached")
        if self.clock() >= self.deadline:
            raise _Budget(f"total_timeout ({self.total_timeout:g}s) reached")

    def pause(self, seconds: float) -> None:
        self.sleep(max(0.0, min(seconds, self.deadline - self.clock())))

    def classify(self, cloud: Cloud | None, exc: BaseException, p: Placement, zone: str | None) -> ProvisionError:
        error = exc if isinstance(exc, ProvisionError) else None
        if error is None:
            error = cloud.classify_error(exc) if cloud is not None else ProvisionError(str(exc))
        error.cloud = error.cloud or p.cloud
        if error.region is None:  # a location-less error: it happened where we tried
            error.region = p.region
            error.zone = error.zone or zone
        error.instance_type = error.instance_type or p.instance_type
        return error

    def block(self, error: ProvisionError, p: Placement, zone: str | None) -> None:
        self.blocklist.add_error(
            error, cloud=p.cloud, region=p.region, zone=zone, instance_type=p.instance_type, use_spot=p.use_spot
        )

    # ---- adoption ---------------------------------------------------------------------------
    def adopt(self) -> ClusterHandle | None:
        for name, cloud in self.clouds.items():
            started = self.clock()
            try:
                handle = cloud.find(self.cluster_name)
            except Exception as exc:
                p = Placement(name)
                error = self.classify(cloud, exc, p, None)
                if error.scope is Scope.CLOUD:  # e.g. bad credentials: no need to try this cloud at all
                    self.record(p, None, "failed", error, started)
                    self.block(error, p, None)
                continue
            if handle is not None:
                p = Placement(name, handle.region, handle.zone, handle.instance_type, bool(handle.extra.get("use_spot")))
                self.record(p, handle.zone, "adopted", None, started)
                return handle
        return None

    # ---- one zone ---------------------------------------------------------------------------
    def launch_kwargs(self, cloud: Cloud, p: Placement, zone: str | None, seq: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "region": p.region,
            "zone": zone,
            "instance_type": p.instance_type,
            "use_spot": p.use_spot,
            "labels": self.labels,
        }
        if _accepts(type(cloud).launch, "attempt"):
            kwargs["attempt"] = seq
        return kwargs

    def cleanup(self, cloud: Cloud, region: str | None) -> None:
        """Safety net after a failed attempt: terminate anything of this cluster the cloud still has."""
        try:
            if region and _accepts(type(cloud).find, "region"):
                handle = cloud.find(self.cluster_name, region=region)  # type: ignore[call-arg]
            else:
                handle = cloud.find(self.cluster_name)
            if handle is not None:
                log.warning("failover %s: terminating leftovers in %s", self.cluster_name, handle.region)
                cloud.terminate(handle)
        except Exception as exc:
            log.warning("failover %s: cleanup after a failed attempt failed: %s", self.cluster_name, exc)

    def try_zone(self, cloud: Cloud, p: Placement, zone: str | None) -> ClusterHandle | ProvisionError:
        seq = self.token_seq
        self.token_seq += 1
        for retry in range(self.transient_retries + 1):
            self.check_budget()
            self.launches += 1
            started = self.clock()
            try:
                handle = cloud.launch(
                    self.cluster_name,
                    self.num_nodes,
                    p.resources if p.resources is not None else self.resources,
                    **self.launch_kwargs(cloud, p, zone, seq),
                )
            except Exception as exc:
                error = self.classify(cloud, exc, p, zone)
                if isinstance(error, TransientError) and retry < self.transient_retries:
                    self.record(p, zone, "retry", error, started)
                    self.pause(error.retry_after if error.retry_after is not None else self.backoff.delay(retry))
                    continue
                self.record(p, zone, "failed", error, started)
                if not isinstance(error, CredentialsError):
                    self.cleanup(cloud, error.region or p.region)
                return error
            self.record(p, handle.zone or zone, "launched", None, started)
            return handle
        raise AssertionError("unreachable")

    # ---- one placement ----------------------------------------------------------------------
    def zones_of(self, cloud: Cloud, p: Placement) -> list[str | None]:
        if p.zone is not None:
            return [p.zone]
        if p.region is None:
            return [None]
        return list(cloud.zones(p.region)) or [None]

    def try_placement(self, p: Placement) -> ClusterHandle | None:
        started = self.clock()
        cloud = self.clouds.get(p.cloud)
        if cloud is None:
            error = ConfigError(
                f"cloud {p.cloud!r} is not enabled (enabled: {', '.join(sorted(self.clouds)) or 'none'})",
                cloud=p.cloud,
                fix=f"add {p.cloud!r} to enabled_clouds in the sky connection",
            )
            self.record(p, None, "failed", error, started)
            self.block(error, p, None)
            return None
        try:
            zones = self.zones_of(cloud, p)
        except Exception as exc:
            error = self.classify(cloud, exc, p, None)
            self.record(p, None, "failed", error, started)
            self.block(error, p, None)
            return None
        for zone in zones:
            if self.blocklist.blocks_placement(p, zone):
                continue
            outcome = self.try_zone(cloud, p, zone)
            if isinstance(outcome, ClusterHandle):
                return outcome
            self.block(outcome, p, zone)
            if outcome.scope is Scope.NONE:  # transient retries used up: move on from this zone
                self.blocklist.add(
                    BlockEntry(p.cloud, p.region, zone, p.instance_type, p.use_spot, outcome.message, "TransientError")
                )
            elif outcome.scope is not Scope.ZONE:
                break
        if not self.blocklist.blocks_placement(p):  # everything it covers was tried: make the source move on
            self.blocklist.add(
                BlockEntry(p.cloud, p.region, p.zone, p.instance_type, p.use_spot, "all zones tried", "Exhausted")
            )
        return None

    # ---- main loop --------------------------------------------------------------------------
    def run(self) -> tuple[ClusterHandle, list[Attempt]]:
        handle = self.adopt()
        if handle is not None:
            return handle, self.attempts
        rounds = 0
        just_cleared = False
        try:
            while True:
                self.check_budget()
                placement = self.source(self.blocklist)
                if placement is not None:
                    placement = Placement.coerce(placement)
                if placement is None or self.blocklist.blocks_placement(placement):
                    if not self.retry_until_up or just_cleared:
                        raise self.exhausted("no placement left to try")
                    self.pause(self.backoff.delay(rounds))
                    rounds += 1
                    self.blocklist.clear(keep=lambda e: e.permanent)
                    just_cleared = True
                    continue
                just_cleared = False
                handle = self.try_placement(placement)
                if handle is not None:
                    extra = {**handle.extra, "use_spot": placement.use_spot, "failover_attempts": len(self.attempts)}
                    if placement.hourly_price is not None:
                        extra["hourly_price"] = placement.hourly_price
                    return dataclasses.replace(handle, extra=extra), self.attempts
        except _Budget as budget:
            raise self.exhausted(str(budget)) from None


def launch_with_failover(
    cluster_name: str,
    num_nodes: int,
    candidates: PlacementSource | Iterable[Any],
    clouds: Mapping[str, Cloud],
    store: StateStore,
    *,
    resources: Any = None,
    labels: Mapping[str, str] | None = None,
    max_attempts: int = 30,
    total_timeout: float = 3600.0,
    retry_until_up: bool = False,
    backoff: Backoff | None = None,
    transient_retries: int = 3,
    on_attempt: Callable[[Attempt], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ClusterHandle, list[Attempt]]:
    """Launch `cluster_name` somewhere among `candidates`; see the module docstring.

    `candidates` is a placement source ``next_placement(blocklist) -> Placement | None`` or a
    best-first iterable of placements (`Placement`, mappings, tuples, optimizer ``TaskPlacement``).
    `max_attempts` bounds launch calls (transient retries included). Raises `FailoverExhaustedError`.
    """
    return _Failover(
        cluster_name,
        num_nodes,
        as_source(candidates),
        clouds,
        store,
        resources=resources,
        labels=labels,
        max_attempts=max_attempts,
        total_timeout=total_timeout,
        retry_until_up=retry_until_up,
        backoff=backoff or Backoff(),
        transient_retries=transient_retries,
        on_attempt=on_attempt,
        sleep=sleep,
        clock=clock,
    ).run()
