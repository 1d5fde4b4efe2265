"""Job-recovery chains: which jobs restart which, under one SkyPilot task id.

A managed job that is restarted (after a preemption or a user-code error) gets a new job id on
its (relaunched) cluster but keeps its ``SKYPILOT_TASK_ID``, so the task can resume from its
checkpoint. One row per job of a chain; the chain is named by its first job (``root_job_id``).
The row of the original job is written before that job starts, so the task id survives the
loss of the head node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from airflow_provider_sky.state.models import Base, UTCDateTime, utcnow
from airflow_provider_sky.state.sql import insert_ignore

if TYPE_CHECKING:
    from airflow_provider_sky.state.store import StateStore

#: Why a job of a chain was started.
ORIGINAL = "original"
PREEMPTION = "preemption"
ERROR = "error"


class RecoveryRow(Base):
    """One job of a recovery chain."""

    __tablename__ = "sky_job_recovery"

    cluster_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_job_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    task_id: Mapped[str] = mapped_column(String(512), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    previous_job_id: Mapped[int | None] = mapped_column(Integer)
    placement: Mapped[Any | None] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class ChainEntry:
    """A job of a recovery chain, as stored."""

    cluster_name: str
    job_id: int
    root_job_id: int
    task_id: str
    reason: str
    previous_job_id: int | None
    placement: dict[str, Any] | None
    message: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "reason": self.reason,
            "previous_job_id": self.previous_job_id,
            "placement": self.placement,
            "message": self.message,
            "at": self.created_at.isoformat(),
        }


def _entry(row: RecoveryRow) -> ChainEntry:
    return ChainEntry(
        row.cluster_name,
        row.job_id,
        row.root_job_id,
        row.task_id,
        row.reason,
        row.previous_job_id,
        dict(row.placement) if row.placement else None,
        row.message,
        row.created_at,
    )


def record_job(
    store: StateStore,
    cluster_name: str,
    job_id: int,
    *,
    task_id: str,
    root_job_id: int | None = None,
    reason: str = ORIGINAL,
    previous_job_id: int | None = None,
    placement: dict[str, Any] | None = None,
    message: str | None = None,
) -> ChainEntry:
    """Record a job of a chain (idempotent: an existing row is returned unchanged)."""
    values = {
        "cluster_name": cluster_name,
        "job_id": job_id,
        "root_job_id": job_id if root_job_id is None else root_job_id,
        "task_id": task_id,
        "reason": reason,
        "previous_job_id": previous_job_id,
        "placement": placement,
        "message": message,
        "created_at": utcnow(),
    }
    with store._tx(write=True) as s:
        insert_ignore(s, RecoveryRow, values, ["cluster_name", "job_id"])
        row = s.get(RecoveryRow, (cluster_name, job_id))
        assert row is not None
        return _entry(row)


def get_job(store: StateStore, cluster_name: str, job_id: int) -> ChainEntry | None:
    """The chain entry of a job, or None when the job is not managed."""
    with store._tx(write=False) as s:
        row = s.get(RecoveryRow, (cluster_name, job_id))
        return None if row is None else _entry(row)


def chain(store: StateStore, cluster_name: str, root_job_id: int) -> list[ChainEntry]:
    """Every job of a chain, oldest first."""
    stmt = (
        select(RecoveryRow)
        .where(RecoveryRow.cluster_name == cluster_name, RecoveryRow.root_job_id == root_job_id)
        .order_by(RecoveryRow.job_id)
    )
    with store._tx(write=False) as s:
        return [_entry(r) for r in s.scalars(stmt)]
