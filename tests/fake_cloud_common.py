"""Plumbing shared by the cloud API protocol fakes (tests/fake_gcp.py, tests/fake_azure.py).

Only what does not depend on a provider's protocol lives here: the loopback HTTP(S) server and its
JSON handler base, the fault-rule bookkeeping (``times``, ``spot``, ``fit``), and the bodies of the
session / per-test fixtures. What a fault rule matches on, the URLs, the headers and the error
payloads stay in each fake.
"""

from __future__ import annotations

import importlib.util
import json
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

HOST = "127.0.0.1"


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any HTTP request (requests / google-auth / azure-core) to a non-loopback host fails the test."""
    import requests.adapters

    original = requests.adapters.HTTPAdapter.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        host = urlsplit(request.url).hostname
        if host not in (HOST, "localhost"):
            raise AssertionError(f"test tried to reach {request.url}; only {HOST} is allowed")
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 request handler: `read_json` reads the request body, `send_json` answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one round trip per call, no delayed-ACK stalls

    def log_message(self, *args: Any) -> None:
        pass

    def read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def send_json(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        """Status, `headers` in order, then Content-Length and the body."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeServer:
    """A fake's lock, fault rules, call counter and server on `HOST`; thread-safe."""

    scheme = "http"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rules: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def _serve(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> None:
        """Serve `handler` on a free port of `HOST` in a daemon thread (over TLS with `context`)."""
        server = ThreadingHTTPServer((HOST, 0), handler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"{self.scheme}://{HOST}:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- test helpers -------------------------------------------------------------------------
    def add_fault(self, **rule: Any) -> None:
        with self.lock:
            self.rules.append(dict(rule))

    def clear_faults(self) -> None:
        with self.lock:
            self.rules.clear()

    def reset_stats(self) -> None:
        with self.lock:
            self.calls.clear()

    # ---- faults -------------------------------------------------------------------------------
    def _first_fault(self, matches: Callable[[dict[str, Any]], bool], spot: bool | None) -> dict | None:
        """The first rule left that `matches` the call (and its `spot`), consuming one of its
        ``times``; None if there is none, or while the rule still lets calls through (``fit``)."""
        with self.lock:
            for rule in self.rules:
                if rule.get("times") is not None and rule["times"] <= 0:
                    continue
                if not matches(rule):
                    continue
                if "spot" in rule and spot is not None and bool(rule["spot"]) != spot:
                    continue
                if rule.get("fit", 0) > 0:
                    rule["fit"] -= 1
                    return None
                if rule.get("times") is not None:
                    rule["times"] -= 1
                return rule
        return None


S = TypeVar("S", bound=FakeServer)


def serve_for_session(modules: tuple[str, ...], missing: str, start: Callable[[], S]) -> Iterator[S]:
    """The body of a session fixture: skip (fail under SKY_REQUIRE_SERVICES=1) unless the client
    `modules` are installed, then `start()` the fake and stop it at the end."""
    from tests.services import require

    require(all(importlib.util.find_spec(m) is not None for m in modules), missing)
    server = start()
    try:
        yield server
    finally:
        server.stop()


def guarded(server: S, monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> Iterator[S]:
    """The body of a per-test fixture: `env` applied (None unsets the variable: no ambient
    credentials), the loopback guard on, clean faults and stats; faults cleared afterwards."""
    for var, value in env.items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    loopback_only(monkeypatch)
    assert urlsplit(server.endpoint).hostname == HOST
    server.clear_faults()
    server.reset_stats()
    try:
        yield server
    finally:
        server.clear_faults()
