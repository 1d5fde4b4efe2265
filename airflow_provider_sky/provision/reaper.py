"""Orphan reaper: find clusters tagged as ours that no live owner will ever tear down, and reap them.

The reaper trusts tags, not memory: it lists what each cloud holds with the label
``sky-managed-by=airflow-provider-sky`` (a cloud's ``list_managed()``; the local backend's
``cluster.json`` labels) and judges each cluster against the state store (`orphan_reason`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.provision.naming import MAX_CLUSTER_NAME, _slug, cluster_name_for
from airflow_provider_sky.state import ClusterRecord, ClusterStatus, JobStatus, StateStore

log = logging.getLogger(__name__)

MANAGED_BY_KEY = "sky-managed-by"
MANAGED_BY = "airflow-provider-sky"
KEEP_LABEL = "sky-keep"  # a cluster labelled sky-keep=true is never reaped
DEFAULT_GRACE = timedelta(minutes=30)
DEFAULT_MIN_AGE = timedelta(minutes=5)
DEFAULT_INIT_TIMEOUT = timedelta(hours=2)
_AUTO_NAME_RE = re.compile(r"^sky-(?P<readable>[a-z0-9-]*)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class ManagedCluster:
    """A cluster as its cloud reports it: name, our labels/tags, backend status, creation time."""

    cloud: str
    name: str
    labels: dict[str, str]
    status: str | None = None
    created_at: datetime | None = None
    handle: ClusterHandle | None = None


@runtime_checkable
class ManagedLister(Protocol):
    """Optional cloud method: every cluster carrying our managed-by label, in every region.

    Items are `ManagedCluster` or mappings with its fields (``name``, ``labels``, ``status``,
    ``created_at`` (aware datetime), ``handle`` (a `ClusterHandle` or its dict)), so a cloud
    module need not import this layer.
    """

    def list_managed(self) -> list[Any]: ...


def list_local_managed(cloud: LocalCloud) -> list[ManagedCluster]:
    """Clusters of a local backend whose ``cluster.json`` labels say we manage them."""
    root = cloud.base_dir / "clusters"
    found = []
    for meta_path in sorted(root.glob("*/cluster.json")) if root.is_dir() else []:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        if labels.get(MANAGED_BY_KEY) != MANAGED_BY:
            continue
        created = meta.get("created_at")
        found.append(
            ManagedCluster(
                cloud=cloud.name,
                name=meta_path.parent.name,
                labels=labels,
                status=meta.get("status"),
                created_at=datetime.fromtimestamp(created, UTC) if created else None,
                handle=ClusterHandle.from_dict(meta["handle"]) if meta.get("handle") else None,
            )
        )
    return found


def _as_managed(item: Any, cloud_name: str) -> ManagedCluster:
    """Accept a `ManagedCluster` or a mapping with its fields (clouds sit below this layer)."""
    if isinstance(item, ManagedCluster):
        return item
    data = dict(item)
    handle = data.get("handle")
    return ManagedCluster(
        cloud=data.get("cloud") or cloud_name,
        name=data["name"],
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        status=data.get("status"),
        created_at=data.get("created_at"),
        handle=ClusterHandle.from_dict(handle) if isinstance(handle, Mapping) else handle,
    )


def list_managed(cloud: Cloud) -> list[ManagedCluster] | None:
    """Managed clusters of `cloud`, or None when the cloud cannot enumerate them."""
    if isinstance(cloud, ManagedLister):
        items = [_as_managed(c, cloud.name) for c in cloud.list_managed()]
        return [c for c in items if c.labels.get(MANAGED_BY_KEY) == MANAGED_BY]
    if isinstance(cloud, LocalCloud):
        return list_local_managed(cloud)
    return None


@dataclass(frozen=True)
class Orphan:
    """A cluster the reaper would terminate, and why."""

    cluster: ManagedCluster
    reason: str
    record: ClusterRecord | None = None


@dataclass
class ReapReport:
    """What `reap` found and did; `skipped_clouds` could not be listed."""

    dry_run: bool
    orphans: list[Orphan] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    skipped_clouds: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "orphans": [
                {
                    "cloud": o.cluster.cloud,
                    "name": o.cluster.name,
                    "reason": o.reason,
                    "labels": o.cluster.labels,
                }
                for o in self.orphans
            ],
            "terminated": self.terminated,
            "errors": self.errors,
            "skipped_clouds": self.skipped_clouds,
        }


def is_auto_named(record: ClusterRecord) -> bool:
    """Whether the name is the deterministic per-task name (not a user's name meant for reuse)."""
    dag, task, run = record.owner_dag_id, record.owner_task_id, record.owner_run_id
    if not (dag and task and run):
        return False
    if record.name == cluster_name_for(dag, task, run):
        return True
    match = _AUTO_NAME_RE.match(record.name)  # a mapped task's name (map index not stored)
    room = MAX_CLUSTER_NAME - len("sky--") - 8
    readable = (_slug(f"{dag}-{task}").removeprefix("sky-") or "task")[:room].strip("-")
    return bool(match) and match["readable"] == readable


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _live_on_node(cloud: Cloud | None, item: ManagedCluster) -> bool:
    """Whether the head node has an unfinished job (True when it cannot be asked: be safe)."""
    if cloud is None or item.handle is None:
        return True
    try:
        states = jobs.list_jobs(cloud.runners(item.handle)[0])
    except Exception:  # unreachable node: do not reap on a guess
        return True
    return any(not s.finished for s in states.values())


def orphan_reason(
    item: ManagedCluster,
    record: ClusterRecord | None,
    job_records: Sequence[Any],
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    min_age: timedelta = DEFAULT_MIN_AGE,
    init_timeout: timedelta = DEFAULT_INIT_TIMEOUT,
    cloud: Cloud | None = None,
) -> str | None:
    """Why a managed cluster has no live owner, or None when it must be left alone.

    The rule, in order:

    1. labelled ``sky-keep=true``: never reaped;
    2. unknown to the state store (the core records a cluster before asking the cloud, so nothing
       of ours exists without a row): an orphan once older than `min_age` (a race margin);
    3. the row says TERMINATED or ERROR: an orphan (it should not exist, or its launch failed);
    4. INIT for longer than `init_timeout`: an orphan (its launcher died while provisioning);
    5. UP or STOPPED: an orphan only when nobody will come back for it, that is all of
       - no autostop configured (with autostop, the head node's agent ends it by itself),
       - auto-named for one task (a user-given name is meant for reuse across tasks and runs),
       - no unfinished job, per the store and, when the store still says running, the head node,
       - the last job ended (or, without jobs, the cluster was last used) more than `grace` ago.
    """
    if item.labels.get(KEEP_LABEL, "").lower() in ("1", "true", "yes"):
        return None
    if record is None:
        created = _aware(item.created_at)
        if created is not None and now - created < min_age:
            return None
        return "unknown to the state store"
    if record.status in (ClusterStatus.TERMINATED, ClusterStatus.ERROR):
        return f"state store says {record.status.value}" + (
            f" ({record.status_reason})" if record.status_reason else ""
        )
    if record.status is ClusterStatus.INIT:
        changed = _aware(record.status_changed_at)
        if changed is not None and now - changed > init_timeout:
            return f"stuck in INIT since {changed.isoformat()}"
        return None
    if record.autostop_idle_minutes is not None or not is_auto_named(record):
        return None
    unfinished = [j for j in job_records if not j.is_terminal]
    if unfinished and _live_on_node(cloud, item):
        return None
    ends = [_aware(j.ended_at) for j in job_records if j.ended_at is not None]
    last = max([e for e in ends if e] + [_aware(record.last_used_at) or _aware(record.created_at)])
    if now - last <= grace:
        return None
    what = "last job ended" if ends else "last used"
    return f"task {record.owner_task_id} of {record.owner_dag_id} is done: {what} {last.isoformat()}, no autostop"


def find_orphans(
    store: StateStore,
    clouds: Mapping[str, Cloud],
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    *,
    min_age: timedelta = DEFAULT_MIN_AGE,
    init_timeout: timedelta = DEFAULT_INIT_TIMEOUT,
    report: ReapReport | None = None,
) -> list[Orphan]:
    """Managed clusters of every listable cloud with no live owner (see `orphan_reason`)."""
    now = _aware(now) or datetime.now(UTC)
    orphans = []
    for cloud_name, cloud in clouds.items():
        try:
            managed = list_managed(cloud)
        except Exception as exc:
            log.warning("cannot list managed clusters of %s: %s", cloud_name, exc)
            managed = None
            if report is not None:
                report.errors[f"list:{cloud_name}"] = str(exc)
        if managed is None:
            if report is not None:
                report.skipped_clouds.append(cloud_name)
            continue
        for item in managed:
            record = store.get_cluster(item.name)
            if record is not None and record.cloud not in (None, item.cloud):
                # The row is a cluster of that name on another cloud. While it is INIT, failover may
                # be mid-way (the row names the first cloud tried); otherwise this is a leftover.
                if record.status is ClusterStatus.INIT:
                    reason = orphan_reason(item, record, [], now, grace, min_age, init_timeout, cloud)
                else:
                    reason = f"leftover: the state store places {item.name} on {record.cloud}"
                if reason:
                    orphans.append(Orphan(item, reason, None))  # never touch the other cluster's row
                continue
            job_records = store.list_jobs(cluster_name=item.name) if record is not None else []
            reason = orphan_reason(item, record, job_records, now, grace, min_age, init_timeout, cloud)
            if reason:
                orphans.append(Orphan(item, reason, record))
    return orphans


def _terminate(store: StateStore, cloud: Cloud, orphan: Orphan) -> None:
    item = orphan.cluster
    handle = item.handle or cloud.find(item.name)
    if handle is not None:
        cloud.terminate(handle)
    reason = f"reaped by gc: {orphan.reason}"
    if orphan.record is None:
        if store.get_cluster(item.name) is not None:  # the row is another cloud's cluster: keep it
            return
        store.upsert_cluster(
            item.name,
            cloud=item.cloud,
            status=ClusterStatus.TERMINATED,
            status_reason=reason,
            owner_dag_id=item.labels.get("sky-dag-id"),
            owner_run_id=item.labels.get("sky-run-id"),
            owner_task_id=item.labels.get("sky-task-id"),
        )
        return
    for job in store.list_jobs(cluster_name=item.name):
        if not job.is_terminal:
            store.set_job_status(item.name, job.job_id, JobStatus.CANCELLED)
    store.transition_cluster(item.name, ClusterStatus.TERMINATED, status_reason=reason)


def reap(
    store: StateStore,
    clouds: Mapping[str, Cloud],
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = True,
    **kwargs: Any,
) -> ReapReport:
    """Find orphans and, unless `dry_run`, terminate each and record it in the state store.

    An orphan unknown to the store gets a TERMINATED row (reason and owner from its labels), so
    every reaped cluster leaves a trace. `kwargs` go to `find_orphans`.
    """
    report = ReapReport(dry_run=dry_run)
    report.orphans = find_orphans(store, clouds, now, grace, report=report, **kwargs)
    if dry_run:
        return report
    for orphan in report.orphans:
        name = orphan.cluster.name
        try:
            cloud = clouds.get(orphan.cluster.cloud) or next(
                c for c in clouds.values() if c.name == orphan.cluster.cloud
            )
            _terminate(store, cloud, orphan)
        except Exception as exc:
            log.exception("could not reap %s", name)
            report.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        log.info("reaped %s (%s)", name, orphan.reason)
        report.terminated.append(name)
    return report
