"""DAGs of the deferrable and log-offset end-to-end tests (run with `airflow dags test`).

``SKY_TEST_GATE_DIR`` holds the gate file that lets the gated job go on past line-3.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
GATE = os.environ.get("SKY_TEST_GATE_DIR") or "/nonexistent"


class WorkerNeverLaunches(SkyTaskOperator):
    """A deferrable task whose worker-side broker refuses to launch: only the trigger may."""

    @cached_property
    def hook(self) -> SkyHook:
        hook = SkyHook(sky_conn_id=self.sky_conn_id)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("sky-test: the worker called launch")

        hook.core.launch = refuse  # type: ignore[method-assign]
        return hook


with DAG(dag_id="sky_deferred_launch", schedule=None, start_date=START, catchup=False):
    WorkerNeverLaunches(
        task_id="deferred_launch",
        run="for i in 1 2 3; do echo trigger-step-$i; sleep 0.2; done",
        resources={"infra": "local"},
        deferrable=True,
        poll_interval=0.2,
    )

with DAG(dag_id="sky_offset_resume", schedule=None, start_date=START, catchup=False):
    follow = SkyTaskOperator(
        task_id="work",
        run=(
            "for i in $(seq 1 12); do echo line-$i; "
            'if [ "$i" = 3 ]; then while [ ! -e "$GATE/open" ]; do sleep 0.05; done; fi; done'
        ),
        envs={"GATE": GATE},
        resources={"infra": "local"},
        cluster_name="offset-resume-1",
        down=True,
        poll_interval=0.1,
    )
    follow.log_offset_save_seconds = 0.3  # save soon after the job goes quiet at the gate
