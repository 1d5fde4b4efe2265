"""The provider registers with Airflow: valid provider_info, entry points, connection fields."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

from airflow_provider_sky.get_provider_info import get_provider_info


def _schema() -> dict:
    import airflow

    return json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())


def test_provider_info_valid_against_airflow_schema() -> None:
    info = get_provider_info()
    jsonschema.validate(info, _schema())
    assert info["package-name"] == "airflow-provider-sky"


def test_entry_point_resolves_to_get_provider_info() -> None:
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_sky")]
    assert len(eps) == 1, eps
    assert eps[0].load() is get_provider_info
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("sky-airflow") == "airflow_provider_sky.cli.main:main"


def test_connection_type_and_fields_reach_providers_manager() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airflow-provider-sky" in pm.providers
    widgets = pm.connection_form_widgets
    assert "extra__sky__state_db_url" in widgets
    assert widgets["extra__sky__state_db_url"].is_sensitive
    assert "extra__sky__enabled_clouds" in widgets


def test_every_referenced_module_and_class_imports() -> None:
    import importlib

    info = get_provider_info()
    for section in ("operators", "hooks"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for conn in info["connection-types"]:
        module, _, cls = conn["hook-class-name"].rpartition(".")
        hook_cls = getattr(importlib.import_module(module), cls)
        assert hook_cls.conn_type == conn["connection-type"]
