"""Engine set-up: default URL, directories, SQLite tuning, caching and fork safety."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, inspect

from airflow_provider_sky.state import ClusterStatus, StateStore, default_state_url, dispose_engines
from airflow_provider_sky.state import engine as engine_mod
from airflow_provider_sky.state.models import Base
from tests import test_state_support as support

pg_admin = support.pg_admin
store_url = support.store_url
store = support.store


def test_default_url_prefers_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKY_STATE_DB_URL", "postgresql+psycopg://x@h/db")
    assert default_state_url() == "postgresql+psycopg://x@h/db"
    monkeypatch.delenv("SKY_STATE_DB_URL")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert default_state_url() == f"sqlite:///{tmp_path / 'home' / 'sky' / 'state.db'}"
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_state_url() == f"sqlite:///{tmp_path / 'user' / '.sky-airflow' / 'state.db'}"


def test_default_store_creates_directory_and_tables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SKY_STATE_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "af"))
    st = StateStore()
    try:
        assert not (tmp_path / "af").exists()  # nothing happens before first use
        assert st.list_clusters() == []
        db = tmp_path / "af" / "sky" / "state.db"
        assert db.is_file()
        tables = set(inspect(engine_mod.get_entry(st.url).engine).get_table_names())
        assert tables == set(Base.metadata.tables)
        assert all(name.startswith("sky_") for name in tables)
    finally:
        dispose_engines(st.url)


def test_table_creation_is_idempotent(store_url: str) -> None:
    StateStore(store_url).add_cluster("c1")
    dispose_engines(store_url)  # a new process-like start re-runs creation on existing tables
    entry = engine_mod.get_entry(store_url)
    engine_mod.create_tables(entry)
    assert StateStore(store_url).get_cluster("c1") is not None


def test_sqlite_uses_wal_busy_timeout_and_begin_immediate_for_writes(tmp_path: Path) -> None:
    url = support.sqlite_url(tmp_path)
    st = StateStore(url)
    st.add_cluster("c1")
    entry = engine_mod.get_entry(url)
    with entry.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    seen: list[str] = []

    def _record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(entry.engine, "before_cursor_execute", _record)
    try:
        st.transition_cluster("c1", ClusterStatus.UP)
        st.next_job("c1")
        st.get_cluster("c1")
        st.list_jobs()
    finally:
        event.remove(entry.engine, "before_cursor_execute", _record)
        dispose_engines(url)
    assert seen == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE", "BEGIN", "BEGIN"]


def test_in_memory_sqlite_is_shared_and_serialized_across_threads() -> None:
    url = "sqlite://"
    st = StateStore(url)
    try:
        ids: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(10):
                job = st.next_job("mem")
                with lock:
                    ids.append(job.job_id)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(ids) == list(range(1, 41))
    finally:
        dispose_engines(url)


def test_engine_is_cached_per_url_and_replaced_after_pid_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = support.sqlite_url(tmp_path)
    try:
        first = engine_mod.get_entry(url)
        assert engine_mod.get_entry(url) is first
        disposed: list[bool] = []
        monkeypatch.setattr(first.engine, "dispose", lambda close=True: disposed.append(close))
        real_pid = engine_mod.os.getpid()
        monkeypatch.setattr(engine_mod.os, "getpid", lambda: real_pid + 100000)
        second = engine_mod.get_entry(url)
        assert second is not first and second.pid == real_pid + 100000
        assert disposed == [False]  # the parent's connections are left alone
    finally:
        monkeypatch.undo()
        dispose_engines(url)


def _child_uses_store(url: str) -> None:
    st = StateStore(url)
    for _ in range(3):
        st.next_job("fork")
    assert st.transition_cluster("c1", ClusterStatus.UP, from_=ClusterStatus.INIT)


def test_store_survives_fork(store: StateStore) -> None:
    store.add_cluster("c1")
    store.next_job("fork")  # the parent now holds pooled connections
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_uses_store, args=(store.url,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    # the parent's pooled connection still works after the child exited
    assert store.next_job("fork").job_id == 5
    assert store.get_cluster("c1").status is ClusterStatus.UP
