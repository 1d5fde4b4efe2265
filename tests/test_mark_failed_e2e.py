"""Marking a running sky task failed through Airflow itself cancels its job and tears down its cluster.

The full Airflow 3.3 stack runs here as subprocesses, on a PostgreSQL database of its own:
api-server (public REST API and Execution API), scheduler (LocalExecutor), dag-processor and
triggerer. Each DAG of ``tests/dags/sky_mark_failed_dags.py`` starts a job on the local backend that
never ends by itself. Once the job is RUNNING in the sky state store, the test marks through the
REST API (as a user in the UI would)

* the task instance failed (the worker's supervisor gets 409 on its heartbeat, SIGTERMs the task
  process, which runs ``SkyTaskOperator.on_kill``),
* the DAG run failed (its running task instance is failed with it, same path),
* the deferred task instance failed while ``SkyJobTrigger`` follows the job in the triggerer
  (the triggerer cancels the trigger and runs its ``on_kill``),

and then waits for: the job CANCELLED in the state store, its process group gone from the node,
the cluster TERMINATED, no cluster directory and no process of that cluster left on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_sky.clouds.local import _marked_processes, kill_processes_under
from airflow_provider_sky.execution.job_driver import group_alive
from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.state import ClusterStatus, JobStatus
from airflow_provider_sky.triggers.sky import SkyJobTrigger
from tests.airflow_runner import AIRFLOW, REPO, AirflowHome
from tests.services import require_postgres

pytestmark = pytest.mark.timeout(300)

DAGS = {"task": ("sky_mf_task", "mf-task-1"), "run": ("sky_mf_run", "mf-run-1")}
DEFERRED = ("sky_mf_deferred", "mf-deferred-1")
TERMINAL_JOB = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(what: str, check: Any, timeout: float, interval: float = 0.3) -> Any:
    """Call `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Stack:
    home: AirflowHome
    api: httpx.Client
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def core(self) -> SkyCore:
        return SkyCore.from_settings(
            SkySettings(
                state_db_url=self.home.state_url,
                local_dir=str(self.home.local_dir),
                log_dir=str(self.home.path / "sky" / "logs"),
            )
        )

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited:\n{self.log(name)[-4000:]}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def trigger(self, dag_id: str) -> str:
        resp = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert resp.status_code == 200, resp.text
        return resp.json()["dag_run_id"]

    def task_log(self, dag_id: str, run_id: str, trigger: bool = False) -> str:
        """The task instance's log files (the worker's, or the triggerer's with `trigger`)."""
        folder = self.home.path / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=work"
        pattern = "attempt=1.log.trigger.*" if trigger else "attempt=1.log"
        return "".join(p.read_text(errors="replace") for p in sorted(folder.glob(pattern)))

    def ti_state(self, dag_id: str, run_id: str) -> str | None:
        resp = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/work")
        return resp.json().get("state") if resp.status_code == 200 else None


def _createdb(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = require_postgres()
    db = f"sky_markfailed_{secrets.token_hex(4)}"
    base = url.rsplit("/", 1)[0]
    _createdb(url, f"CREATE DATABASE {db}")
    root = tmp_path_factory.mktemp("mark_failed")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(REPO / "tests" / "dags" / "sky_mark_failed_dags.py", dags / "sky_mark_failed_dags.py")
    home = AirflowHome(path=root / "home", dags_folder=dags)
    home.path.mkdir()
    logs = root / "logs"
    logs.mkdir()
    port = _free_port()
    extra = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{base}/{db}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"{base}/{db}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    env = home.env(**extra)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)
    st = Stack(home=home, api=client, logs=logs)
    try:
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        commands = {
            "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }
        for name, args in commands.items():
            with (logs / f"{name}.log").open("wb") as out:
                st.procs[name] = subprocess.Popen(
                    [AIRFLOW, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )

        def ready() -> bool:
            st.alive()
            try:
                return all(
                    client.get(f"/api/v2/dags/{dag_id}").status_code == 200
                    for dag_id in (DAGS["task"][0], DAGS["run"][0], DEFERRED[0])
                )
            except httpx.HTTPError:
                return False

        _poll("the api-server and the parsed DAGs", ready, timeout=120, interval=0.5)
        yield st
    finally:
        for proc in st.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in st.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        client.close()
        kill_processes_under(str(home.local_dir), grace=1.0)  # jobs a failed test left behind
        _createdb(url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _running_job(st: Stack, cluster: str) -> tuple[int, int] | None:
    """(job id, pgid of the job's run script on the node) once the job RUNS and printed its pid."""
    st.alive()
    core = st.core()
    jobs = [j for j in core.store.list_jobs(cluster_name=cluster) if j.status is JobStatus.RUNNING]
    if not jobs:
        return None
    text, _ = core.read_log(cluster, jobs[0].job_id, 0)
    found = re.search(r"job-pgid-(\d+)", text)
    return (jobs[0].job_id, int(found.group(1))) if found else None


def _all_gone(st: Stack, cluster: str, job_id: int, pgid: int) -> dict[str, Any]:
    """What is still left of the task's job and cluster (empty when everything is gone)."""
    core = st.core()
    left: dict[str, Any] = {}
    job = next(j for j in core.store.list_jobs(cluster_name=cluster) if j.job_id == job_id)
    if job.status not in TERMINAL_JOB:
        left["job"] = job.status
    if group_alive(pgid):
        left["process group"] = pgid
    record = core.store.get_cluster(cluster)
    if record is not None and record.status is not ClusterStatus.TERMINATED:
        left["cluster"] = record.status
    cluster_dir = st.home.local_dir / "clusters" / cluster
    if cluster_dir.exists():
        left["directory"] = str(cluster_dir)
    if procs := _marked_processes(str(cluster_dir)):
        left["processes"] = procs
    return left


def _check_killed(st: Stack, dag_id: str, run_id: str, cluster: str, job_id: int, pgid: int) -> None:
    try:
        _poll(
            f"{cluster} to be cancelled and torn down",
            lambda: not _all_gone(st, cluster, job_id, pgid) or None,
            90,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nleft: {_all_gone(st, cluster, job_id, pgid)}") from None
    core = st.core()
    job = next(j for j in core.store.list_jobs(cluster_name=cluster) if j.job_id == job_id)
    assert job.status is JobStatus.CANCELLED, job
    assert core.store.get_cluster(cluster).status is ClusterStatus.TERMINATED
    assert st.ti_state(dag_id, run_id) == "failed"


def _check_operator_killed(st: Stack, dag_id: str, run_id: str, cluster: str, job_id: int) -> None:
    """The kill came through the supervisor and `SkyTaskOperator.on_kill`, not some other path."""
    log = st.task_log(dag_id, run_id)
    assert "Server indicated the task shouldn't be running anymore" in log, log[-3000:]
    assert f"Cancelling job {job_id} on {cluster}" in log, log[-3000:]
    assert f"Tearing down cluster {cluster}" in log, log[-3000:]


@pytest.fixture(scope="module")
def runs(stack: Stack) -> dict[str, str]:
    """All three DAG runs, started together (their jobs run side by side)."""
    return {key: stack.trigger(dag_id) for key, (dag_id, _) in {**DAGS, "deferred": DEFERRED}.items()}


def test_task_marked_failed_cancels_job_and_tears_down(stack: Stack, runs: dict[str, str]) -> None:
    dag_id, cluster = DAGS["task"]
    job_id, pgid = _poll(f"a running job on {cluster}", lambda: _running_job(stack, cluster), 120)
    assert group_alive(pgid)
    resp = stack.api.patch(
        f"/api/v2/dags/{dag_id}/dagRuns/{runs['task']}/taskInstances/work", json={"new_state": "failed"}
    )
    assert resp.status_code == 200, resp.text
    _check_killed(stack, dag_id, runs["task"], cluster, job_id, pgid)
    _check_operator_killed(stack, dag_id, runs["task"], cluster, job_id)


def test_dag_run_marked_failed_cancels_job_and_tears_down(stack: Stack, runs: dict[str, str]) -> None:
    dag_id, cluster = DAGS["run"]
    job_id, pgid = _poll(f"a running job on {cluster}", lambda: _running_job(stack, cluster), 120)
    assert group_alive(pgid)
    resp = stack.api.patch(f"/api/v2/dags/{dag_id}/dagRuns/{runs['run']}", json={"state": "failed"})
    assert resp.status_code == 200, resp.text
    _check_killed(stack, dag_id, runs["run"], cluster, job_id, pgid)
    _check_operator_killed(stack, dag_id, runs["run"], cluster, job_id)


def test_deferred_task_marked_failed_cancels_job_and_tears_down(stack: Stack, runs: dict[str, str]) -> None:
    dag_id, cluster = DEFERRED
    job_id, pgid = _poll(f"a running job on {cluster}", lambda: _running_job(stack, cluster), 120)
    run_id = runs["deferred"]
    _poll("the task to defer to the job trigger", lambda: stack.ti_state(dag_id, run_id) == "deferred", 60)
    # The triggerer runs the job trigger (it streams the job's log): only then can it be killed there.
    _poll(
        "the job trigger to run",
        lambda: f"job-pgid-{pgid}" in stack.task_log(dag_id, run_id, trigger=True),
        60,
    )
    assert group_alive(pgid)
    resp = stack.api.patch(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/work", json={"new_state": "failed"}
    )
    assert resp.status_code == 200, resp.text
    _check_killed(stack, dag_id, run_id, cluster, job_id, pgid)
    log = stack.task_log(dag_id, run_id, trigger=True)
    assert "invoking on_kill" in log, log[-3000:]
    # The triggerer re-cancels on_kill about once a second; the teardown goes on to its end, and
    # its last line lands in the trigger's log, or in the triggerer's once that log is closed.
    done = f"cancelled job {job_id} on {cluster}; tore down {cluster}"
    assert done in log + stack.log("triggerer"), log[-3000:]


def test_trigger_kill_survives_repeated_cancellation() -> None:
    """What the stack above relies on, in-process: `on_kill` cancelled again (as Airflow 3.3's
    triggerer does at every state sync) still runs its body to the end."""
    done: list[str] = []

    async def body() -> None:
        await asyncio.sleep(0.3)
        done.append("torn down")

    async def scenario() -> None:
        trigger = SkyJobTrigger(cluster_name="c", job_id=1)
        on_kill = asyncio.ensure_future(trigger._to_the_end(body()))
        await asyncio.sleep(0.05)
        on_kill.cancel("__airflow_user_action__")
        with contextlib.suppress(asyncio.CancelledError):
            await on_kill
        assert done == []  # on_kill itself was stopped early...
        await asyncio.sleep(0.6)

    asyncio.run(scenario())
    assert done == ["torn down"]  # ...but the teardown it started ran to its end
