"""Helpers for tests that need an outside service (PostgreSQL, sshd, emulators).

On a user's machine a missing service skips the test with the reason; under `.ci/run`
(`SKY_REQUIRE_SERVICES=1`) it fails, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("SKY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    """True when missing services must fail the run instead of skipping."""
    return os.environ.get("SKY_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def require(available: bool, reason: str) -> None:
    """Skip (or fail under CI) when a service is not available."""
    if available:
        return
    if services_required():
        pytest.fail(f"required service missing under SKY_REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason=reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_postgres() -> str:
    """Return the PostgreSQL test URL, or skip/fail when it is not reachable."""
    require(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    try:
        import psycopg  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        require(False, "psycopg is not installed (pip install '.[postgres]')")
    return POSTGRES_URL
