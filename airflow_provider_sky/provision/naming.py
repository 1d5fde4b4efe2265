"""Deterministic, cloud-safe cluster names."""

from __future__ import annotations

import hashlib
import re

MAX_CLUSTER_NAME = 40
_VALID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")


def cluster_name_for(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """Name a task's cluster from its DAG, task and run: lower case, digits, '-', at most 40 chars.

    The same (dag, task, run, map index) always gives the same name, so an Airflow retry or a second
    worker finds the cluster an earlier try created instead of launching another one.
    """
    key = f"{dag_id}\0{task_id}\0{run_id}\0{map_index}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    readable = _slug(f"{dag_id}-{task_id}").removeprefix("sky-") or "task"
    room = MAX_CLUSTER_NAME - len("sky--") - len(digest)
    return f"sky-{readable[:room].strip('-')}-{digest}"


def validate_cluster_name(name: str) -> str | None:
    """Return a problem description when `name` is not accepted by every cloud, else None."""
    if len(name) > MAX_CLUSTER_NAME:
        return f"is {len(name)} characters long; use at most {MAX_CLUSTER_NAME}"
    if not _VALID.match(name):
        return "must start with a letter and hold only lower-case letters, digits and '-' (not at the end)"
    return None


def group_cluster_name(dag_id: str, run_id: str, first_task_id: str) -> str:
    """The cluster a group of consecutive tasks of one DAG run shares: the group's first task's own
    deterministic name. So a retry finds it, and the orphan reaper treats it like any auto-named
    cluster (owned by the first task, reaped when no job ran on it for the grace period)."""
    return cluster_name_for(dag_id, first_task_id, run_id)
