"""SkySshPoolHook: an on-prem SSH node pool described by a `sky_ssh_pool` connection."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_sky.hooks.sky import connection_fields


class SkySshPoolHook(BaseHook):
    """Reads a `sky_ssh_pool` connection: hosts, user, key, known hosts, per-host resources, price."""

    conn_name_attr = "sky_ssh_pool_conn_id"
    default_conn_name = "sky_ssh_pool_default"
    conn_type = "sky_ssh_pool"
    hook_name = "Sky on-prem SSH node pool"

    def __init__(self, sky_ssh_pool_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sky_ssh_pool_conn_id = sky_ssh_pool_conn_id

    def get_conn(self) -> Any:
        """The pool as a cloud backend (an `SshPoolCloud`)."""
        from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud

        return SshPoolCloud.from_connection(connection_fields(self.get_connection(self.sky_ssh_pool_conn_id)))

    def test_connection(self) -> tuple[bool, str]:
        """Reach every host over SSH and report what it offers."""
        try:
            cloud = self.get_conn()
            hosts = [cloud.probe(h) for h in cloud.hosts]
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, ", ".join(f"{h.key}: {h.cpus} cpus" for h in hosts)
