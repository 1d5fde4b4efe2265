"""What every `sky-airflow` subcommand shares: building the core from the global options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_sky.provision.core import SkyCore


def core_from_args(args: argparse.Namespace) -> SkyCore:
    """The broker core for `--state-db` / `--clouds` (defaults: $AIRFLOW_HOME state DB, local)."""
    # Imported here: the broker (sqlalchemy state, clouds) costs ~0.5 s, and `sky-airflow --help`,
    # `cp` and `verify` never need it.
    from airflow_provider_sky.provision.core import SkyCore
    from airflow_provider_sky.provision.settings import SkySettings

    values: dict[str, object] = {}
    if getattr(args, "state_db", None):
        values["state_db_url"] = args.state_db
    if getattr(args, "clouds", None):
        values["enabled_clouds"] = args.clouds
    return SkyCore.from_settings(SkySettings.from_mapping(values))
