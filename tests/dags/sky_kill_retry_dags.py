"""DAGs for the kill-and-retry tests: the worker is SIGKILLed during provisioning, setup or run.

``SKY_TEST_SLOW_PROVISION=<seconds>`` makes the local backend's launch take that long after the
cluster exists (like a VM that is up but not yet reported), so a test can kill the worker while
the state store still says INIT.
"""

from __future__ import annotations

import os
import time

import pendulum
from airflow.sdk import DAG

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.operators.sky import SkyTaskOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
RUN = "for i in $(seq 1 60); do echo line-$i; sleep 0.5; done"
SETUP = "echo setup-start; sleep 3; echo setup-done"

_slow = float(os.environ.get("SKY_TEST_SLOW_PROVISION") or 0)
if _slow and not getattr(LocalCloud.launch, "_slowed", False):
    _launch = LocalCloud.launch

    def _slow_launch(self: LocalCloud, *args: object, **kwargs: object) -> object:
        handle = _launch(self, *args, **kwargs)  # type: ignore[arg-type]
        print("sky-test: cluster directories exist; provisioning goes on", flush=True)
        time.sleep(_slow)
        return handle

    _slow_launch._slowed = True  # type: ignore[attr-defined]
    LocalCloud.launch = _slow_launch  # type: ignore[method-assign]

for dag_id, cluster in (
    ("sky_kill_provision", "kill-provision-1"),
    ("sky_kill_setup", "kill-setup-1"),
    ("sky_kill_run", "kill-run-1"),
):
    with DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False):
        SkyTaskOperator(
            task_id="work",
            setup=SETUP,
            run=RUN,
            resources={"infra": "local"},
            cluster_name=cluster,
            down=True,
            poll_interval=0.2,
        )
