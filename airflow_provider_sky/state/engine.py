"""Engines per URL per process, SQLite tuning, and idempotent table creation."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from airflow_provider_sky.state.models import Base

ENV_STATE_URL = "SKY_STATE_DB_URL"
SQLITE_BUSY_TIMEOUT_S = 60.0
# Serializes CREATE TABLE across processes on PostgreSQL (pg_advisory_xact_lock key, "sky" + 1).
_PG_SCHEMA_LOCK_KEY = 0x736B7901
_WRITE_OPTION = "sky_write"


def default_state_url() -> str:
    """``$SKY_STATE_DB_URL``, else ``sqlite:///$AIRFLOW_HOME/sky/state.db``, else ``~/.sky-airflow/state.db``."""
    env = os.environ.get(ENV_STATE_URL, "").strip()
    if env:
        return env
    home = os.environ.get("AIRFLOW_HOME", "").strip()
    base = Path(home).expanduser() / "sky" if home else Path.home() / ".sky-airflow"
    return f"sqlite:///{base.absolute() / 'state.db'}"


def _is_sqlite_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or (db.startswith("file:") and "mode=memory" in db)


@dataclass
class EngineEntry:
    """The engines of one URL in one process.

    ``engine`` runs reads; ``write_engine`` (same pool) starts transactions with
    ``BEGIN IMMEDIATE`` on SQLite so concurrent writers queue on the busy timeout instead of
    failing on a lock upgrade. ``guard`` serializes use of a single in-memory SQLite connection.
    """

    pid: int
    engine: Engine
    write_engine: Engine
    guard: contextlib.AbstractContextManager[Any]
    schema_lock: threading.Lock = field(default_factory=threading.Lock)
    schema_ready: bool = False


def _sqlite_engine(url: URL) -> tuple[Engine, bool]:
    memory = _is_sqlite_memory(url)
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    if memory:
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        Path(url.database or "").expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=connect_args, pool_size=5, max_overflow=20)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not BEGIN on its own; _on_begin does
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine, memory


def _create(url_text: str) -> EngineEntry:
    url = make_url(url_text)
    memory = False
    if url.get_backend_name() == "sqlite":
        engine, memory = _sqlite_engine(url)
    else:
        # READ COMMITTED whatever the server default: FOR UPDATE then re-reads the committed row.
        isolation = {"isolation_level": "READ COMMITTED"} if url.get_backend_name() == "postgresql" else {}
        engine = create_engine(url, pool_pre_ping=True, **isolation)
    guard: contextlib.AbstractContextManager[Any] = threading.RLock() if memory else contextlib.nullcontext()
    return EngineEntry(
        pid=os.getpid(),
        engine=engine,
        write_engine=engine.execution_options(**{_WRITE_OPTION: True}),
        guard=guard,
    )


_entries: dict[str, EngineEntry] = {}
_entries_lock = threading.Lock()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _entries_lock
    _entries_lock = threading.Lock()
    for entry in _entries.values():
        entry.schema_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def get_entry(url: str) -> EngineEntry:
    """The cached engines for ``url`` in this process, created (tables included) on first use.

    After a fork the inherited pool is dropped without closing the parent's connections.
    """
    entry = _entries.get(url)
    if entry is None or entry.pid != os.getpid():
        with _entries_lock:
            entry = _entries.get(url)
            if entry is not None and entry.pid != os.getpid():
                entry.engine.dispose(close=False)
                entry = None
            if entry is None:
                entry = _create(url)
                _entries[url] = entry
    if not entry.schema_ready:
        with entry.schema_lock:
            if not entry.schema_ready:
                with entry.guard:
                    create_tables(entry)
                entry.schema_ready = True
    return entry


def create_tables(entry: EngineEntry, attempts: int = 5) -> None:
    """Create missing tables; safe when several processes do it at once."""
    for attempt in range(attempts):
        try:
            # On SQLite the write transaction (BEGIN IMMEDIATE) serializes check + create; on
            # PostgreSQL a transaction-scoped advisory lock does.
            with entry.write_engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK_KEY})
                Base.metadata.create_all(conn, checkfirst=True)
            return
        except DBAPIError:
            # Another process won a CREATE race our lock could not cover (other backends).
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def dispose_engines(url: str | None = None) -> None:
    """Close pooled connections and forget cached engines (all, or those of one URL)."""
    with _entries_lock:
        urls = list(_entries) if url is None else [url]
        for key in urls:
            entry = _entries.pop(key, None)
            if entry is not None:
                entry.engine.dispose(close=entry.pid == os.getpid())
