"""The staging cache: per destination prefix, the digest of the source listing last copied there.

A row says "the destination ``dest_uri`` holds a verified copy of ``source_uri`` as it was when its
listing (key, size, etag/checksum) hashed to ``digest``". Staging compares a fresh source listing
with it and skips the copy (and the destination listing) when nothing changed.

The table registers on the shared metadata when this module is imported (like ``state/pools.py``);
``StateStagingCache`` also creates it on first use, so it works whether or not the store's engine
was created before this import.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from airflow_provider_sky.state.engine import EngineEntry, create_tables
from airflow_provider_sky.state.models import Base, UTCDateTime
from airflow_provider_sky.state.sql import insert_ignore

if TYPE_CHECKING:
    from airflow_provider_sky.state.store import StateStore


class StagingCacheRow(Base):
    """One destination prefix and the source listing digest of its last verified copy."""

    __tablename__ = "sky_staging_cache"

    dest_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of dest_uri
    dest_uri: Mapped[str] = mapped_column(Text, nullable=False)
    source_uri: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    files: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class StagingCacheRecord:
    """A cache entry; times are POSIX seconds, ``expires_at=None`` never expires."""

    dest_uri: str
    source_uri: str
    digest: str
    files: int
    bytes: int
    recorded_at: float
    expires_at: float | None = None

    def valid_for(self, source_uri: str, digest: str, now: float) -> bool:
        """True when this entry vouches for a copy of ``source_uri`` with listing ``digest`` at ``now``."""
        fresh = self.expires_at is None or now < self.expires_at
        return fresh and self.source_uri == source_uri and self.digest == digest


def dest_key(dest_uri: str) -> str:
    return hashlib.sha256(dest_uri.encode()).hexdigest()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _record(row: StagingCacheRow) -> StagingCacheRecord:
    return StagingCacheRecord(
        dest_uri=row.dest_uri,
        source_uri=row.source_uri,
        digest=row.digest,
        files=row.files,
        bytes=row.bytes,
        recorded_at=row.recorded_at.timestamp(),
        expires_at=row.expires_at.timestamp() if row.expires_at else None,
    )


_ready: weakref.WeakValueDictionary[int, EngineEntry] = weakref.WeakValueDictionary()


def _ensure_table(store: StateStore) -> None:
    entry = store._entry()
    if _ready.get(id(entry)) is entry:
        return
    with entry.guard:
        create_tables(entry)  # idempotent, race-safe; creates only what is missing
    _ready[id(entry)] = entry


class StateStagingCache:
    """`StagingCache` backed by the state store's ``sky_staging_cache`` table (shared by workers)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def get(self, dest_uri: str) -> StagingCacheRecord | None:
        _ensure_table(self.store)
        with self.store._tx(write=False) as s:
            row = s.get(StagingCacheRow, dest_key(dest_uri))
            return None if row is None else _record(row)

    def put(self, record: StagingCacheRecord) -> None:
        _ensure_table(self.store)
        key = dest_key(record.dest_uri)
        values = {
            "dest_uri": record.dest_uri,
            "source_uri": record.source_uri,
            "digest": record.digest,
            "files": record.files,
            "bytes": record.bytes,
            "recorded_at": _dt(record.recorded_at),
            "expires_at": _dt(record.expires_at),
        }
        with self.store._tx(write=True) as s:
            if not insert_ignore(s, StagingCacheRow, {"dest_key": key, **values}, ["dest_key"]):
                s.execute(update(StagingCacheRow).where(StagingCacheRow.dest_key == key).values(**values))

    def forget(self, dest_uri: str) -> bool:
        _ensure_table(self.store)
        with self.store._tx(write=True) as s:
            result = s.execute(delete(StagingCacheRow).where(StagingCacheRow.dest_key == dest_key(dest_uri)))
            return bool(result.rowcount)

    def entries(self) -> list[StagingCacheRecord]:
        """Every entry, by destination URI (for the CLI / garbage collection)."""
        _ensure_table(self.store)
        with self.store._tx(write=False) as s:
            return [_record(r) for r in s.scalars(select(StagingCacheRow).order_by(StagingCacheRow.dest_uri))]
