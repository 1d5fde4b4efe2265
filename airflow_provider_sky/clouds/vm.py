"""What the VM clouds (AWS, GCP, Azure) share: the SSH key pair they launch with, the known_hosts
file they record node host keys in, and SSH runners to the nodes (directly, or through a bastion:
``ssh_jump_host`` or ``ssh_proxy_command``, for nodes in private subnets)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
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
    #: Port of the nodes' sshd, and how to reach them when they have no reachable address:
    #: a bastion (``[user@]host[:port]``, same key) or an OpenSSH-style ProxyCommand (%h %p %r).
    ssh_port: int = 22
    ssh_jump_host: str | None = None
    ssh_proxy_command: str | None = None

    def configure_ssh(
        self,
        *,
        ssh_user: str | None = None,
        ssh_port: int | str | None = None,
        ssh_jump_host: str | None = None,
        ssh_proxy_command: str | None = None,
    ) -> None:
        """Validate and set how the nodes are reached (errors name the setting and the fix)."""
        if ssh_user is not None:
            if not ssh_user.strip() or any(c.isspace() for c in ssh_user):
                raise ConfigError(
                    f"{self.name}_ssh_user: {ssh_user!r} is not a user name",
                    cloud=self.name,
                    fix="set the login user of the image, e.g. 'ubuntu'",
                )
            self.ssh_user = ssh_user.strip()
        if ssh_port is not None:
            port = int(ssh_port) if str(ssh_port).strip().isdigit() else -1
            if not 0 < port < 65536:
                raise ConfigError(
                    f"{self.name}_ssh_port: {ssh_port!r} is not a TCP port",
                    cloud=self.name,
                    fix="use a number from 1 to 65535 (default 22)",
                )
            self.ssh_port = port
        if ssh_jump_host and ssh_proxy_command:
            raise ConfigError(
                f"{self.name}_ssh_jump_host and {self.name}_ssh_proxy_command are both set",
                cloud=self.name,
                fix="keep one: the bastion as [user@]host[:port], or a full proxy command",
            )
        from airflow_provider_sky.execution.ssh_connection import expand_proxy_command, parse_jump

        try:
            if ssh_jump_host:
                parse_jump(ssh_jump_host, self.ssh_user)
            if ssh_proxy_command:
                expand_proxy_command(ssh_proxy_command, "host", 22, "user")
        except ValueError as exc:
            raise ConfigError(
                f"{self.name}_{exc}",
                cloud=self.name,
                fix="see 'Private subnets and bastions' in docs/clouds.md",
            ) from exc
        self.ssh_jump_host = ssh_jump_host or None
        self.ssh_proxy_command = ssh_proxy_command or None

    def configure_from_extras(self, extra: Mapping[str, Any]) -> None:
        """Apply ``<cloud>_ssh_user``, ``_ssh_port``, ``_ssh_jump_host``, ``_ssh_proxy_command`` and
        ``_use_private_ips``, ``_ssh_cidrs``, ``_ports_cidrs`` from the sky connection's extras
        (unset ones are left as they are)."""

        def get(key: str) -> Any:
            value = extra.get(f"{self.name}_{key}")
            return None if value in (None, "") else value

        self.configure_ssh(
            ssh_user=get("ssh_user"),
            ssh_port=get("ssh_port"),
            ssh_jump_host=get("ssh_jump_host"),
            ssh_proxy_command=get("ssh_proxy_command"),
        )
        private = get("use_private_ips")
        if private is not None:
            self.use_private_ips = str(private).strip().lower() in ("1", "true", "yes", "on")
        for key in ("ssh_cidrs", "ports_cidrs"):  # comma-separated, for clouds that open ports
            raw = get(key)
            if raw is None or not hasattr(self, key):
                continue
            cidrs = tuple(c.strip() for c in str(raw).split(",") if c.strip())
            if not cidrs:
                raise ConfigError(
                    f"{self.name}_{key}: {raw!r} holds no CIDR", cloud=self.name, fix="e.g. '203.0.113.0/24,10.0.0.0/8'"
                )
            setattr(self, key, cidrs)

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
                port=int(handle.extra.get("ssh_port") or self.ssh_port),
                key_file=key,
                known_hosts=str(self.known_hosts_path()),
                strict_host_key_checking="accept-new",  # first-seen key recorded, a changed one refused
                node_ip=private[rank] if rank < len(private) else ip,
                proxy_command=self.ssh_proxy_command,
                jump_host=self.ssh_jump_host,
            )
            for rank, ip in enumerate(handle.node_ips)
        ]
