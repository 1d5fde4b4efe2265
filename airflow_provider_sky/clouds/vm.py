"""What the VM clouds (AWS, GCP, Azure) share: the SSH key pair they launch with, the known_hosts
file they record node host keys in, and SSH runners to the nodes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import ConfigError

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner

SSH_RUNNER_MODULE = "airflow_provider_sky.execution.ssh_runner"


class SshVmCloud(Cloud):
    """A cloud whose nodes are VMs reached over SSH with a key this project created."""

    key_dir: Path
    ssh_user: str
    runner_factory: Any = None

    def key_path(self) -> Path:
        return self.key_dir / "sky-key"

    def known_hosts_path(self) -> Path:
        """Host keys of this cloud's nodes, recorded on first contact (next to the key directory)."""
        return self.key_dir.parent / f"{self.name}_known_hosts"

    def runners(self, handle: ClusterHandle) -> list[CommandRunner]:
        """SSH runners, head first (`execution.ssh_runner`, imported lazily)."""
        if self.runner_factory is not None:
            return [self.runner_factory(ip, handle, rank) for rank, ip in enumerate(handle.node_ips)]
        try:
            runner_cls = importlib.import_module(SSH_RUNNER_MODULE).SshRunner
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"running commands on {self.name} nodes needs {SSH_RUNNER_MODULE}.SshRunner ({exc})",
                cloud=self.name,
                fix="install a version of airflow-provider-sky with the SSH runner (and paramiko)",
            ) from exc
        user = handle.extra.get("ssh_user") or self.ssh_user
        key = handle.extra.get("key_path") or str(self.key_path())
        private = list(handle.extra.get("private_ips") or handle.node_ips)
        return [
            runner_cls(
                ip,
                user,
                port=22,
                key_file=key,
                known_hosts=str(self.known_hosts_path()),
                strict_host_key_checking="accept-new",  # first-seen key recorded, a changed one refused
                node_ip=private[rank] if rank < len(private) else ip,
            )
            for rank, ip in enumerate(handle.node_ips)
        ]
