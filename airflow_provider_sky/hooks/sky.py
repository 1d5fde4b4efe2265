"""SkyHook: turns an Airflow connection of type `sky` into the broker core."""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings


def connection_fields(conn: Any) -> dict[str, Any]:
    """An Airflow connection as the plain mapping the core layers accept (secrets included, never logged)."""
    return {
        "conn_id": conn.conn_id,
        "conn_type": conn.conn_type,
        "host": conn.host,
        "login": conn.login,
        "password": conn.password,
        "port": conn.port,
        "extra": conn.extra_dejson if conn.extra else {},
    }


def aws_session_kwargs(conn: Any) -> dict[str, Any]:
    """boto3 session arguments (and an endpoint override) from an Airflow `aws` connection."""
    extra = conn.extra_dejson if conn.extra else {}
    return {
        "aws_access_key_id": conn.login or extra.get("aws_access_key_id"),
        "aws_secret_access_key": conn.password or extra.get("aws_secret_access_key"),
        "aws_session_token": extra.get("aws_session_token"),
        "region_name": extra.get("region_name"),
        "profile_name": extra.get("profile_name"),
        "endpoint_url": extra.get("endpoint_url"),
    }


class SkyHook(BaseHook):
    """Access to the Sky broker configured by a `sky` connection.

    The connection is optional: without `sky_default` the hook uses the embedded defaults
    (local backend, SQLite state DB under ``$AIRFLOW_HOME/sky``). Its extras (``state_db_url``,
    ``enabled_clouds``, ``region_preferences``, ``local_dir``) are the declarative conn-fields.
    """

    conn_name_attr = "sky_conn_id"
    default_conn_name = "sky_default"
    conn_type = "sky"
    hook_name = "Sky broker"

    def __init__(self, sky_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sky_conn_id = sky_conn_id

    def get_settings(self) -> SkySettings:
        """Read the connection's extras; a missing default connection means built-in defaults."""
        try:
            conn = self.get_connection(self.sky_conn_id)
        except AirflowNotFoundException:
            if self.sky_conn_id != self.default_conn_name:
                raise
            return SkySettings.from_mapping({})
        extras = conn.extra_dejson if conn.extra else {}
        flat = {key.removeprefix(f"extra__{self.conn_type}__"): value for key, value in extras.items()}
        for key, value in list(flat.items()):
            if isinstance(value, list):
                flat[key] = ",".join(map(str, value))
        settings = SkySettings.from_mapping(flat)
        if "ssh" in settings.enabled_clouds and settings.ssh_pool_conn_id:
            pool = self.get_connection(settings.ssh_pool_conn_id)
            settings = dataclasses.replace(settings, ssh_pool=connection_fields(pool))
        if "gcp" in settings.enabled_clouds and settings.gcp_conn_id:
            settings = dataclasses.replace(settings, gcp=connection_fields(self.get_connection(settings.gcp_conn_id)))
        if "azure" in settings.enabled_clouds and settings.azure_conn_id:
            conn = self.get_connection(settings.azure_conn_id)
            settings = dataclasses.replace(settings, azure=connection_fields(conn))
        if "aws" in settings.enabled_clouds and settings.aws_conn_id:
            settings = dataclasses.replace(settings, aws=aws_session_kwargs(self.get_connection(settings.aws_conn_id)))
        return settings

    @cached_property
    def core(self) -> SkyCore:
        """The broker core for this connection (state store + enabled clouds)."""
        return SkyCore.from_settings(self.get_settings())

    def get_conn(self) -> SkyCore:
        """Airflow's conventional accessor: the core object."""
        return self.core

    def test_connection(self) -> tuple[bool, str]:
        """Check that the state DB opens and the enabled clouds load."""
        try:
            core = self.core
            clusters = core.store.list_clusters()
        except Exception as exc:  # surfaced in the UI's Test button
            return False, f"{type(exc).__name__}: {exc}"
        return True, json.dumps({"clouds": sorted(core.clouds), "clusters": len(clusters)})
