"""DAGs for the kill-and-retry tests: the worker is SIGKILLed during provisioning, setup or run.

``SKY_TEST_GATE_DIR`` holds the gate file that lets the job go on past line-3.
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
# The job stops after line-3 until the test opens the gate (``$SKY_TEST_GATE_DIR/open``), so the
# retry always finds it running, whatever the machine's speed.
GATE = os.environ.get("SKY_TEST_GATE_DIR") or "/nonexistent"
RUN = (
    "for i in $(seq 1 60); do echo line-$i; "
    'if [ "$i" = 3 ]; then while [ ! -e "$GATE/open" ]; do sleep 0.1; done; fi; sleep 0.02; done'
)
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
            envs={"GATE": GATE},
            resources={"infra": "local"},
            cluster_name=cluster,
            down=True,
            poll_interval=0.2,
        )
