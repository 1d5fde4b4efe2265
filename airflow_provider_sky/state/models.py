"""SQLAlchemy table definitions of the state store (tables are prefixed ``sky_``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, Float, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from airflow_provider_sky.state.status import ClusterStatus, JobStatus


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type) -> Enum:
    # VARCHAR (no native enum type, no CHECK): adding a status later needs no migration.
    return Enum(cls, native_enum=False, create_constraint=False, length=16, validate_strings=True)


class Base(DeclarativeBase):
    """Declarative base with its own metadata (never Airflow's)."""

    metadata = MetaData()


class Cluster(Base):
    """One cluster by name; a TERMINATED row may be replaced by a new cluster of the same name."""

    __tablename__ = "sky_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    cloud: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(128))
    zone: Mapped[str | None] = mapped_column(String(128))
    instance_type: Mapped[str | None] = mapped_column(String(128))
    num_nodes: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    accelerators: Mapped[str | None] = mapped_column(String(128))
    use_spot: Mapped[bool] = mapped_column(nullable=False, default=False)
    status: Mapped[ClusterStatus] = mapped_column(_enum(ClusterStatus), nullable=False, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    owner_dag_id: Mapped[str | None] = mapped_column(String(250), index=True)
    owner_run_id: Mapped[str | None] = mapped_column(String(250))
    owner_task_id: Mapped[str | None] = mapped_column(String(250))
    handle: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    autostop_idle_minutes: Mapped[int | None] = mapped_column(Integer)
    autostop_down: Mapped[bool] = mapped_column(nullable=False, default=False)
    hourly_price: Mapped[float | None] = mapped_column(Float)
    cost_so_far: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class Job(Base):
    """One job on a cluster; (cluster_name, job_id) is unique and ids are never reused."""

    __tablename__ = "sky_jobs"
    __table_args__ = (UniqueConstraint("cluster_name", "job_id", name="uq_sky_jobs_cluster_job"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_name: Mapped[str] = mapped_column(String(255), nullable=False)
    job_id: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), nullable=False, index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    log_path: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner_dag_id: Mapped[str | None] = mapped_column(String(250))
    owner_run_id: Mapped[str | None] = mapped_column(String(250))
    owner_task_id: Mapped[str | None] = mapped_column(String(250))


class Counter(Base):
    """Per-name monotonic counters (job ids, attempt numbers); rows survive cluster deletion."""

    __tablename__ = "sky_counters"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


class Plan(Base):
    """The optimizer plan of one DAG run; the first writer wins, re-plans bump ``version``."""

    __tablename__ = "sky_plans"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    plan: Mapped[Any] = mapped_column(JSON, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class LaunchAttempt(Base):
    """One try to launch a cluster somewhere (failover history)."""

    __tablename__ = "sky_launch_attempts"
    __table_args__ = (UniqueConstraint("cluster_name", "attempt", name="uq_sky_attempts_cluster_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_name: Mapped[str] = mapped_column(String(255), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    cloud: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(128))
    zone: Mapped[str | None] = mapped_column(String(128))
    instance_type: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    error_class: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
