"""One plan per DAG run: place every sky task of the run at once, store it, reuse it on every try.

The faces hand over the run's sky tasks (spec Tasks with `depends_on` filled from the DAG's
edges); the first task of the run to get here computes the plan and stores it in the state store
(first writer wins, so concurrent workers agree); later tasks and retries read it back.

With the DAG's `SharingRules` the plan also says which consecutive tasks share a cluster
(`cluster_groups`). That needs no choice of cloud, so with only the local backend enabled a plan
is stored too, when some tasks share (otherwise, as before, there is no plan).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_sky.provision.cluster_groups import (
    GROUPS_KEY,
    RULES_KEY,
    SharingRules,
    decide_groups,
    local_placements,
)
from airflow_provider_sky.provision.keepwarm import measured_startup_seconds
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, StateStore

log = logging.getLogger(__name__)


def clouds_worth_planning(enabled: Iterable[str]) -> tuple[str, ...]:
    """The enabled clouds the optimizer chooses among (only the local backend: nothing to choose)."""
    clouds = tuple(enabled)
    return clouds if any(c != "local" for c in clouds) else ()


def with_dependencies(tasks: Mapping[str, Task], edges: Iterable[tuple[str, str]]) -> list[Task]:
    """The tasks named by their key, with `depends_on` set from (upstream, downstream) edges."""
    ups: dict[str, list[str]] = {name: [] for name in tasks}
    for up, down in edges:
        if up in tasks and down in tasks and up not in ups[down]:
            ups[down].append(up)
    return [dataclasses.replace(task, name=name, depends_on=sorted(ups[name])) for name, task in tasks.items()]


def plan_for_run(
    store: StateStore,
    dag_id: str,
    run_id: str,
    tasks: Mapping[str, Task],
    edges: Iterable[tuple[str, str]],
    *,
    clouds: Iterable[str],
    minimize: str = "cost",
    catalog_dir: str | None = None,
    sharing: SharingRules | None = None,
) -> dict[str, Any] | None:
    """The stored plan of this DAG run (JSON form), computing and storing it on first use.

    Returns None when there is nothing to choose (only the local backend, and no tasks sharing a
    cluster) or when no plan can be made for the whole run (then each task falls back to its own
    candidates; the reason is logged). `sharing` (the DAG's rules) turns on cluster groups; a plan
    stored without them (e.g. by a transfer task) gets its groups added once, by compare-and-set.
    """
    record = store.get_plan_record(dag_id, run_id)
    if record is not None:
        if sharing is None or GROUPS_KEY in record.plan:
            return record.plan
        grouped = with_groups(store, dag_id, run_id, record.plan, tasks, edges, sharing, catalog_dir)
        return store.replace_plan(dag_id, run_id, grouped, expected_version=record.version).plan
    allowed = clouds_worth_planning(clouds)
    if not allowed:
        if sharing is None:
            return None
        local = {"total_cost": 0.0, "total_hours": 0.0, "tasks": local_placements(tasks), "egress": []}
        grouped = with_groups(store, dag_id, run_id, local, tasks, edges, sharing, catalog_dir)
        return store.put_plan(dag_id, run_id, grouped) if grouped[GROUPS_KEY] else None
    from airflow_provider_sky.optimizer import OptimizerError, optimize

    try:
        plan = optimize(with_dependencies(tasks, edges), catalog_dir, minimize=minimize, clouds=allowed)
    except OptimizerError as exc:
        log.warning("No DAG-wide plan for %s/%s (%s); each task uses its own candidates", dag_id, run_id, exc)
        return None
    data = plan.to_json_dict()
    if sharing is not None:
        data = with_groups(store, dag_id, run_id, data, tasks, edges, sharing, catalog_dir)
    return store.put_plan(dag_id, run_id, data)


def with_groups(
    store: StateStore,
    dag_id: str,
    run_id: str,
    plan: Mapping[str, Any],
    tasks: Mapping[str, Task],
    edges: Iterable[tuple[str, str]],
    sharing: SharingRules,
    catalog_dir: str | None = None,
    *,
    previous: Mapping[str, Any] | None = None,
    started: Iterable[str] = (),
) -> dict[str, Any]:
    """The plan with its cluster groups decided (cold start measured from the DAG's past launches)."""
    places = plan.get("tasks") or {}
    catalog = None
    if any(p.get("cloud") != "local" for p in places.values()):
        from airflow_provider_sky.catalog import load_catalog

        catalog = load_catalog(catalog_dir)
    grouping = decide_groups(
        tasks, list(edges), places, dag_id=dag_id, run_id=run_id, egress=plan.get("egress") or (),
        rules=sharing, startup=measured_startup_seconds(store, dag_id), catalog=catalog,
        previous=previous, started=set(started),
    )  # fmt: skip
    for d in grouping.decisions:
        log.info("cluster sharing %s -> %s: %s (%s)", d.up, d.down, "share" if d.share else "separate", d.reason)
    return grouping.apply_json(plan, sharing)


def started_tasks(store: StateStore, dag_id: str, run_id: str) -> dict[str, tuple[str, str | None, str | None, bool]]:
    """Tasks of the run that already ran or run a job, with where their cluster is
    (cloud, region, instance type, spot): a shared cluster's jobs belong to several tasks."""
    found: dict[str, tuple[str, str | None, str | None, bool]] = {}
    for cluster in store.list_clusters(owner_dag_id=dag_id, owner_run_id=run_id):
        if not cluster.cloud:
            continue
        where = (cluster.cloud, cluster.region, cluster.instance_type, bool(cluster.use_spot))
        if cluster.status is ClusterStatus.UP and cluster.owner_task_id:
            found.setdefault(cluster.owner_task_id, where)
        for job in store.list_jobs(cluster_name=cluster.name):
            if job.owner_dag_id == dag_id and job.owner_run_id == run_id and job.owner_task_id:
                found.setdefault(job.owner_task_id, where)
    return found


def placement_ranker(task: Task, clouds: Iterable[str], catalog_dir: str | None = None) -> Any:
    """A function ``blocked -> best-first placements`` for failover (None: only the local backend)."""
    allowed = clouds_worth_planning(clouds)
    if not allowed:
        return None
    from airflow_provider_sky.catalog import load_catalog
    from airflow_provider_sky.optimizer import rank_placements

    def rank(blocked: list[tuple[Any, ...]]) -> list[Any]:
        try:
            return list(rank_placements(task, load_catalog(catalog_dir), clouds=allowed, blocked=blocked))
        except ValueError as exc:  # infeasible once everything is blocked
            log.info("no further placement for %s: %s", task.name, exc)
            return []

    return rank


def pinned_to(task: Task, cloud: str, region: str | None, instance_type: str | None, use_spot: bool) -> Task:
    """The task fixed to where it actually runs (for re-planning the tasks that have not started)."""
    from airflow_provider_sky.spec import Resources

    if cloud == "local":
        return dataclasses.replace(task, resources=Resources(infra="local"))
    infra = f"{cloud}/{region}" if region else cloud
    return dataclasses.replace(
        task, resources=Resources(infra=infra, instance_type=instance_type, use_spot=use_spot)
    )


def replan_remaining(
    store: StateStore,
    dag_id: str,
    run_id: str,
    tasks: Mapping[str, Task],
    edges: Iterable[tuple[str, str]],
    fixed: Mapping[str, tuple[str, str | None, str | None, bool]],
    *,
    clouds: Iterable[str],
    minimize: str = "cost",
    catalog_dir: str | None = None,
) -> dict[str, Any] | None:
    """After a failover moved a task, re-plan the run with every started task fixed where it runs
    (`fixed`: name -> (cloud, region, instance type, spot)), so the tasks still to come follow the
    data. Stored by compare-and-set on the plan's version: concurrent re-planners converge.

    A plan with cluster groups is re-grouped with its stored rules: tasks that already ran on a
    shared cluster are fixed there too, and their groups are kept (see `cluster_groups`)."""
    record = store.get_plan_record(dag_id, run_id)
    allowed = clouds_worth_planning(clouds)
    if record is None or not allowed:
        return None
    from airflow_provider_sky.optimizer import OptimizerError, optimize

    grouped = GROUPS_KEY in record.plan
    started = started_tasks(store, dag_id, run_id) if grouped else {}
    fixed = {**{k: v for k, v in started.items() if k in tasks}, **fixed}
    pinned = {name: pinned_to(task, *fixed[name]) if name in fixed else task for name, task in tasks.items()}
    try:
        plan = optimize(with_dependencies(pinned, edges), catalog_dir, minimize=minimize, clouds=allowed)
    except OptimizerError as exc:
        log.warning("Re-planning %s/%s after failover failed (%s); keeping the plan", dag_id, run_id, exc)
        return record.plan
    data = plan.to_json_dict()
    if grouped:
        rules = SharingRules.from_json(record.plan.get(RULES_KEY))
        data = with_groups(
            store, dag_id, run_id, data, tasks, edges, rules, catalog_dir,
            previous=record.plan.get("tasks") or {}, started=set(fixed),
        )  # fmt: skip
    return store.replace_plan(dag_id, run_id, data, expected_version=record.version).plan
