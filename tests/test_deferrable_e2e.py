"""Through Airflow itself: a deferrable task provisions in the trigger under `airflow dags test`, and a
worker killed mid-job is retried (`airflow tasks test`) from the log offset the follow loop saved in
``task_state_store``: every job line is in the task logs exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.state import ClusterStatus, JobStatus
from tests.airflow_runner import AIRFLOW, REPO, AirflowHome, make_home

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(REPO / "tests" / "dags" / "sky_deferrable_dags.py", dags / "sky_deferrable_dags.py")
    return make_home(tmp_path_factory.mktemp("airflow_home"), dags)


def _core(home: AirflowHome) -> SkyCore:
    return SkyCore.from_settings(
        SkySettings(
            state_db_url=home.state_url,
            local_dir=str(home.local_dir),
            log_dir=str(home.path / "sky" / "logs"),
        )
    )


def _job_lines(output: str, prefix: str) -> list[str]:
    """The job's own lines in a task log (`<timestamp> [info] line-3   [logger] loc=...`)."""
    found = []
    for line in output.splitlines():
        for word in line.split():
            if word.startswith(prefix) and word[len(prefix) :].isdigit():
                found.append(word)
                break
    return found


def test_deferrable_task_provisions_in_the_trigger_under_dags_test(home: AirflowHome) -> None:
    result = home.airflow("dags", "test", "sky_deferred_launch")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "sky-test: the worker called launch" not in out
    assert "Deferring the launch of cluster" in out
    assert "in the triggerer (planned:" in out  # the trigger's own line: it launched
    assert "provisioned in the triggerer after 1 launch attempt(s)" in out
    assert _job_lines(out, "trigger-step-") == [f"trigger-step-{i}" for i in (1, 2, 3)]  # each once
    core = _core(home)
    (cluster,) = core.store.list_clusters(owner_dag_id="sky_deferred_launch")
    assert [a.outcome for a in core.store.list_attempts(cluster.name)] == ["launched"]
    assert [(j.status, j.exit_code) for j in core.store.list_jobs(cluster_name=cluster.name)] == [
        (JobStatus.SUCCEEDED, 0)
    ]
    assert cluster.status is ClusterStatus.TERMINATED


def _stored_job(home: AirflowHome, dag_id: str) -> dict | None:
    with sqlite3.connect(home.path / "airflow.db") as db:
        row = db.execute(
            "select value from task_state_store where dag_id = ? and key = 'sky_job'", (dag_id,)
        ).fetchone()
    return json.loads(row[0]) if row else None


def test_worker_killed_mid_job_retry_resumes_at_the_saved_offset(home: AirflowHome, tmp_path: Path) -> None:
    dag_id, cluster = "sky_offset_resume", "offset-resume-1"
    gate = tmp_path / "gate"
    gate.mkdir()
    env = home.env(SKY_TEST_GATE_DIR=str(gate))
    first_log = tmp_path / "first-try.log"
    with first_log.open("wb") as out:
        proc = subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            # The job printed line-1..3 and waits at the gate; the follow loop logged them and saved
            # the offset past them (within its save interval): kill the worker there.
            expected = len(b"line-1\nline-2\nline-3\n")
            deadline = time.monotonic() + 150
            stored = None
            while time.monotonic() < deadline and proc.poll() is None:
                stored = _stored_job(home, dag_id) if (home.path / "airflow.db").exists() else None
                if stored and stored.get("log_offset") == expected:
                    break
                time.sleep(0.1)
            assert stored and stored.get("log_offset") == expected, (stored, first_log.read_text()[-3000:])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker dies: no on_kill, no cleanup
            proc.wait(timeout=30)
    first = first_log.read_text(errors="replace")
    with sqlite3.connect(home.path / "airflow.db") as db:
        run_id = db.execute("select run_id from dag_run where dag_id = ?", (dag_id,)).fetchone()[0]
    retry_log = tmp_path / "retry.log"
    with retry_log.open("wb") as out:
        proc = subprocess.Popen(
            [AIRFLOW, "tasks", "test", dag_id, "work", run_id],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:  # the job stays at the gate until the retry has reattached
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and proc.poll() is None:
                if "Reattaching to job" in retry_log.read_text(errors="replace"):
                    break
                time.sleep(0.1)
            (gate / "open").touch()
            returncode = proc.wait(timeout=300)
        finally:
            (gate / "open").touch()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    second = retry_log.read_text(errors="replace")
    assert returncode == 0, second[-5000:]
    assert f"Reattaching to job 1 on cluster {cluster}" in second
    assert f"at log offset {expected}" in second
    assert _job_lines(first, "line-") == ["line-1", "line-2", "line-3"]
    assert _job_lines(second, "line-") == [f"line-{i}" for i in range(4, 13)]  # nothing replayed
    core = _core(home)
    assert [j.job_id for j in core.store.list_jobs(cluster_name=cluster)] == [1]
    assert core.store.get_cluster(cluster).status is ClusterStatus.TERMINATED
