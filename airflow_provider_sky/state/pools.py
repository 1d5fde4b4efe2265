"""Slot allocation for on-prem node pools: which cluster holds which host / GPU of a pool.

A slot is a named part of a host (``"host"`` for the whole machine, ``"gpu:0"`` ...). The row
``(pool, host, slot)`` is the primary key, so two clusters can never hold the same slot, on any
backend and across processes. Allocators of one pool are also serialized by a row lock on the
pool's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions are exclusive), so
the chooser always sees a current picture and a lost race is retried, not failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Integer, String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from airflow_provider_sky.state.models import Base, UTCDateTime, utcnow
from airflow_provider_sky.state.sql import insert_ignore

if TYPE_CHECKING:
    from airflow_provider_sky.state.store import StateStore

_RETRIES = 8


class PoolRow(Base):
    """One row per pool: the lock allocators of that pool queue on."""

    __tablename__ = "sky_pools"

    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    allocations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class PoolSlot(Base):
    """A slot held by a cluster; the primary key makes double allocation impossible."""

    __tablename__ = "sky_pool_slots"

    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    node_rank: Mapped[int] = mapped_column(Integer, nullable=False)
    allocated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class PoolLease(Base):
    """A cluster's hold on a pool, with its handle once the nodes are prepared."""

    __tablename__ = "sky_pool_leases"

    pool: Mapped[str] = mapped_column(String(128), primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    handle: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


@dataclass(frozen=True)
class SlotClaim:
    """One slot of one host for node `rank` of a cluster."""

    host: str
    slot: str
    rank: int


@dataclass(frozen=True)
class Lease:
    pool: str
    cluster_name: str
    claims: tuple[SlotClaim, ...]
    handle: dict[str, Any] | None


#: Called inside the allocation transaction with the taken slots ``{(host, slot): cluster}``;
#: returns the slots to take, or raises (e.g. `CapacityError`) to take nothing.
Chooser = Callable[[Mapping[tuple[str, str], str]], list[SlotClaim]]


def _claims(rows: list[PoolSlot]) -> tuple[SlotClaim, ...]:
    return tuple(
        sorted((SlotClaim(r.host, r.slot, r.node_rank) for r in rows), key=lambda c: (c.rank, c.slot))
    )


def allocate(store: StateStore, pool: str, cluster_name: str, choose: Chooser) -> tuple[SlotClaim, ...]:
    """Atomically take the slots `choose` picks; idempotent (a cluster's existing claims are returned)."""
    for attempt in range(_RETRIES):
        try:
            with store._tx(write=True) as s:
                insert_ignore(s, PoolRow, {"pool": pool, "allocations": 0}, ["pool"])
                s.execute(select(PoolRow).where(PoolRow.pool == pool).with_for_update()).first()
                mine = list(
                    s.scalars(
                        select(PoolSlot).where(PoolSlot.pool == pool, PoolSlot.cluster_name == cluster_name)
                    )
                )
                if mine:
                    return _claims(mine)
                taken = {
                    (r.host, r.slot): r.cluster_name
                    for r in s.scalars(select(PoolSlot).where(PoolSlot.pool == pool))
                }
                claims = choose(taken)
                if not claims:
                    raise ValueError("the chooser picked no slots")
                now = utcnow()
                s.add_all(
                    PoolSlot(
                        pool=pool,
                        host=c.host,
                        slot=c.slot,
                        cluster_name=cluster_name,
                        node_rank=c.rank,
                        allocated_at=now,
                    )
                    for c in claims
                )
                s.flush()
                insert_ignore(
                    s,
                    PoolLease,
                    {"pool": pool, "cluster_name": cluster_name, "handle": None, "created_at": now},
                    ["pool", "cluster_name"],
                )
                s.execute(
                    update(PoolRow).where(PoolRow.pool == pool).values(allocations=PoolRow.allocations + 1)
                )
                return tuple(sorted(claims, key=lambda c: (c.rank, c.slot)))
        except IntegrityError:
            # Another allocator took one of these slots first (backends without the row lock).
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def set_handle(store: StateStore, pool: str, cluster_name: str, handle: Mapping[str, Any]) -> bool:
    """Record the prepared cluster's handle on its lease; False when there is no lease."""
    with store._tx(write=True) as s:
        result = s.execute(
            update(PoolLease)
            .where(PoolLease.pool == pool, PoolLease.cluster_name == cluster_name)
            .values(handle=dict(handle))
        )
        return bool(result.rowcount)


def get_lease(store: StateStore, pool: str, cluster_name: str) -> Lease | None:
    with store._tx(write=False) as s:
        lease = s.get(PoolLease, (pool, cluster_name))
        rows = list(
            s.scalars(select(PoolSlot).where(PoolSlot.pool == pool, PoolSlot.cluster_name == cluster_name))
        )
        if lease is None and not rows:
            return None
        return Lease(
            pool, cluster_name, _claims(rows), dict(lease.handle) if lease and lease.handle else None
        )


def leases(store: StateStore, pool: str) -> list[Lease]:
    """Every cluster holding slots of `pool`."""
    with store._tx(write=False) as s:
        names = set(s.scalars(select(PoolLease.cluster_name).where(PoolLease.pool == pool)))
        names |= set(s.scalars(select(PoolSlot.cluster_name).where(PoolSlot.pool == pool)))
    return [lease for n in sorted(names) if (lease := get_lease(store, pool, n)) is not None]


def taken_slots(store: StateStore, pool: str) -> dict[tuple[str, str], str]:
    with store._tx(write=False) as s:
        return {
            (r.host, r.slot): r.cluster_name for r in s.scalars(select(PoolSlot).where(PoolSlot.pool == pool))
        }


def release(store: StateStore, pool: str, cluster_name: str) -> int:
    """Free a cluster's slots and lease; returns the number of slots freed (0 when none)."""
    with store._tx(write=True) as s:
        n = s.execute(
            delete(PoolSlot).where(PoolSlot.pool == pool, PoolSlot.cluster_name == cluster_name)
        ).rowcount
        s.execute(delete(PoolLease).where(PoolLease.pool == pool, PoolLease.cluster_name == cluster_name))
        return int(n or 0)
