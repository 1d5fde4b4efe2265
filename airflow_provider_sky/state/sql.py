"""Portable SQL helpers of the state store (insert-if-absent, counters, status filters)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from airflow_provider_sky.state.models import Counter
from airflow_provider_sky.state.status import ClusterStatus, JobStatus

E = TypeVar("E", ClusterStatus, JobStatus)
StatusArg = E | str | Iterable[E | str] | None


def statuses(value: Any, enum: type[E]) -> frozenset[E] | None:
    """Normalize a status, a collection of statuses, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({enum(value)})
    return frozenset(enum(v) for v in value)


def check_fields(fields: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    """Raise ``TypeError`` naming any key of ``fields`` not in ``allowed``."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(f"unknown {what} field(s) {unknown}; allowed: {sorted(allowed)}")


def insert_ignore(s: Session, model: type, values: dict[str, Any], keys: list[str]) -> bool:
    """INSERT unless a row with the same ``keys`` exists; True if this call inserted it."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    dialect = s.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        mod = postgresql if dialect == "postgresql" else sqlite
        stmt = mod.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
        # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT here.
        return s.execute(stmt.returning(table.c[keys[0]])).first() is not None
    try:  # portable fallback for other backends
        with s.begin_nested():
            s.execute(insert(table).values(**values))
        return True
    except IntegrityError:
        return False


def bump_counter(s: Session, kind: str, key: str, seed: Any) -> int:
    """Atomically increment counter (kind, key) and return the new value.

    The row is created on first use, seeded with ``seed`` (a scalar subquery of the highest
    number already used); the UPDATE takes the row lock, so concurrent callers queue.
    """
    insert_ignore(s, Counter, {"kind": kind, "key": key, "value": seed}, ["kind", "key"])
    where = (Counter.kind == kind, Counter.key == key)
    s.execute(update(Counter).where(*where).values(value=Counter.value + 1))
    return int(s.scalar(select(Counter.value).where(*where)))  # type: ignore[arg-type]
