"""What ``sky-airflow plan FILE`` needs, so the CLI stays a thin wrapper."""

from __future__ import annotations

import os

from airflow_provider_sky.catalog.loader import load_catalog
from airflow_provider_sky.optimizer.dag_yaml import load_dag
from airflow_provider_sky.optimizer.plan import Plan
from airflow_provider_sky.optimizer.solver import optimize


def plan_file(
    path: str | os.PathLike[str],
    catalog_dir: str | os.PathLike[str] | None = None,
    minimize: str | None = "cost",
    *,
    bandwidth_gbps: float | None = None,
    time_limit: float = 10.0,
) -> Plan:
    """Plan a DAG YAML or SkyPilot task YAML against ``catalog_dir`` (default: the bundled catalog).

    ``minimize=None`` uses the file's ``minimize`` (default cost). Raises ``SpecError`` for a bad
    file and ``OptimizerError`` / ``InfeasibleTaskError`` when no plan exists.
    """
    dag = load_dag(path)
    objective = minimize or dag.minimize or "cost"
    bandwidth = bandwidth_gbps or dag.bandwidth_gbps or 1.0
    return optimize(
        dag.tasks,
        load_catalog(catalog_dir),
        minimize=objective,
        bandwidth_gbps=bandwidth,
        time_limit=time_limit,
        edges=dag.edges,
    )
