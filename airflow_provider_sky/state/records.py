"""Plain frozen records returned by the state store (callers never see ORM objects)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from airflow_provider_sky.state.status import ClusterStatus, JobStatus


class _FromRow:
    @classmethod
    def from_row(cls, row: object) -> Self:
        """Copy the matching attributes of an ORM row (JSON values are deep-copied)."""
        values = {f.name: copy.deepcopy(getattr(row, f.name)) for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**values)


@dataclass(frozen=True)
class ClusterRecord(_FromRow):
    """A cluster as recorded in the state store."""

    name: str
    cloud: str | None
    region: str | None
    zone: str | None
    instance_type: str | None
    num_nodes: int
    accelerators: str | None
    use_spot: bool
    status: ClusterStatus
    status_reason: str | None
    owner_dag_id: str | None
    owner_run_id: str | None
    owner_task_id: str | None
    handle: Any
    created_at: datetime
    last_used_at: datetime | None
    status_changed_at: datetime
    autostop_idle_minutes: int | None
    autostop_down: bool
    hourly_price: float | None
    cost_so_far: float

    @property
    def is_live(self) -> bool:
        """Whether cloud resources may still exist."""
        return self.status.is_live


@dataclass(frozen=True)
class JobRecord(_FromRow):
    """A job as recorded in the state store."""

    cluster_name: str
    job_id: int
    name: str | None
    status: JobStatus
    exit_code: int | None
    log_path: str | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    owner_dag_id: str | None
    owner_run_id: str | None
    owner_task_id: str | None

    @property
    def is_terminal(self) -> bool:
        """Whether the job has finished."""
        return self.status.is_terminal


@dataclass(frozen=True)
class AttemptRecord(_FromRow):
    """One launch attempt (failover history)."""

    cluster_name: str
    attempt: int
    cloud: str | None
    region: str | None
    zone: str | None
    instance_type: str | None
    outcome: str
    error_class: str | None
    message: str | None
    at: datetime


@dataclass(frozen=True)
class PlanRecord(_FromRow):
    """The stored plan of a DAG run and its version (1 for the first plan, +1 per re-plan)."""

    dag_id: str
    run_id: str
    plan: Any
    version: int
    created_at: datetime
    updated_at: datetime
