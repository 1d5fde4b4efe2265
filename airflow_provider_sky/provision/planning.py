"""One plan per DAG run: place every sky task of the run at once, store it, reuse it on every try.

The faces hand over the run's sky tasks (spec Tasks with `depends_on` filled from the DAG's
edges); the first task of the run to get here computes the plan and stores it in the state store
(first writer wins, so concurrent workers agree); later tasks and retries read it back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import StateStore

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
) -> dict[str, Any] | None:
    """The stored plan of this DAG run (JSON form), computing and storing it on first use.

    Returns None when there is nothing to choose (only the local backend) or when no plan can be
    made for the whole run (then each task falls back to its own candidates; the reason is logged).
    """
    existing = store.get_plan(dag_id, run_id)
    if existing is not None:
        return existing
    allowed = clouds_worth_planning(clouds)
    if not allowed:
        return None
    from airflow_provider_sky.optimizer import OptimizerError, optimize

    try:
        plan = optimize(with_dependencies(tasks, edges), catalog_dir, minimize=minimize, clouds=allowed)
    except OptimizerError as exc:
        log.warning("No DAG-wide plan for %s/%s (%s); each task uses its own candidates", dag_id, run_id, exc)
        return None
    return store.put_plan(dag_id, run_id, plan.to_json_dict())


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
    data. Stored by compare-and-set on the plan's version: concurrent re-planners converge."""
    record = store.get_plan_record(dag_id, run_id)
    allowed = clouds_worth_planning(clouds)
    if record is None or not allowed:
        return None
    from airflow_provider_sky.optimizer import OptimizerError, optimize

    pinned = {name: pinned_to(task, *fixed[name]) if name in fixed else task for name, task in tasks.items()}
    try:
        plan = optimize(with_dependencies(pinned, edges), catalog_dir, minimize=minimize, clouds=allowed)
    except OptimizerError as exc:
        log.warning("Re-planning %s/%s after failover failed (%s); keeping the plan", dag_id, run_id, exc)
        return record.plan
    return store.replace_plan(dag_id, run_id, plan.to_json_dict(), expected_version=record.version).plan
