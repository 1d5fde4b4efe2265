"""End to end through Airflow itself: `airflow dags test` of real DAG files on the local backend."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.state import ClusterStatus, JobStatus
from tests.airflow_runner import REPO, AirflowHome, make_home

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(REPO / "dags_examples" / "quickstart.py", dags / "quickstart.py")
    shutil.copy(REPO / "tests" / "dags" / "sky_test_dags.py", dags / "sky_test_dags.py")
    return make_home(tmp_path_factory.mktemp("airflow_home"), dags)


def _core(home: AirflowHome) -> SkyCore:
    return SkyCore.from_settings(
        SkySettings(state_db_url=home.state_url, local_dir=str(home.local_dir), log_dir=str(home.path / "sky" / "logs"))
    )


def _jobs(home: AirflowHome) -> list[tuple]:
    with sqlite3.connect(home.path / "sky" / "state.db") as db:
        return db.execute("select cluster_name, job_id, status, exit_code from sky_jobs").fetchall()


def test_quickstart_dag_runs_and_logs_reach_the_task_log(home: AirflowHome) -> None:
    result = home.airflow("dags", "test", "sky_quickstart")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # The jobs' own output is in the Airflow task log, from both nodes of the 2-node task.
    assert "training on node 0 of 2, epochs=3" in out
    assert "(worker1, ip=127.0.0.1) training on node 1 of 2, epochs=3" in out
    assert "setup: installing nothing" in out
    assert "evaluating run 20" in out  # the templated {{ ds }} was rendered
    core = _core(home)
    clusters = [c for c in core.store.list_clusters() if c.owner_dag_id == "sky_quickstart"]
    assert sorted(c.owner_task_id for c in clusters) == ["evaluate", "train"]
    assert all(c.status is ClusterStatus.TERMINATED for c in clusters)  # auto-named => torn down
    train = next(c for c in clusters if c.owner_task_id == "train")
    assert train.num_nodes == 2 and train.cloud == "local"
    jobs = core.store.list_jobs(cluster_name=train.name)
    assert [(j.status, j.exit_code) for j in jobs] == [(JobStatus.SUCCEEDED, 0)]
    # The job log outlives the cluster (archived on teardown) and holds every line.
    log_text, _ = core.read_log(train.name, jobs[0].job_id, 0, final=True)
    assert "epoch 3 loss=33" in log_text and log_text.count("done") == 2
    assert not (home.local_dir / "clusters" / train.name).exists()


def test_failing_job_fails_task_with_log_tail_and_secrets_are_masked(home: AirflowHome) -> None:
    result = home.airflow("dags", "test", "sky_failing_and_secret")
    out = result.stdout + result.stderr
    assert result.returncode != 0, "a DAG with a failing sky task must fail"
    assert "ended FAILED (exit code 3)" in out
    assert "about to fail with code 3" in out.split("ended FAILED (exit code 3)", 1)[1][:2000]
    # The secret reached the job (it printed it) but Airflow's masker hid it in the task log.
    assert "token is ***" in out
    assert "s3cr3t-Value-9137" not in out
    by_cluster = {row[0]: (row[2], row[3]) for row in _jobs(home)}
    assert by_cluster[next(n for n in by_cluster if "-fails-" in n)] == ("FAILED", 3)
    assert by_cluster[next(n for n in by_cluster if "-masked-" in n)] == ("SUCCEEDED", 0)


def test_worker_killed_mid_job_job_survives_with_complete_log(home: AirflowHome) -> None:
    proc = home.popen_dags_test("sky_long_job")
    cluster = "killed-worker-cluster"
    core = _core(home)
    deadline = time.time() + 120
    job_id = None
    while time.time() < deadline and job_id is None:
        rows = [r for r in _jobs(home) if r[0] == cluster] if (home.path / "sky" / "state.db").exists() else []
        if rows:
            log_text, _ = core.read_log(cluster, rows[-1][1], 0)
            if "line-3" in log_text:
                job_id = rows[-1][1]
        time.sleep(0.2)
    assert job_id is not None, "the job never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the Airflow worker dies mid-job
    proc.wait(timeout=30)
    assert core.job_status(cluster, job_id) in (JobStatus.RUNNING, JobStatus.SUCCEEDED)
    deadline = time.time() + 60
    while core.job_status(cluster, job_id) is JobStatus.RUNNING and time.time() < deadline:
        time.sleep(0.2)
    assert core.job_status(cluster, job_id) is JobStatus.SUCCEEDED
    text, _ = core.read_log(cluster, job_id, 0, final=True)
    assert [line for line in text.splitlines() if line.startswith("line-")] == [f"line-{i}" for i in range(1, 41)]
    assert core.down(cluster)
    assert core.store.get_cluster(cluster).status is ClusterStatus.TERMINATED


def test_bad_spec_fails_at_dag_parse_time_with_field_named(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "bad_dag.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from airflow_provider_sky.operators.sky import SkyTaskOperator\n"
        "with DAG('bad', start_date=pendulum.datetime(2026, 1, 1), schedule=None):\n"
        "    SkyTaskOperator(task_id='t', run='echo hi', resources={'accelerators': 'V10O:1'})\n"
    )
    bag = DagBag(dag_folder=str(tmp_path))
    errors = "\n".join(bag.import_errors.values())
    assert "resources.accelerators: unknown accelerator 'V10O'" in errors
    assert "did you mean 'V100'?" in errors
    assert "bad" not in bag.dags


def test_deferrable_task_completes_under_dags_test(home: AirflowHome) -> None:
    result = home.airflow("dags", "test", "sky_deferrable")
    out = result.stdout + result.stderr
    assert "deferring to the triggerer" in out
    for i in (1, 2, 3):
        assert f"deferred-step-{i}" in out
    core = _core(home)
    by_task = {c.owner_task_id: c for c in core.store.list_clusters(owner_dag_id="sky_deferrable")}
    ok = core.store.list_jobs(cluster_name=by_task["deferred"].name)
    assert [(j.status, j.exit_code) for j in ok] == [(JobStatus.SUCCEEDED, 0)]
    # The failing deferred task fails the run, with its redacted output in the failure message.
    assert result.returncode != 0
    assert "ended FAILED (exit code 4)" in out
    assert "key=***" in out and "very-secret-key-5521" not in out
    assert all(c.status is ClusterStatus.TERMINATED for c in by_task.values())


def test_taskflow_sky_decorator_python_and_bash_modes(home: AirflowHome) -> None:
    result = home.airflow("dags", "test", "sky_taskflow")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "training abc on" in out  # the function ran on the cluster and its output streamed back
    assert "shell-got-42-ABC" in out  # bash mode got the python-mode task's return value via XCom
