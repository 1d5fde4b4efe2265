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

with DAG(dag_id="sky_deferrable", schedule=None, start_date=START, catchup=False):
    SkyTaskOperator(
        task_id="deferred",
        run="for i in 1 2 3; do echo deferred-step-$i; sleep 0.3; done",
        resources={"infra": "local"},
        deferrable=True,
        poll_interval=0.2,
    )
    SkyTaskOperator(
        task_id="deferred_secret_fail",
        run='echo "key=$KEY"; exit 4',
        secrets={"KEY": "very-secret-key-5521"},
        resources={"infra": "local"},
        deferrable=True,
        poll_interval=0.2,
    )

with DAG(dag_id="sky_taskflow", schedule=None, start_date=START, catchup=False):
    from airflow.sdk import task

    @task.sky(resources={"infra": "local"}, num_nodes=2)
    def train(rows: int, name: str) -> dict:
        import os
        import socket

        print("training", name, "on", socket.gethostname(), "rank", os.environ["SKYPILOT_NODE_RANK"])
        return {"rows": rows * 2, "name": name.upper(), "nodes": int(os.environ["SKYPILOT_NUM_NODES"])}

    @task.sky(mode="bash", resources={"infra": "local"})
    def shell(result: dict) -> str:
        return f"echo shell-got-{result['rows']}-{result['name']}"

    @task
    def check(result: dict) -> None:
        assert result == {"rows": 42, "name": "ABC", "nodes": 2}, result

    out = train(21, "abc")
    shell(out)
    check(out)
