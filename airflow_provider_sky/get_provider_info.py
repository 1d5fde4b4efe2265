"""Provider metadata read by Airflow's ProvidersManager (entry point `apache_airflow_provider`)."""

from __future__ import annotations

from typing import Any

from airflow_provider_sky import __version__

_SKY_CONN_FIELDS: dict[str, Any] = {
    "state_db_url": {
        "label": "State DB URL",
        "description": "SQLAlchemy URL of the shared cluster/job registry. Empty: SQLite under "
        "$AIRFLOW_HOME/sky/state.db. Use PostgreSQL when several workers share clusters.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "enabled_clouds": {
        "label": "Enabled clouds",
        "description": "Comma-separated clouds the optimizer may use (local, ssh, aws, gcp, azure). "
        "Empty: local only.",
        "schema": {"type": ["string", "null"], "default": "local"},
    },
    "region_preferences": {
        "label": "Region preferences",
        "description": "Comma-separated regions to prefer on ties, e.g. 'us-east-1,europe-west4'.",
        "schema": {"type": ["string", "null"]},
    },
    "local_dir": {
        "label": "Local backend directory",
        "description": "Where the embedded local backend keeps clusters. Empty: $AIRFLOW_HOME/sky/local.",
        "schema": {"type": ["string", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider description in Airflow's provider_info schema."""
    return {
        "package-name": "airflow-provider-sky",
        "name": "Sky (intercloud broker)",
        "description": "Run Airflow tasks on the cheapest or fastest cloud, region and instance, "
        "with failover, cluster reuse and data staging.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Sky",
                "external-doc-url": "https://github.com/airflow-provider-sky/airflow-provider-sky",
                "tags": ["service"],
            }
        ],
        "operators": [
            {"integration-name": "Sky", "python-modules": ["airflow_provider_sky.operators.sky"]}
        ],
        "hooks": [{"integration-name": "Sky", "python-modules": ["airflow_provider_sky.hooks.sky"]}],
        "triggers": [{"integration-name": "Sky", "python-modules": ["airflow_provider_sky.triggers.sky"]}],
        "task-decorators": [{"name": "sky", "class-name": "airflow_provider_sky.decorators.sky.sky_task"}],
        "connection-types": [
            {
                "connection-type": "sky",
                "hook-class-name": "airflow_provider_sky.hooks.sky.SkyHook",
                "hook-name": "Sky broker",
                "conn-fields": _SKY_CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port"],
                    "relabeling": {},
                },
            }
        ],
    }
