"""DAGs of the mark-failed end-to-end test (run by a real scheduler, api-server and triggerer).

Each task's job prints its shell pid (its process group on the node), then runs until killed, so
only a kill through Airflow (task marked failed, DAG run marked failed) can end it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_sky.operators.sky import SkyTaskOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
RUN = "echo job-pgid-$$; while true; do echo tick; sleep 0.5; done"

for dag_id, cluster, deferrable in (
    ("sky_mf_task", "mf-task-1", False),
    ("sky_mf_run", "mf-run-1", False),
    ("sky_mf_deferred", "mf-deferred-1", True),
):
    with DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False):
        SkyTaskOperator(
            task_id="work",
            run=RUN,
            resources={"infra": "local"},
            cluster_name=cluster,
            down=True,
            deferrable=deferrable,
            poll_interval=0.2,
        )
