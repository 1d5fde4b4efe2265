"""Shared queue of sky tasks waiting for an on-prem pool, the pool's holds, runtime history, decisions.

Every Airflow worker sees the same picture because it lives in the state store:

``sky_pool_queue``      one row per waiting task: a ticket (per-pool counter, FIFO order), the demand
                        key (``host`` / ``A100:1``; only tasks of the same demand compete), units
                        (nodes) and expected runtime; ``heartbeat_at`` so a dead worker's entry expires.
``sky_pool_holds``      a cluster that got on-prem slots through spillover: when and for how long
                        it is expected to hold them (the queue's view of "busy until").
``sky_task_runtimes``   how long a task (dag_id/task_id) held its slots; learned automatically when a
                        hold's lease is gone (`settle_holds`) or recorded explicitly (`record_runtime`).
``sky_spill_decisions`` every spill decision (inputs, choice, reason) for ``sky-airflow pools``.

Queue writes take the pool's row lock (the one `state.pools.allocate` takes), so enqueue, dequeue
and allocation of one pool are serialized across processes (SQLite write transactions are exclusive).
The expected wait is a list-scheduling estimate (`expected_wait`): units free now or at the expected
end of their holders, the tasks ahead started in ticket order on the earliest free units.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, Integer, String, Text, UniqueConstraint, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from airflow_provider_sky.state.models import Base, UTCDateTime, utcnow
from airflow_provider_sky.state.pools import PoolLease, PoolRow, PoolSlot
from airflow_provider_sky.state.sql import bump_counter, insert_ignore

if TYPE_CHECKING:
    from airflow_provider_sky.state.store import StateStore

DEFAULT_STALE_AFTER_S = 300.0
DEFAULT_RUNTIME_S = 3600.0
HISTORY_SAMPLES = 20


class QueueRow(Base):
    """A task waiting for on-prem capacity of a pool."""

    __tablename__ = "sky_pool_queue"
    __table_args__ = (UniqueConstraint("pool", "cluster_name", name="uq_sky_pool_queue_cluster"),)

    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    ticket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cluster_name: Mapped[str] = mapped_column(String(255), nullable=False)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    task_id: Mapped[str | None] = mapped_column(String(250))
    demand: Mapped[str] = mapped_column(String(128), nullable=False)
    units: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    runtime_s: Mapped[float] = mapped_column(Float, nullable=False)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class HoldRow(Base):
    """A cluster holding on-prem slots it got through spillover, and its expected runtime."""

    __tablename__ = "sky_pool_holds"

    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    task_id: Mapped[str | None] = mapped_column(String(250))
    runtime_s: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RuntimeRow(Base):
    """One observed runtime (slot-holding time) of a task."""

    __tablename__ = "sky_task_runtimes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(250), nullable=False, index=True)
    task_id: Mapped[str] = mapped_column(String(250), nullable=False)
    where: Mapped[str] = mapped_column(String(64), nullable=False)
    cluster_name: Mapped[str | None] = mapped_column(String(255))
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class DecisionRow(Base):
    """One spill decision (its JSON form), newest last."""

    __tablename__ = "sky_spill_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    cluster_name: Mapped[str] = mapped_column(String(255), nullable=False)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    task_id: Mapped[str | None] = mapped_column(String(250))
    choice: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    decision: Mapped[Any] = mapped_column(JSON, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class QueuedTask:
    pool: str
    ticket: int
    cluster_name: str
    dag_id: str | None
    task_id: str | None
    demand: str
    units: int
    runtime_s: float
    enqueued_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class Hold:
    pool: str
    cluster_name: str
    dag_id: str | None
    task_id: str | None
    runtime_s: float
    started_at: datetime

    def remaining_s(self, now: datetime) -> float:
        """Expected seconds left; an overrunning hold is assumed to end soon (5% of its runtime, >= 1 s)."""
        left = self.runtime_s - (now - self.started_at).total_seconds()
        return max(left, 0.05 * self.runtime_s, 1.0)


@dataclass(frozen=True)
class RuntimeEstimate:
    """Expected runtime and where it came from: ``learned`` (median of n samples), ``declared``, ``default``."""

    seconds: float
    source: str
    samples: int = 0


@dataclass(frozen=True)
class DecisionRecord:
    pool: str
    cluster_name: str
    dag_id: str | None
    task_id: str | None
    choice: str
    reason: str
    decision: dict[str, Any]
    at: datetime


def _queued(r: QueueRow) -> QueuedTask:
    return QueuedTask(
        r.pool, r.ticket, r.cluster_name, r.dag_id, r.task_id, r.demand, r.units, r.runtime_s,
        r.enqueued_at, r.heartbeat_at,
    )  # fmt: skip


def _lock_pool(s: Session, pool: str) -> None:
    """Take the pool's row lock (shared with `state.pools.allocate`)."""
    insert_ignore(s, PoolRow, {"pool": pool, "allocations": 0}, ["pool"])
    s.execute(select(PoolRow).where(PoolRow.pool == pool).with_for_update()).first()


def _alive(stale_after: float, now: datetime) -> Any:
    return QueueRow.heartbeat_at >= now - timedelta(seconds=stale_after)


# ---- queue -----------------------------------------------------------------------------------
def enqueue(
    store: StateStore,
    pool: str,
    cluster_name: str,
    *,
    demand: str = "host",
    units: int = 1,
    runtime_s: float = DEFAULT_RUNTIME_S,
    dag_id: str | None = None,
    task_id: str | None = None,
) -> int:
    """Join the pool's queue (idempotent: an existing entry keeps its ticket, its heartbeat is renewed)."""
    now = utcnow()
    with store._tx(write=True) as s:
        _lock_pool(s, pool)
        row = s.scalars(
            select(QueueRow).where(QueueRow.pool == pool, QueueRow.cluster_name == cluster_name)
        ).first()
        if row is not None:
            row.heartbeat_at = now
            return row.ticket
        seed = select(QueueRow.ticket).where(QueueRow.pool == pool).order_by(QueueRow.ticket.desc()).limit(1)
        ticket = bump_counter(s, "pool_queue", pool, func.coalesce(seed.scalar_subquery(), 0))
        s.add(
            QueueRow(
                pool=pool, ticket=ticket, cluster_name=cluster_name, dag_id=dag_id, task_id=task_id,
                demand=demand, units=max(1, int(units)), runtime_s=float(runtime_s), enqueued_at=now,
                heartbeat_at=now,
            )
        )  # fmt: skip
        return ticket


def dequeue(store: StateStore, pool: str, cluster_name: str) -> bool:
    """Leave the queue; False when the task was not in it."""
    with store._tx(write=True) as s:
        _lock_pool(s, pool)
        stmt = delete(QueueRow).where(QueueRow.pool == pool, QueueRow.cluster_name == cluster_name)
        return bool(s.execute(stmt).rowcount)


def heartbeat(store: StateStore, pool: str, cluster_name: str) -> bool:
    """Renew a waiting task's entry so it does not expire; False when it is gone."""
    with store._tx(write=True) as s:
        stmt = (
            update(QueueRow)
            .where(QueueRow.pool == pool, QueueRow.cluster_name == cluster_name)
            .values(heartbeat_at=utcnow())
        )
        return bool(s.execute(stmt).rowcount)


def purge_stale(store: StateStore, pool: str, stale_after: float = DEFAULT_STALE_AFTER_S) -> int:
    """Drop entries whose worker stopped heartbeating; returns how many."""
    now = utcnow()
    with store._tx(write=True) as s:
        _lock_pool(s, pool)
        stmt = delete(QueueRow).where(
            QueueRow.pool == pool, QueueRow.heartbeat_at < now - timedelta(seconds=stale_after)
        )
        return int(s.execute(stmt).rowcount or 0)


def queue(
    store: StateStore, pool: str, stale_after: float = DEFAULT_STALE_AFTER_S, demand: str | None = None
) -> list[QueuedTask]:
    """Live entries of the pool (optionally of one demand), in ticket order."""
    stmt = select(QueueRow).where(QueueRow.pool == pool, _alive(stale_after, utcnow()))
    if demand is not None:
        stmt = stmt.where(QueueRow.demand == demand)
    with store._tx(write=False) as s:
        return [_queued(r) for r in s.scalars(stmt.order_by(QueueRow.ticket))]


def position(
    store: StateStore, pool: str, cluster_name: str, stale_after: float = DEFAULT_STALE_AFTER_S
) -> int | None:
    """0-based place among live entries of the same demand (None: not queued)."""
    entries = queue(store, pool, stale_after)
    mine = next((e for e in entries if e.cluster_name == cluster_name), None)
    if mine is None:
        return None
    return sum(1 for e in entries if e.demand == mine.demand and e.ticket < mine.ticket)


def pools_known(store: StateStore) -> list[str]:
    """Every pool with a row, a lease, a queue entry or a decision."""
    with store._tx(write=False) as s:
        names = set(s.scalars(select(PoolRow.pool)))
        names |= set(s.scalars(select(PoolLease.pool)))
        names |= set(s.scalars(select(QueueRow.pool)))
        names |= set(s.scalars(select(DecisionRow.pool)))
    return sorted(names)


# ---- holds and runtimes -----------------------------------------------------------------------
def start_hold(
    store: StateStore,
    pool: str,
    cluster_name: str,
    runtime_s: float,
    dag_id: str | None = None,
    task_id: str | None = None,
) -> None:
    """Note that `cluster_name` now holds on-prem slots for about `runtime_s` (idempotent)."""
    values = {"pool": pool, "cluster_name": cluster_name, "dag_id": dag_id, "task_id": task_id,
              "runtime_s": float(runtime_s), "started_at": utcnow()}  # fmt: skip
    with store._tx(write=True) as s:
        insert_ignore(s, HoldRow, values, ["pool", "cluster_name"])


def holds(store: StateStore, pool: str) -> list[Hold]:
    with store._tx(write=False) as s:
        rows = s.scalars(select(HoldRow).where(HoldRow.pool == pool).order_by(HoldRow.started_at))
        return [Hold(r.pool, r.cluster_name, r.dag_id, r.task_id, r.runtime_s, r.started_at) for r in rows]


def settle_holds(store: StateStore, pool: str) -> list[tuple[Hold, float]]:
    """Close holds whose slots were released: record how long they held them, delete the hold.

    Returns the settled holds with their measured seconds (the runtime history learns from these).
    """
    now = utcnow()
    out: list[tuple[Hold, float]] = []
    with store._tx(write=True) as s:
        leased = set(s.scalars(select(PoolSlot.cluster_name).where(PoolSlot.pool == pool)))
        leased |= set(s.scalars(select(PoolLease.cluster_name).where(PoolLease.pool == pool)))
        stmt = select(HoldRow).where(HoldRow.pool == pool).with_for_update()
        for r in list(s.scalars(stmt)):
            if r.cluster_name in leased:
                continue
            seconds = max(0.0, (now - r.started_at).total_seconds())
            hold = Hold(r.pool, r.cluster_name, r.dag_id, r.task_id, r.runtime_s, r.started_at)
            if r.dag_id and r.task_id:
                s.add(RuntimeRow(dag_id=r.dag_id, task_id=r.task_id, where=f"pool:{pool}",
                                 cluster_name=r.cluster_name, seconds=seconds, recorded_at=now))  # fmt: skip
            s.delete(r)
            out.append((hold, seconds))
    return out


def record_runtime(
    store: StateStore,
    dag_id: str,
    task_id: str,
    seconds: float,
    where: str = "cloud",
    cluster_name: str | None = None,
) -> None:
    """Add one observed runtime of a task (for runs that did not hold pool slots, e.g. in the cloud)."""
    with store._tx(write=True) as s:
        s.add(RuntimeRow(dag_id=dag_id, task_id=task_id, where=where, cluster_name=cluster_name,
                         seconds=float(seconds), recorded_at=utcnow()))  # fmt: skip


def runtime_history(store: StateStore, dag_id: str, task_id: str, last: int = HISTORY_SAMPLES) -> list[float]:
    """The task's most recent observed runtimes, newest first."""
    stmt = (
        select(RuntimeRow.seconds)
        .where(RuntimeRow.dag_id == dag_id, RuntimeRow.task_id == task_id)
        .order_by(RuntimeRow.id.desc())
        .limit(last)
    )
    with store._tx(write=False) as s:
        return [float(x) for x in s.scalars(stmt)]


def learned_runtime(
    store: StateStore | None,
    dag_id: str | None,
    task_id: str | None,
    declared_hours: float | None = None,
    default_s: float = DEFAULT_RUNTIME_S,
) -> RuntimeEstimate:
    """Median of the task's past runs, else its declared ``estimated_hours``, else `default_s`."""
    if store is not None and dag_id and task_id:
        samples = runtime_history(store, dag_id, task_id)
        if samples:
            return RuntimeEstimate(float(statistics.median(samples)), "learned", len(samples))
    if declared_hours:
        return RuntimeEstimate(float(declared_hours) * 3600.0, "declared")
    return RuntimeEstimate(float(default_s), "default")


# ---- decisions -------------------------------------------------------------------------------
def record_decision(
    store: StateStore,
    pool: str,
    cluster_name: str,
    decision: dict[str, Any],
    dag_id: str | None = None,
    task_id: str | None = None,
) -> None:
    """Append a decision (its JSON form: ``choice`` and ``reason`` keys at least)."""
    with store._tx(write=True) as s:
        s.add(DecisionRow(pool=pool, cluster_name=cluster_name, dag_id=dag_id, task_id=task_id,
                          choice=str(decision["choice"]), reason=str(decision["reason"]),
                          decision=dict(decision), at=utcnow()))  # fmt: skip


def recent_decisions(store: StateStore, pool: str | None = None, limit: int = 20) -> list[DecisionRecord]:
    """The newest decisions (of one pool), newest first."""
    stmt = select(DecisionRow).order_by(DecisionRow.id.desc()).limit(limit)
    if pool is not None:
        stmt = stmt.where(DecisionRow.pool == pool)
    with store._tx(write=False) as s:
        return [
            DecisionRecord(
                r.pool, r.cluster_name, r.dag_id, r.task_id, r.choice, r.reason, dict(r.decision), r.at
            )
            for r in s.scalars(stmt)
        ]


# ---- expected wait ---------------------------------------------------------------------------
def expected_wait(unit_free_in: Sequence[float], ahead: Iterable[tuple[int, float]], units: int = 1) -> float:
    """Seconds until `units` units are free for this task, by list scheduling.

    `unit_free_in`: per unit of the pool that can run the task, seconds until it is free (0: free
    now). `ahead`: ``(units, runtime_s)`` of the tasks queued before it, in ticket order; each starts
    when its units are free and holds them for its runtime. ``inf`` when the pool has too few units.
    """
    heap = [max(0.0, float(t)) for t in unit_free_in]
    if len(heap) < units:
        return math.inf
    heapq.heapify(heap)
    for need, runtime in ahead:
        need = max(1, int(need))
        if need > len(heap):
            continue  # can never start here; it does not delay us
        taken = [heapq.heappop(heap) for _ in range(need)]
        start = max(taken)
        for _ in range(need):
            heapq.heappush(heap, start + max(0.0, float(runtime)))
    return max(heapq.heappop(heap) for _ in range(units))
