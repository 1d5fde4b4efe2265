"""Autostop on the cluster: install, (re)configure and start the head node's agent; reconcile state.

The agent (`execution.autostop_agent`, stdlib only) runs detached on the head node and stops or
tears down the cluster after it has been idle, with no Airflow process involved. Installing is
idempotent: the config is rewritten (which also resets the idle timer) and the agent is started
only if this version is not already running, so re-installing is how idle minutes change.

How the cluster is stopped is decided here, at install time, per backend:

- local backend: the agent itself stops the cluster's processes and marks ``cluster.json``
  STOPPED, or removes the cluster directory with ``down``;
- a cloud offering ``autostop_action(handle, down) -> dict | None``: that action (e.g. an SSH
  pool that must free its allocation);
- AWS / GCP / Azure VMs: ``sudo shutdown -h now`` on every node; the instance's shutdown behaviour
  turns it into stop or terminate. A cloud may offer ``prepare_autostop(handle, down)`` to set
  that behaviour (EC2: ``InstanceInitiatedShutdownBehavior``) before the agent starts;
- SSH pools: a shared host must never be shut down; the agent ends the node's jobs and writes
  ``autostopped.json``, and `refresh_cluster_status` then terminates the cluster through the
  cloud (which frees the pool allocation);
- any other backend: autostop is not installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.execution import autostop_agent as agent
from airflow_provider_sky.execution.runner import CommandRunner
from airflow_provider_sky.state import ClusterStatus, StateStore

if TYPE_CHECKING:
    from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
    from airflow_provider_sky.spec.autostop import Autostop

log = logging.getLogger(__name__)

_AGENT_SOURCE = Path(agent.__file__).read_text(encoding="utf-8")
AGENT_NAME = f"autostop_agent-{hashlib.sha256(_AGENT_SOURCE.encode()).hexdigest()[:12]}.py"
VM_CLOUDS = frozenset({"aws", "gcp", "azure"})
RELEASE_CLOUDS = frozenset({"ssh"})
SHUTDOWN_COMMAND = "sudo shutdown -h now"
DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_STARTUP_GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class AutostopConfig:
    """What the agent enforces: idle time (minutes, fractional allowed), stop or down, check interval.

    `idle_seconds` overrides `idle_minutes` (tests). `startup_grace_seconds` keeps a just-installed
    agent from stopping the cluster before its first job is submitted (file sync can take a while).
    """

    idle_minutes: float
    down: bool = False
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    idle_seconds: float | None = None
    startup_grace_seconds: float = DEFAULT_STARTUP_GRACE_SECONDS

    @property
    def effective_idle_seconds(self) -> float:
        return float(self.idle_seconds if self.idle_seconds is not None else self.idle_minutes * 60.0)

    @classmethod
    def from_spec(cls, autostop: Autostop | None, **overrides: Any) -> AutostopConfig | None:
        """From `Resources.autostop` (None: autostop off); `overrides` set the other fields."""
        if autostop is None:
            return None
        return cls(idle_minutes=float(autostop.idle_minutes), down=bool(autostop.down), **overrides)


@dataclass(frozen=True)
class AgentInfo:
    """An installed agent: its node, pid, whether this call started it, and the config written."""

    node_ip: str
    home: str
    pid: int | None
    started: bool
    config: dict[str, Any]


def _sky_path(runner: CommandRunner, name: str) -> str:
    return f"{runner.home.rstrip('/')}/{agent.SKY_DIR}/{name}"


def install_agent(runner: CommandRunner) -> str:
    """Copy this version of the agent to the node (once); return its path there."""
    path = _sky_path(runner, f"bin/{AGENT_NAME}")
    try:
        runner.read_bytes(path, 0, 1)
    except FileNotFoundError:
        runner.write_text(path, _AGENT_SOURCE, mode=0o644)
    return path


def _agent(runner: CommandRunner, command: str, timeout: float = 60.0) -> dict[str, Any]:
    argv = [runner.python, "-I", "-S", install_agent(runner), command, runner.home]
    result = runner.run(argv, timeout=timeout)
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"autostop agent {command!r} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


def local_action(cloud: LocalCloud, handle: ClusterHandle) -> dict[str, Any]:
    """The agent's action for a local-backend cluster (the same lock as `LocalCloud` uses)."""
    cdir = handle.extra.get("cluster_dir") or str(cloud.cluster_dir(handle.cluster_name).resolve())
    lock_file = cloud.base_dir.resolve() / "clusters" / f".{handle.cluster_name}.lock"
    return {"kind": "local", "cluster_dir": cdir, "lock_file": str(lock_file), "grace": cloud.cancel_grace}


def autostop_action(
    cloud: Cloud, handle: ClusterHandle, runners: Sequence[CommandRunner], down: bool
) -> dict[str, Any] | None:
    """How the agent stops this cluster (see the module docstring); None when not supported."""
    if isinstance(cloud, LocalCloud):
        return local_action(cloud, handle)
    custom = getattr(cloud, "autostop_action", None)
    if callable(custom):
        return custom(handle, down)
    if cloud.name in RELEASE_CLOUDS:
        return {"kind": "release", "grace": 10.0}
    if cloud.name in VM_CLOUDS:
        prepare = getattr(cloud, "prepare_autostop", None)
        if callable(prepare):
            prepare(handle, down)
        workers = [{**r.node_spec(), "rank": i} for i, r in enumerate(runners) if i > 0]
        return {"kind": "command", "command": SHUTDOWN_COMMAND, "workers": workers}
    return None


def install_autostop(
    runners: Sequence[CommandRunner],
    config: AutostopConfig,
    action: dict[str, Any],
    cluster_name: str = "",
) -> AgentInfo:
    """Write the agent's config on the head node (resetting its idle timer) and make sure it runs."""
    head = runners[0]
    data = {
        "cluster_name": cluster_name,
        "idle_seconds": config.effective_idle_seconds,
        "down": config.down,
        "interval_seconds": config.interval_seconds,
        "startup_grace_seconds": config.startup_grace_seconds,
        "set_at": None,  # stamped by the agent's `start` with the node's clock
        "action": action,
    }
    head.write_text(_sky_path(head, agent.CONFIG_FILE), json.dumps(data, indent=1))
    started = _agent(head, "start")
    return AgentInfo(head.node_ip, head.home, started.get("pid"), bool(started.get("started")), data)


def ensure_autostop(cloud: Cloud, handle: ClusterHandle, config: AutostopConfig | None) -> AgentInfo | None:
    """Install/refresh autostop on a launched cluster; with `config` None, stop any running agent."""
    runners = cloud.runners(handle)
    if config is None:
        disable_autostop(runners[0])
        return None
    action = autostop_action(cloud, handle, runners, config.down)
    if action is None:
        log.warning(
            "autostop is not supported on %s: cluster %s will not stop by itself",
            cloud.name,
            handle.cluster_name,
        )
        return None
    return install_autostop(runners, config, action, handle.cluster_name)


def disable_autostop(head: CommandRunner) -> bool:
    """Turn autostop off on the head node: remove the config, stop the agent. True if one ran."""
    try:
        head.read_bytes(_sky_path(head, agent.CONFIG_FILE), 0, 1)
    except FileNotFoundError:
        return False
    head.write_text(_sky_path(head, agent.CONFIG_FILE), json.dumps({"idle_seconds": None}))
    return bool(_agent(head, "stop").get("stopped"))


def agent_status(head: CommandRunner) -> dict[str, Any]:
    """{"running", "pid", "config", "idle_seconds", "busy"} as the agent sees the node now."""
    return _agent(head, "status")


def read_autostop_log(head: CommandRunner, max_bytes: int = 65536) -> str:
    """The tail of the agent's decision log ("" when there is none)."""
    try:
        return head.read_bytes(_sky_path(head, agent.LOG_FILE), -max_bytes, max_bytes).decode(
            "utf-8", "replace"
        )
    except FileNotFoundError:
        return ""


# ---- state reconciliation ----
def released_by_agent(cloud: Cloud, handle: ClusterHandle) -> bool:
    """Whether the head node's agent ended the cluster's work (``release`` action marker)."""
    try:
        head = cloud.runners(handle)[0]
        head.read_bytes(_sky_path(head, agent.RELEASE_MARKER), 0, 1)
    except FileNotFoundError:
        return False
    except Exception:  # unreachable host: nothing to conclude
        log.warning("cannot read the autostop marker of %s", handle.cluster_name, exc_info=True)
        return False
    return True


def refresh_cluster_status(core_or_store: Any, cloud: Cloud | None, name: str) -> ClusterStatus | None:
    """Bring the state store in line with the cloud after autostop (or anything else) acted.

    Gone from the cloud → TERMINATED; the cloud reports STOPPED while the store says UP → STOPPED
    (and back to UP if someone started it). `core_or_store` is a `SkyCore` (its clouds are used
    when `cloud` is None) or a `StateStore`. Returns the cluster's status afterwards (None: unknown).
    """
    store: StateStore = getattr(core_or_store, "store", core_or_store)
    record = store.get_cluster(name)
    if record is None:
        return None
    if cloud is None:
        cloud = getattr(core_or_store, "clouds", {}).get(record.cloud)
    if cloud is None or record.status in (ClusterStatus.TERMINATED, ClusterStatus.INIT):
        return record.status
    autostopped = record.autostop_idle_minutes is not None
    handle = cloud.find(name)
    if handle is not None and cloud.name in RELEASE_CLOUDS and released_by_agent(cloud, handle):
        cloud.terminate(handle)  # frees the pool allocation
        store.transition_cluster(
            name, ClusterStatus.TERMINATED, from_=record.status, status_reason="released by autostop"
        )
    elif handle is None:
        reason = "gone from the cloud" + (" (autostop down)" if autostopped and record.autostop_down else "")
        store.transition_cluster(name, ClusterStatus.TERMINATED, from_=record.status, status_reason=reason)
    else:
        status_of = getattr(cloud, "status", None)
        seen = status_of(name) if callable(status_of) else None
        if seen == "STOPPED" and record.status is ClusterStatus.UP:
            reason = "stopped by autostop" if autostopped else "stopped outside the broker"
            store.transition_cluster(
                name, ClusterStatus.STOPPED, from_=ClusterStatus.UP, status_reason=reason
            )
        elif seen == "UP" and record.status is ClusterStatus.STOPPED:
            store.transition_cluster(name, ClusterStatus.UP, from_=ClusterStatus.STOPPED, status_reason=None)
    after = store.get_cluster(name)
    return after.status if after else None
