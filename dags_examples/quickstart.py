"""Quickstart: prepare -> two sky tasks in parallel -> report, on the embedded local backend.

Runs with no cloud account: `make demo` executes it with `airflow dags test`. Point the same DAG at
a cloud by changing `infra` (or adding a `sky` connection with enabled clouds); nothing else changes.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_sky.operators.sky import SkyTaskOperator

with DAG(
    dag_id="sky_quickstart",
    description="Two sky tasks in parallel on the local backend",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["sky", "example"],
) as dag:

    @task
    def prepare() -> dict[str, int]:
        """Decide how much work each sky task does."""
        return {"rows": 1000, "shards": 2}

    plan = prepare()

    train = SkyTaskOperator(
        task_id="train",
        setup="echo 'setup: installing nothing, this runs once per cluster'",
        run=(
            "echo \"training on node $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES, epochs=$EPOCHS\"\n"
            "for i in $(seq 1 3); do echo \"epoch $i loss=$(( 100 / i ))\"; sleep 0.2; done\n"
            "echo done"
        ),
        envs={"EPOCHS": "3"},
        resources={"infra": "local", "cpus": "1+"},
        num_nodes=2,
    )

    evaluate = SkyTaskOperator(
        task_id="evaluate",
        task={
            "name": "evaluate",
            "resources": {"infra": "local"},
            "run": "python3 -c \"import os; print('evaluating run', os.environ['RUN_DATE'])\"",
        },
        envs={"RUN_DATE": "{{ ds }}"},
    )

    @task
    def report(train_result: dict, evaluate_result: dict) -> str:
        """Summarize where each task ran and what it cost."""
        lines = [
            f"{name}: {res['cloud']}/{res['region']} {res['instance_type']} job {res['job_id']} "
            f"exit {res['exit_code']} cost ${res['estimated_cost']:.4f}"
            for name, res in (("train", train_result), ("evaluate", evaluate_result))
        ]
        summary = "\n".join(lines)
        print(summary)
        return summary

    plan >> [train, evaluate]
    report(train.output, evaluate.output)
