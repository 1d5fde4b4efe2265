"""Shared fixtures and helpers of the state tests (no tests here).

Test modules bind the fixtures with ``name = test_state_support.name`` so every state test
runs once on SQLite (a temporary file) and once on PostgreSQL (a throwaway schema).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from airflow_provider_sky.state import StateStore, dispose_engines
from tests.services import require_postgres

BACKENDS = ["sqlite", "postgresql"]


def sqlite_url(directory: Path) -> str:
    """A SQLite URL for a fresh database file under ``directory``."""
    return f"sqlite:///{directory / 'state.db'}"


def pg_schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with ``search_path`` set to ``schema`` on every connection."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An engine on the PostgreSQL test database, for creating and dropping schemas."""
    engine = create_engine(require_postgres(), pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty state database (tables not created yet), on each backend."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        yield url
        dispose_engines(url)
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    schema = f"sky_state_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = pg_schema_url(require_postgres(), schema)
    try:
        yield url
    finally:
        dispose_engines(url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(store_url: str) -> StateStore:
    """A ``StateStore`` on a fresh database of each backend."""
    return StateStore(store_url)
