"""DAGs for the cluster-sharing tests: chains of compatible sky tasks on the local backend."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_sky.operators.sky import SkyTaskOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SETUP = "echo setup-ran >> ~/setup.log"


def _step(task_id: str, run: str, **kwargs: object) -> SkyTaskOperator:
    return SkyTaskOperator(
        task_id=task_id,
        setup=SETUP,
        run=run,
        resources={"infra": "local", "cpus": "1+"},
        poll_interval=0.2,
        **kwargs,  # type: ignore[arg-type]
    )


# Three independent chains in one DAG run (one `airflow dags test` pays Airflow's start-up once).
with DAG(
    dag_id="sky_cluster_groups",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retry_delay": timedelta(seconds=0)},
):
    # prep -> train -> report, each appending to a file in the node's home: the last one sees all
    # three lines only if they ran in the same node directory (one cluster).
    prep = _step("prep", "echo prep >> ~/trail.txt; echo prep-done")
    train = _step("train", "echo train >> ~/trail.txt; echo train-done")
    report = _step("report", "echo report >> ~/trail.txt; echo trail: $(cat ~/trail.txt | tr '\\n' ' ')")
    prep >> train >> report

    # The middle task fails with no retries left: the shared cluster must not outlive the run.
    first = _step("first", "echo first-ok")
    broken = _step("broken", "echo about to fail; exit 4")
    never = _step("never", "echo never-runs")
    first >> broken >> never

    # The middle task fails on its first try only: the retry reuses the shared cluster.
    a = _step("a", "echo a-ok")
    flaky = _step("flaky", "if [ -f ~/tried ]; then echo second-try-ok; else touch ~/tried; exit 5; fi", retries=1)
    z = _step("z", "echo z-ok")
    a >> flaky >> z

    # The middle task fails before its job exists (a file mount that is not there): the operator's
    # failure callback, not its job-end path, tears the shared cluster down.
    m1 = _step("m1", "echo m1-ok")
    m2 = _step("m2", "echo unreachable", file_mounts={"/data/in.csv": "/nonexistent/sky-group-test/in.csv"})
    m3 = _step("m3", "echo never-runs-either")
    m1 >> m2 >> m3
