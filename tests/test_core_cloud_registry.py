"""The core builds each enabled cloud from its settings (resolved Airflow connections)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings


def test_gcp_and_azure_are_built_from_connection_fields(tmp_path: Path) -> None:
    settings = SkySettings(
        state_db_url=f"sqlite:///{tmp_path / 's.db'}",
        enabled_clouds=("local", "gcp", "azure"),
        gcp={"extra": {"project": "proj-123", "api_endpoint": "http://127.0.0.1:9"}},
        azure={"login": "client", "password": "secret", "extra": {"tenantId": "t", "subscriptionId": "sub-1"}},
    )
    core = SkyCore.from_settings(settings)
    assert sorted(core.clouds) == ["azure", "gcp", "local"]
    assert core.clouds["gcp"].project == "proj-123"
    assert core.clouds["azure"].subscription_id == "sub-1"
    assert "secret" not in repr(core.clouds["azure"])


def test_azure_without_subscription_is_a_config_error(tmp_path: Path) -> None:
    settings = SkySettings(state_db_url=f"sqlite:///{tmp_path / 's.db'}", enabled_clouds=("azure",), azure={"extra": {}})
    with pytest.raises(ConfigError, match=r"(?i)subscription"):
        SkyCore.from_settings(settings)


def test_unknown_cloud_in_settings_is_rejected() -> None:
    with pytest.raises(ValueError, match="enabled_clouds"):
        SkySettings(enabled_clouds=("local", "oracle"))


def test_gcp_and_azure_take_their_ssh_settings_from_the_sky_connection(tmp_path: Path) -> None:
    settings = SkySettings(
        state_db_url=f"sqlite:///{tmp_path / 's.db'}",
        enabled_clouds=("gcp", "azure"),
        gcp={"extra": {"project": "proj-123", "api_endpoint": "http://127.0.0.1:9"}},
        azure={"login": "client", "password": "secret", "extra": {"tenantId": "t", "subscriptionId": "sub-1"}},
        extra={
            "gcp_ssh_user": "ops",
            "gcp_ssh_jump_host": "bastion@10.0.0.5:2222",
            "gcp_use_private_ips": "true",
            "azure_ssh_port": "2200",
            "azure_ssh_proxy_command": "nc %h %p",
        },
    )
    core = SkyCore.from_settings(settings)
    gcp, azure = core.clouds["gcp"], core.clouds["azure"]
    assert (gcp.ssh_user, gcp.ssh_jump_host, gcp.use_private_ips) == ("ops", "bastion@10.0.0.5:2222", True)
    assert (azure.ssh_port, azure.ssh_proxy_command, azure.use_private_ips) == (2200, "nc %h %p", False)


def test_bad_gcp_ssh_setting_names_the_setting(tmp_path: Path) -> None:
    settings = SkySettings(
        state_db_url=f"sqlite:///{tmp_path / 's.db'}",
        enabled_clouds=("gcp",),
        gcp={"extra": {"project": "proj-123"}},
        extra={"gcp_ssh_port": "ssh"},
    )
    with pytest.raises(ConfigError, match="gcp_ssh_port"):
        SkyCore.from_settings(settings)
