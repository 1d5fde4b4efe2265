"""The blocking steps of a deferrable sky task, for the triggers to run in a thread (no Airflow here).

A deferrable task is two deferrals: the launch (with failover, or spillover) runs in the triggerer,
the worker resumes to submit the job (secrets, workdir and local file mounts live on the worker),
then the job wait runs in the triggerer again. What crosses a deferral is JSON: the launch spec
(no secrets, no envs, no scripts), the owner ids, the cluster name and the planned placement.
The events are small: placement and attempt counts; the full history stays in the state store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_sky.provision.core import LaunchResult, Owner, SkyCore
from airflow_provider_sky.spec import Task

#: Spec fields a launch never needs (and that must not sit in trigger kwargs).
_NOT_FOR_LAUNCH = ("secrets", "envs", "run", "setup")
#: Attempts carried in a launch event (the rest are counted; all are in the state store).
MAX_EVENT_ATTEMPTS = 5


def launch_spec(task: Task) -> dict[str, Any]:
    """The part of a task spec a launch reads (resources, nodes, data sizes), as JSON."""
    return {k: v for k, v in task.to_dict().items() if k not in _NOT_FOR_LAUNCH}


def owner_dict(owner: Owner) -> dict[str, Any]:
    return {
        "dag_id": owner.dag_id,
        "run_id": owner.run_id,
        "task_id": owner.task_id,
        "map_index": owner.map_index,
    }


def owner_from(data: Mapping[str, Any] | None) -> Owner:
    data = data or {}
    return Owner(data.get("dag_id"), data.get("run_id"), data.get("task_id"), int(data.get("map_index", -1)))


def owns(core: SkyCore, cluster_name: str, owner: Owner) -> bool:
    """Whether this task instance created the cluster (a re-created trigger finds it UP: still ours)."""
    record = core.store.get_cluster(cluster_name)
    if record is None:
        return False
    return (record.owner_dag_id, record.owner_run_id, record.owner_task_id) == (
        owner.dag_id,
        owner.run_id,
        owner.task_id,
    )


def launched_event(core: SkyCore, cluster_name: str, owner: Owner, result: LaunchResult) -> dict[str, Any]:
    """The launch trigger's event: where the cluster is, whether the task owns it, how it got there."""
    c = result.cluster
    attempts = core.store.list_attempts(cluster_name)
    return {
        "kind": "launched",
        "cluster": cluster_name,
        "created": bool(result.created or owns(core, cluster_name, owner)),
        "reused": not result.created,
        "placement": {
            "cloud": c.cloud,
            "region": c.region,
            "zone": c.zone,
            "instance_type": c.instance_type,
            "num_nodes": c.num_nodes,
            "use_spot": bool(c.use_spot),
            "hourly_price": c.hourly_price or 0.0,
        },
        "attempts": len(attempts),
        "last_attempts": [
            {
                "cloud": a.cloud,
                "region": a.region,
                "zone": a.zone,
                "outcome": a.outcome,
                "error": a.error_class,
            }
            for a in attempts[-MAX_EVENT_ATTEMPTS:]
        ],
    }


def launch(
    core: SkyCore,
    spec: Mapping[str, Any],
    cluster_name: str,
    owner: Owner,
    placement: Any = None,
    spill_policy: Mapping[str, Any] | None = None,
    *,
    cancelled: threading.Event | None = None,
    down_if_cancelled: bool = False,
    on_log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Launch (or adopt, or reuse) the task's cluster with failover; the launch event.

    Idempotent by cluster name: a re-created trigger calling it again adopts the cluster the first
    call launched (cloud-side idempotency tokens and name tags) instead of launching a second one.
    When `cancelled` is set by the time the launch returns (the task was killed meanwhile), the
    cluster is torn down when `down_if_cancelled` (the task's own ``down`` rule) and the event says
    ``kind: cancelled``.
    """
    task = Task.from_dict(dict(spec))
    decision = None
    if spill_policy and "ssh" in core.clouds:
        from airflow_provider_sky.provision.spill_launch import launch_with_spillover
        from airflow_provider_sky.provision.spillover import SpillPolicy

        result, decision = launch_with_spillover(
            core, task, cluster_name, owner, SpillPolicy.from_dict(spill_policy), preferred=placement,
            on_decision=(lambda d: on_log(d.log_line())) if on_log else None,
        )  # fmt: skip
    else:
        result = core.launch(task, cluster_name, owner, preferred=placement)
    event = launched_event(core, cluster_name, owner, result)
    if decision is not None:
        event["spillover"] = decision.to_dict()
    if cancelled is not None and cancelled.is_set():
        if down_if_cancelled:
            core.down(cluster_name)
        event["kind"] = "cancelled"
    return event


def kill(core: SkyCore, cluster_name: str, job_id: int | None, down: bool) -> list[str]:
    """Cancel the task's job and, when `down` (the task's own ``down`` rule), tear the cluster down."""
    done = []
    if job_id is not None:
        core.cancel(cluster_name, int(job_id))
        done.append(f"cancelled job {job_id} on {cluster_name}")
    if down and core.down(cluster_name):
        done.append(f"tore down {cluster_name}")
    return done
