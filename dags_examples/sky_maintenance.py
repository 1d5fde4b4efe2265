"""Maintenance: every hour, terminate clusters tagged as ours that no live task owns (the orphan reaper).

Uses the `sky_default` connection (or the built-in local defaults). Set the Airflow Variable
``sky_gc_dry_run`` to ``true`` to only list what would be terminated; ``sky_gc_grace_minutes``
sets how long after its task's last job a cluster counts as orphaned.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Variable, task

with DAG(
    dag_id="sky_maintenance",
    description="Reap orphaned sky clusters",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["sky", "maintenance"],
) as dag:

    @task
    def reap_orphans() -> dict:
        """Run the reaper and return its report (orphans, what was terminated, errors)."""
        from airflow_provider_sky.hooks.sky import SkyHook
        from airflow_provider_sky.provision.reaper import reap

        dry_run = str(Variable.get("sky_gc_dry_run", default="false")).lower() in ("1", "true", "yes")
        grace = float(Variable.get("sky_gc_grace_minutes", default="30"))
        core = SkyHook().core
        report = reap(core.store, core.clouds, grace=timedelta(minutes=grace), dry_run=dry_run)
        for orphan in report.orphans:
            action = "would terminate" if dry_run else "terminated"
            print(f"{action} {orphan.cluster.cloud}/{orphan.cluster.name}: {orphan.reason}")
        if report.errors:
            raise RuntimeError(f"reaper errors: {report.errors}")
        return report.to_dict()

    reap_orphans()
