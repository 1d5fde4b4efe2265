"""DAGs used by the end-to-end tests (run with `airflow dags test`)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_sky.operators.sky import SkyTaskOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(dag_id="sky_failing_and_secret", schedule=None, start_date=START, catchup=False):
    SkyTaskOperator(
        task_id="fails",
        run="echo preparing\necho about to fail with code 3\nexit 3",
        resources={"infra": "local"},
    )
    SkyTaskOperator(
        task_id="masked",
        run='echo "token is $API_TOKEN"',
        secrets={"API_TOKEN": "s3cr3t-Value-9137"},
        resources={"infra": "local"},
    )

with DAG(dag_id="sky_long_job", schedule=None, start_date=START, catchup=False):
    SkyTaskOperator(
        task_id="count",
        run="for i in $(seq 1 40); do echo line-$i; sleep 0.1; done",
        resources={"infra": "local"},
        cluster_name="killed-worker-cluster",
    )
