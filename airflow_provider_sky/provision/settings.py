"""Broker settings, independent of where they come from (an Airflow connection, env, defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

KNOWN_CLOUDS = ("local", "ssh", "aws", "gcp", "azure")


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class SkySettings:
    """What the core needs to know to plan and launch: state DB, clouds, preferences."""

    state_db_url: str | None = None
    enabled_clouds: tuple[str, ...] = ("local",)
    region_preferences: tuple[str, ...] = ()
    local_dir: str | None = None
    log_dir: str | None = None
    #: Id of the `sky_ssh_pool` connection used when "ssh" is enabled, and its resolved fields.
    ssh_pool_conn_id: str | None = None
    ssh_pool: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: Optimizer objective ("cost" or "time") and catalog (None: $SKY_CATALOG_DIR or the bundled one).
    minimize: str = "cost"
    catalog_dir: str | None = None
    #: Failover limits for one launch.
    max_launch_attempts: int = 30
    launch_timeout_seconds: float = 3600.0
    retry_until_up: bool = False
    #: Id of the Airflow `aws` connection for EC2 (None: boto3's default chain), and its resolved fields.
    aws_conn_id: str | None = None
    aws: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: Airflow `google_cloud_platform` / `azure` connections (None: the SDKs' default chains).
    gcp_conn_id: str | None = None
    gcp: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    azure_conn_id: str | None = None
    azure: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.minimize not in ("cost", "time"):
            raise ValueError(f"minimize: {self.minimize!r} is not an objective; use 'cost' or 'time'")
        unknown = [c for c in self.enabled_clouds if c not in KNOWN_CLOUDS]
        if unknown:
            raise ValueError(
                f"enabled_clouds: unknown cloud(s) {unknown}; use a comma-separated subset of {list(KNOWN_CLOUDS)}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> SkySettings:
        """Build from a flat mapping (connection extras, env); empty strings mean 'default'."""

        def text(key: str) -> str | None:
            raw = values.get(key)
            return str(raw).strip() if raw not in (None, "") else None

        clouds = _split(text("enabled_clouds")) or ("local",)
        return cls(
            state_db_url=text("state_db_url") or os.environ.get("SKY_STATE_DB_URL") or None,
            enabled_clouds=clouds,
            region_preferences=_split(text("region_preferences")),
            local_dir=text("local_dir"),
            log_dir=text("log_dir"),
            ssh_pool_conn_id=text("ssh_pool_conn_id"),
            aws_conn_id=text("aws_conn_id"),
            gcp_conn_id=text("gcp_conn_id"),
            azure_conn_id=text("azure_conn_id"),
            minimize=text("minimize") or "cost",
            catalog_dir=text("catalog_dir"),
            max_launch_attempts=int(text("max_launch_attempts") or 30),
            launch_timeout_seconds=float(text("launch_timeout_seconds") or 3600),
            retry_until_up=(text("retry_until_up") or "false").lower() in ("1", "true", "yes"),
            extra={k: str(v) for k, v in values.items() if k.startswith(("aws_", "gcp_", "azure_")) and v},
        )
