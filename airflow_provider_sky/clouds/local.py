"""The embedded local backend: a cluster is a set of directories and processes on this machine.

Layout: ``<base>/clusters/<name>/cluster.json`` (handle, status, labels) and one
``node-<i>/`` directory per node, each the home of a `SubprocessRunner`. Every node has IP
127.0.0.1, region and zone "local", and instance type ``local-<cpus>cpu`` (this machine).
Requests this machine cannot honour (accelerators, more CPUs or memory than it has, spot) are
refused with `ConfigError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import ConfigError, ProvisionError, QuotaError
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import NODE_HOME_ENV, pid_alive, write_atomic
from airflow_provider_sky.execution.runner import CommandRunner, SubprocessRunner

if TYPE_CHECKING:
    from airflow_provider_sky.spec.resources import Resources

LOCAL = "local"
LOCAL_IP = "127.0.0.1"
STATUS_UP = "UP"
STATUS_STOPPED = "STOPPED"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CLUSTER_FILE = "cluster.json"
_FIX_ACCEL = (
    "run this task on a cloud or an ssh pool (set resources.cloud / infra), or drop resources.accelerators"
)


def default_base_dir() -> Path:
    """``$SKY_LOCAL_DIR``, else ``$AIRFLOW_HOME/sky/local``, else ``~/.sky-airflow/local``."""
    if os.environ.get("SKY_LOCAL_DIR"):
        return Path(os.environ["SKY_LOCAL_DIR"]).expanduser()
    if os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"]).expanduser() / "sky" / "local"
    return Path.home() / ".sky-airflow" / "local"


def machine_cpus() -> int:
    """CPUs this process may use (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def machine_memory_gb() -> float:
    """Total memory of this machine in GiB (from /proc/meminfo, else sysconf)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return 0.0


def local_instance_type() -> str:
    return f"local-{machine_cpus()}cpu"


def _quantity(value: Any) -> tuple[float, str] | None:
    """(amount, text) of a cpus/memory request: a spec Quantity, a number, or "8" / "8+"."""
    if value is None:
        return None
    if hasattr(value, "value"):
        amount = float(value.value)
        return amount, f"{amount:g}{'+' if getattr(value, 'at_least', False) else ''}"
    text = str(value).strip()
    try:
        return float(text.rstrip("+")), text
    except ValueError:
        return None


class LocalCloud(Cloud):
    """Clusters as directories under `base_dir`; jobs as detached processes on this machine."""

    name = LOCAL

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, cancel_grace: float = 5.0) -> None:
        self.base_dir = Path(base_dir).expanduser() if base_dir else default_base_dir()
        self.cancel_grace = cancel_grace

    def __repr__(self) -> str:
        return f"LocalCloud({str(self.base_dir)!r})"

    # ---- layout ----
    def cluster_dir(self, cluster_name: str) -> Path:
        return self.base_dir / "clusters" / cluster_name

    @contextlib.contextmanager
    def _locked(self, cluster_name: str) -> Iterator[None]:
        root = self.base_dir / "clusters"
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{cluster_name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _meta(self, cluster_name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.cluster_dir(cluster_name) / _CLUSTER_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _write_meta(self, cluster_name: str, meta: Mapping[str, Any]) -> None:
        write_atomic(str(self.cluster_dir(cluster_name) / _CLUSTER_FILE), json.dumps(meta, indent=1), 0o644)

    # ---- Cloud API ----
    def regions(self) -> list[str]:
        return [LOCAL]

    def zones(self, region: str) -> list[str]:
        return [LOCAL] if region == LOCAL else []

    def check_request(
        self,
        num_nodes: int,
        resources: Resources | None = None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool = False,
    ) -> None:
        """Raise `ConfigError` when this machine cannot honour the request."""

        def refuse(problem: str, fix: str) -> ConfigError:
            return ConfigError(
                problem, cloud=LOCAL, region=LOCAL, zone=LOCAL, instance_type=local_instance_type(), fix=fix
            )

        if num_nodes < 1:
            raise refuse(f"num_nodes must be at least 1 (got {num_nodes})", "set num_nodes >= 1")
        cloud = getattr(resources, "cloud", None)
        if cloud not in (None, LOCAL):
            raise refuse(
                f"resources ask for cloud {cloud!r}, not the local backend", "route this task to that cloud"
            )
        region = region or getattr(resources, "region", None)
        zone = zone or getattr(resources, "zone", None)
        for what, got in (("region", region), ("zone", zone)):
            if got not in (None, LOCAL):
                raise refuse(
                    f"the local backend has only {what} 'local' (got {got!r})", f"drop resources.{what}"
                )
        accelerators = getattr(resources, "accelerators", None)
        if accelerators:
            wanted = ", ".join(f"{name}:{count}" for name, count in dict(accelerators).items())
            raise refuse(
                f"resources.accelerators: the local backend has no accelerators (asked for {wanted})",
                _FIX_ACCEL,
            )
        if use_spot or getattr(resources, "use_spot", False):
            raise refuse("the local backend has no spot instances", "set use_spot: false")
        instance_type = instance_type or getattr(resources, "instance_type", None)
        if instance_type not in (None, local_instance_type()):
            raise refuse(
                f"the local backend has only instance type {local_instance_type()!r} (got {instance_type!r})",
                "drop resources.instance_type or run on a cloud",
            )
        cpus = _quantity(getattr(resources, "cpus", None))
        if cpus and cpus[0] > machine_cpus():
            raise refuse(
                f"resources.cpus: {cpus[1]} requested, this machine has {machine_cpus()} CPUs",
                f"ask for at most {machine_cpus()} CPUs, or run on a cloud",
            )
        memory = _quantity(getattr(resources, "memory", None))
        total = machine_memory_gb()
        if memory and total and memory[0] > total:
            raise refuse(
                f"resources.memory: {memory[1]} GB requested, this machine has {total:.1f} GB",
                f"ask for at most {int(total)} GB, or run on a cloud",
            )

    def launch(
        self,
        cluster_name: str,
        num_nodes: int,
        resources: Resources | None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> ClusterHandle:
        if not _NAME_RE.match(cluster_name or ""):
            raise ConfigError(
                f"cluster name {cluster_name!r} is not valid",
                cloud=LOCAL,
                fix="use lower-case letters, digits and '-', starting with a letter or digit",
            )
        self.check_request(num_nodes, resources, region, zone, instance_type, use_spot)
        with self._locked(cluster_name):
            meta = self._meta(cluster_name)
            if meta is not None:
                handle = ClusterHandle.from_dict(meta["handle"])
                if handle.num_nodes != num_nodes:
                    raise ConfigError(
                        f"cluster {cluster_name} exists with {handle.num_nodes} nodes, {num_nodes} requested",
                        cloud=LOCAL,
                        region=LOCAL,
                        zone=LOCAL,
                        fix="use another cluster name or terminate the existing cluster",
                    )
                if meta.get("status") != STATUS_UP:
                    self._write_meta(cluster_name, {**meta, "status": STATUS_UP})
                return handle
            cdir = self.cluster_dir(cluster_name)
            try:
                node_dirs = []
                for i in range(num_nodes):
                    ndir = cdir / f"node-{i}"
                    (ndir / ".sky").mkdir(parents=True, exist_ok=True, mode=0o700)
                    node_dirs.append(str(ndir.resolve()))
                handle = ClusterHandle(
                    cloud=LOCAL,
                    cluster_name=cluster_name,
                    region=LOCAL,
                    zone=LOCAL,
                    instance_type=local_instance_type(),
                    num_nodes=num_nodes,
                    node_ips=tuple(LOCAL_IP for _ in range(num_nodes)),
                    node_ids=tuple(f"node-{i}" for i in range(num_nodes)),
                    extra={"cluster_dir": str(cdir.resolve()), "node_dirs": node_dirs},
                )
                self._write_meta(
                    cluster_name,
                    {
                        "handle": handle.to_dict(),
                        "status": STATUS_UP,
                        "labels": dict(labels or {}),
                        "created_at": time.time(),
                    },
                )
            except OSError as exc:
                shutil.rmtree(cdir, ignore_errors=True)
                raise self.classify_error(exc) from exc
            return handle

    def find(self, cluster_name: str) -> ClusterHandle | None:
        meta = self._meta(cluster_name)
        return ClusterHandle.from_dict(meta["handle"]) if meta else None

    def status(self, cluster_name: str) -> str | None:
        """ "UP", "STOPPED", or None when there is no such cluster."""
        meta = self._meta(cluster_name)
        return meta.get("status") if meta else None

    def runners(self, handle: ClusterHandle) -> list[CommandRunner]:
        node_dirs = handle.extra.get("node_dirs") or [
            str(self.cluster_dir(handle.cluster_name) / node_id) for node_id in handle.node_ids
        ]
        return [SubprocessRunner(d, node_ip=ip) for d, ip in zip(node_dirs, handle.node_ips, strict=True)]

    def _kill_everything(self, handle: ClusterHandle) -> None:
        cdir = Path(handle.extra.get("cluster_dir") or self.cluster_dir(handle.cluster_name))
        if not cdir.exists():
            return
        for runner in self.runners(handle):
            if Path(runner.home).exists():
                jobs.cancel_all_jobs(runner, grace=self.cancel_grace)
        kill_processes_under(str(cdir), grace=self.cancel_grace)

    def stop(self, handle: ClusterHandle) -> None:
        with self._locked(handle.cluster_name):
            meta = self._meta(handle.cluster_name)
            if meta is None:
                return
            self._kill_everything(handle)
            self._write_meta(handle.cluster_name, {**meta, "status": STATUS_STOPPED})

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        with self._locked(handle.cluster_name):
            meta = self._meta(handle.cluster_name)
            if meta is None:
                raise ConfigError(
                    f"cluster {handle.cluster_name} does not exist", cloud=LOCAL, fix="launch it again"
                )
            if meta.get("status") != STATUS_UP:
                self._write_meta(handle.cluster_name, {**meta, "status": STATUS_UP})
            return ClusterHandle.from_dict(meta["handle"])

    def terminate(self, handle: ClusterHandle) -> None:
        with self._locked(handle.cluster_name):
            self._kill_everything(handle)
            cdir = Path(handle.extra.get("cluster_dir") or self.cluster_dir(handle.cluster_name))
            shutil.rmtree(cdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.base_dir / "clusters" / f".{handle.cluster_name}.lock").unlink()

    def classify_error(self, exc: BaseException) -> ProvisionError:
        if isinstance(exc, ProvisionError):
            return exc
        where = {"cloud": LOCAL, "region": LOCAL, "zone": LOCAL}
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return QuotaError(
                f"no disk space for the local cluster: {exc}",
                fix=f"free space under {self.base_dir}",
                **where,
            )
        if isinstance(exc, PermissionError):
            return ConfigError(
                f"cannot write the local cluster directory: {exc}",
                fix=f"make {self.base_dir} writable or set SKY_LOCAL_DIR",
                **where,
            )
        return super().classify_error(exc)


def _marked_processes(prefix: str) -> list[int]:
    """Pids of this user's processes whose environment says they belong under `prefix` (Linux)."""
    needle = f"{NODE_HOME_ENV}=".encode()
    found = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(needle):
                home = var[len(needle) :].decode("utf-8", "replace")
                if home == prefix or home.startswith(prefix.rstrip("/") + "/"):
                    found.append(int(entry))
                break
    return found


def kill_processes_under(prefix: str, grace: float = 5.0) -> list[int]:
    """Kill stragglers started on nodes under `prefix` (e.g. daemons that left their job's group)."""
    pids = [p for p in _marked_processes(prefix) if pid_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return pids
