"""Launch a task on the on-prem pool first and spill over to the cloud by policy.

    reuse     the cluster already holds pool slots (Airflow retry) or lives in the cloud -> keep it
    can't     the pool can never run the task (accelerator, size, pinned elsewhere) -> cloud now
    queue     join the pool's shared queue (one ticket per cluster name), then loop:
                free units for us and nobody of our kind ahead -> allocate atomically (the pool's
                  slot leases); lost the race -> treat as full
                full -> `spillover.decide`: cloud -> leave the queue, launch on the other clouds;
                  wait -> heartbeat, sleep with backoff (never past the point where the policy flips)
    always    leave the queue on the way out (also on errors)

The first decision and every change of choice are recorded in the state store (``sky-airflow pools``)
and passed to `on_decision` (the operator's task log); the final one is returned for XCom.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow_provider_sky.clouds.errors import CapacityError, ConfigError, ProvisionError
from airflow_provider_sky.provision import spillover as sp
from airflow_provider_sky.provision.core import LaunchResult, Owner, SkyCore
from airflow_provider_sky.provision.failover import Backoff
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, pool_queue

log = logging.getLogger(__name__)

DEFAULT_POLL = Backoff(initial=2.0, factor=1.5, maximum=30.0, jitter=0.1)


def _sub_core(core: SkyCore, names: Sequence[str], **settings: Any) -> SkyCore:
    """A core that sees only `names` of the clouds (same store and settings)."""
    merged = dataclasses.replace(core.settings, **settings) if settings else core.settings
    return SkyCore(core.store, {n: core.clouds[n] for n in names if n in core.clouds}, merged)


def _owner_ids(owner: Owner | None) -> tuple[str | None, str | None]:
    return (owner.dag_id, owner.task_id) if owner else (None, None)


def launch_with_spillover(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner | None = None,
    policy: sp.SpillPolicy | None = None,
    pool_cloud_name: str = "ssh",
    cloud_names: Sequence[str] | None = None,
    *,
    preferred: Any = None,
    cloud_hourly_price: float | None = None,
    cloud_provision_s: float | None = None,
    pool_bucket_access: bool | None = None,
    poll: Backoff = DEFAULT_POLL,
    stale_after: float = pool_queue.DEFAULT_STALE_AFTER_S,
    on_decision: Callable[[sp.SpillDecision], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> tuple[LaunchResult, sp.SpillDecision]:
    """Run `task` on the pool if it can get slots (now or, by `policy`, after waiting), else in the cloud.

    `cloud_names`: where to spill (default: every enabled cloud but the pool). `cloud_hourly_price` /
    `cloud_provision_s` override the quote (e.g. the local backend standing in for a cloud);
    `pool_bucket_access` overrides the pool's ``bucket_access`` for the heterogeneity report.
    Returns the launch result and the final decision (``decision.to_dict()`` is the XCom form).
    """
    policy = policy or sp.prefer_onprem()
    owner = owner or Owner()
    dag_id, task_id = _owner_ids(owner)
    pool = core.clouds.get(pool_cloud_name)
    if pool is None or not hasattr(pool, "inventory"):
        raise ConfigError(
            f"spillover needs the on-prem pool cloud {pool_cloud_name!r}, which is not enabled",
            cloud=pool_cloud_name,
            fix="enable 'ssh' with ssh_pool_conn_id in the sky connection, or turn spillover off",
        )
    pool_name: str = getattr(pool, "pool_name", pool_cloud_name)
    names = (
        tuple(cloud_names)
        if cloud_names is not None
        else tuple(n for n in core.clouds if n != pool_cloud_name)
    )
    names = tuple(n for n in names if n != pool_cloud_name)
    bucket_access = (
        pool_bucket_access if pool_bucket_access is not None else getattr(pool, "bucket_access", None)
    )

    def record(decision: sp.SpillDecision) -> None:
        log.info("%s: %s", cluster_name, decision.log_line())
        pool_queue.record_decision(core.store, pool_name, cluster_name, decision.to_dict(), dag_id, task_id)
        if on_decision is not None:
            on_decision(decision)

    def go_cloud(decision: sp.SpillDecision) -> tuple[LaunchResult, sp.SpillDecision]:
        if not names:
            raise ConfigError(
                f"cluster {cluster_name}: {decision.reason}",
                cloud=pool_cloud_name,
                fix="enable a cloud to spill over to, or change the task's resources to fit the pool",
            )
        first = decision.cloud_placement or preferred
        if first is not None and Placement.coerce(first).cloud not in names:
            first = None
        result = _sub_core(core, names).launch(task, cluster_name, owner, preferred=first)
        return result, decision

    def go_pool(decision: sp.SpillDecision) -> tuple[LaunchResult, sp.SpillDecision]:
        result = _sub_core(core, [pool_cloud_name], retry_until_up=False).launch(task, cluster_name, owner)
        return result, decision

    # -- reuse: an Airflow retry or a second worker finds the cluster already placed --
    if pool.find(cluster_name) is not None:
        decision = sp.SpillDecision("onprem", f"cluster {cluster_name} already holds pool slots: reuse",
                                    policy=policy.describe())  # fmt: skip
        record(decision)
        return go_pool(decision)
    existing = core.store.get_cluster(cluster_name)
    if (
        existing is not None
        and existing.status in (ClusterStatus.UP, ClusterStatus.STOPPED)
        and existing.cloud in names
    ):
        decision = sp.SpillDecision("cloud", f"cluster {cluster_name} already runs on {existing.cloud}: reuse",
                                    policy=policy.describe())  # fmt: skip
        record(decision)
        return go_cloud(decision)

    runtime = pool_queue.learned_runtime(core.store, dag_id, task_id, task.estimated_hours)
    try:
        inventory = pool.inventory()
    except ProvisionError as exc:
        inventory, fit = [], sp.PoolFit(False, f"ssh pool {pool_name!r} unreachable: {exc}")
    else:
        fit = sp.pool_fit(task, inventory, pool_cloud_name, pool_name)

    def quote() -> sp.CloudQuote:
        return sp.quote_cloud(
            task, names, runtime.seconds, store=core.store, dag_id=dag_id, catalog_dir=core.settings.catalog_dir,
            hourly_price=cloud_hourly_price, provision_s=cloud_provision_s,
        )  # fmt: skip

    if not fit.can_run:
        cloud = quote()
        view = sp.OnPremView(False, fit.reason, runtime_s=runtime.seconds, runtime_source=runtime.source)
        decision = sp.decide(
            policy, view, cloud, now=clock(), heterogeneity=sp.heterogeneity(task, fit, cloud, bucket_access)
        )
        record(decision)
        return go_cloud(decision)

    pool_price = float(pool.hourly_price(task.num_nodes)) if hasattr(pool, "hourly_price") else 0.0
    onprem_egress = sum(
        sp._egress(c, None, "onprem", None, gb)
        for c, gb in ((_store_cloud(uri), gb) for uri, gb in sp.bucket_sources(task))
    )
    cloud: sp.CloudQuote | None = None
    notes: list[str] | None = None
    last_choice: str | None = None
    started = clock()
    attempt = 0
    pool_queue.settle_holds(core.store, pool_name)
    pool_queue.enqueue(
        core.store, pool_name, cluster_name, demand=fit.demand, units=fit.units, runtime_s=runtime.seconds,
        dag_id=dag_id, task_id=task_id,
    )  # fmt: skip
    try:
        while True:
            pool_queue.settle_holds(core.store, pool_name)
            view = sp.assess_pool(
                core.store, pool_name, inventory, fit, cluster_name, runtime, hourly_price=pool_price,
                egress_usd=onprem_egress, stale_after=stale_after, now=datetime.fromtimestamp(clock(), UTC),
            )  # fmt: skip
            if view.free_now:
                try:
                    pool.launch(cluster_name, task.num_nodes, fit.resources)
                except CapacityError as exc:  # lost the race for the last units: the pool is full
                    log.info("%s: pool capacity went to another task (%s)", cluster_name, exc)
                    view = dataclasses.replace(view, free_now=False, free_units=0)
                except ProvisionError as exc:  # e.g. a host went away: spill
                    fit = dataclasses.replace(fit, can_run=False, reason=f"on-prem launch failed: {exc}")
                    view = sp.OnPremView(
                        False, fit.reason, runtime_s=runtime.seconds, runtime_source=runtime.source
                    )
                else:
                    pool_queue.start_hold(
                        core.store, pool_name, cluster_name, runtime.seconds, dag_id, task_id
                    )
                    pool_queue.dequeue(core.store, pool_name, cluster_name)
                    if notes is None:
                        notes = sp.heterogeneity(task, fit, cloud, bucket_access)
                    decision = sp.decide(policy, view, cloud or sp.CloudQuote(False, "not needed"),
                                         now=clock(), waited_s=clock() - started, heterogeneity=notes)  # fmt: skip
                    record(decision)
                    try:
                        return go_pool(decision)
                    except BaseException:
                        _give_back(pool, cluster_name)
                        raise
            if cloud is None:
                cloud = quote()
                notes = sp.heterogeneity(task, fit, cloud, bucket_access)
            waited = clock() - started
            decision = sp.decide(policy, view, cloud, now=clock(), waited_s=waited, heterogeneity=notes or ())
            if decision.choice != last_choice:
                record(decision)
                last_choice = decision.choice
            if decision.choice == "cloud":
                pool_queue.dequeue(core.store, pool_name, cluster_name)
                return go_cloud(decision)
            pool_queue.heartbeat(core.store, pool_name, cluster_name)
            sleep(_next_sleep(poll, attempt, policy, view, waited, clock(), stale_after))
            attempt += 1
    finally:
        pool_queue.dequeue(core.store, pool_name, cluster_name)


def _give_back(pool: Any, cluster_name: str) -> None:
    """Undo an on-prem allocation whose adoption by the core failed."""
    try:
        handle = pool.find(cluster_name)
        if handle is not None:
            pool.terminate(handle)
    except Exception:
        log.warning("%s: could not give the pool slots back", cluster_name, exc_info=True)


def _store_cloud(uri: str) -> str | None:
    from airflow_provider_sky.optimizer.data_flow import store_cloud

    return store_cloud(uri)


def _next_sleep(
    poll: Backoff,
    attempt: int,
    policy: sp.SpillPolicy,
    view: sp.OnPremView,
    waited: float,
    now: float,
    stale_after: float,
) -> float:
    """The backoff delay, cut short where the policy would flip to the cloud (and below the stale limit)."""
    delay = min(poll.delay(attempt), stale_after / 3)
    flip = math.inf
    if policy.kind == "prefer_onprem" and policy.max_wait_s is not None:
        flip = policy.max_wait_s - waited
    elif policy.kind == "deadline" and policy.deadline_at is not None:
        flip = policy.deadline_at - (now + view.expected_wait_s + view.runtime_s)
    if math.isfinite(flip):
        delay = min(delay, max(flip, 0.05))
    return max(0.05, delay)
