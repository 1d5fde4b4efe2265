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
    "ssh_pool_conn_id": {
        "label": "SSH node pool connection",
        "description": "Id of a sky_ssh_pool connection; used when 'ssh' is in enabled clouds.",
        "schema": {"type": ["string", "null"]},
    },
    "aws_conn_id": {
        "label": "AWS connection",
        "description": "Id of an Airflow aws connection for EC2 (empty: boto3's default credential chain).",
        "schema": {"type": ["string", "null"]},
    },
    "gcp_conn_id": {
        "label": "GCP connection",
        "description": "Id of an Airflow google_cloud_platform connection for Compute Engine.",
        "schema": {"type": ["string", "null"]},
    },
    "azure_conn_id": {
        "label": "Azure connection",
        "description": "Id of an Airflow azure connection (service principal, subscriptionId) for VMs.",
        "schema": {"type": ["string", "null"]},
    },
    "retry_until_up": {
        "label": "Retry until up",
        "description": "Keep retrying every placement (with backoff) until a launch succeeds or times out.",
        "schema": {"type": ["boolean", "null"]},
    },
    "local_dir": {
        "label": "Local backend directory",
        "description": "Where the embedded local backend keeps clusters. Empty: $AIRFLOW_HOME/sky/local.",
        "schema": {"type": ["string", "null"]},
    },
}


_SSH_POOL_CONN_FIELDS: dict[str, Any] = {
    "hosts": {
        "label": "Hosts",
        "description": "Comma-separated hosts of the pool: host, host:port or user@host:port.",
        "schema": {"type": ["string", "null"]},
    },
    "user": {"label": "User", "description": "SSH user (default: Login).", "schema": {"type": ["string", "null"]}},
    "private_key": {
        "label": "Private key",
        "description": "The SSH private key text (or use key_file / the Password field).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "key_file": {"label": "Key file", "description": "Path of the private key on the workers.", "schema": {"type": ["string", "null"]}},
    "known_hosts": {
        "label": "Known hosts",
        "description": "known_hosts lines (or a file path) used to verify host keys; checking is on by default.",
        "schema": {"type": ["string", "null"]},
    },
    "price_per_hour": {
        "label": "Price per host-hour",
        "description": "Amortized price the optimizer sees for one host-hour (default 0).",
        "schema": {"type": ["number", "null"]},
    },
    "hosts_spec": {
        "label": "Host resources",
        "description": 'JSON per host: {"gpu1": {"cpus": 32, "memory_gb": 256, "gpus": {"A100": 4}}}; probed when absent.',
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
        "hooks": [{"integration-name": "Sky", "python-modules": ["airflow_provider_sky.hooks.sky", "airflow_provider_sky.hooks.ssh_pool", "airflow_provider_sky.hooks.storage"]}],
        "transfers": [
            {
                "source-integration-name": "Sky",
                "target-integration-name": "Sky",
                "python-module": "airflow_provider_sky.transfers.sky_storage",
            }
        ],
        "triggers": [{"integration-name": "Sky", "python-modules": ["airflow_provider_sky.triggers.sky"]}],
        "extra-links": ["airflow_provider_sky.links.sky.SkyClusterLink"],
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
            },
            {
                "connection-type": "sky_ssh_pool",
                "hook-class-name": "airflow_provider_sky.hooks.ssh_pool.SkySshPoolHook",
                "hook-name": "Sky on-prem SSH node pool",
                "conn-fields": _SSH_POOL_CONN_FIELDS,
                "ui-field-behaviour": {"hidden-fields": ["schema"], "relabeling": {"password": "Private key"}},
            },
        ],
    }
