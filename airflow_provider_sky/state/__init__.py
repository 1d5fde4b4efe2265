"""State layer: durable records of clusters, jobs, plans and launch attempts (SQLAlchemy 2.x)."""

from airflow_provider_sky.state.engine import ENV_STATE_URL, default_state_url, dispose_engines
from airflow_provider_sky.state.errors import (
    ClusterExistsError,
    ClusterNotFoundError,
    JobNotFoundError,
    StateError,
)
from airflow_provider_sky.state.records import AttemptRecord, ClusterRecord, JobRecord, PlanRecord
from airflow_provider_sky.state.status import ClusterStatus, JobStatus
from airflow_provider_sky.state.store import StateStore

__all__ = [
    "ENV_STATE_URL",
    "AttemptRecord",
    "ClusterExistsError",
    "ClusterNotFoundError",
    "ClusterRecord",
    "ClusterStatus",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "PlanRecord",
    "StateError",
    "StateStore",
    "default_state_url",
    "dispose_engines",
]
