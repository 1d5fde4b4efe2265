"""SIGKILL of the worker (`airflow dags test`, its whole process group) during provisioning, setup
and run, then a retry of the same task instance: exactly one cluster, exactly one job, complete log.

The retry is `airflow tasks test DAG TASK RUN_ID` on the run the killed process left behind: it runs
the same task instance, so it reads the same ``task_state_store`` rows. (`airflow dags test DAG
DATE` cannot be the retry: Airflow 3.3.2's `dag.test()` deletes the existing run of that logical
date and creates a new one whose run id comes from the current time, so the state store scope is
new.) The three scenarios run side by side, each in its own copy of one migrated AIRFLOW_HOME.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.state import ClusterStatus, JobStatus
from tests.airflow_runner import AIRFLOW, REPO, AirflowHome, make_home

pytestmark = pytest.mark.timeout(400)

LINES = 60
SCENARIOS = {
    # name: (dag id, cluster, kill when the first try's output shows this, extra env of the first try)
    "provision": ("sky_kill_provision", "kill-provision-1", "sky-test: cluster directories exist", "30"),
    "setup": ("sky_kill_setup", "kill-setup-1", "setup-start", ""),
    "run": ("sky_kill_run", "kill-run-1", "line-3", ""),
}


@dataclass
class Outcome:
    home: AirflowHome
    cluster: str
    first_output: str = ""
    state_at_kill: list[tuple] = field(default_factory=list)
    cluster_status_at_kill: str | None = None
    retry: subprocess.CompletedProcess[str] | None = None
    error: BaseException | None = None


def _wait_for(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float = 150) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"`dags test` ended before {needle!r}:\n{text[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared")


def _scenario(base: AirflowHome, root: Path, name: str) -> Outcome:
    try:
        return _run_scenario(base, root, name)
    finally:  # never leave a job waiting at the gate
        gate = root / name / "gate"
        if gate.is_dir():
            (gate / "open").touch()


def _run_scenario(base: AirflowHome, root: Path, name: str) -> Outcome:
    dag_id, cluster, needle, slow = SCENARIOS[name]
    path = root / name
    shutil.copytree(base.path, path)  # the migrated metadata DB, no sky state yet
    cfg = path / "airflow.cfg"  # its paths (metadata DB, logs) still name the base home
    cfg.write_text(cfg.read_text().replace(str(base.path), str(path)))
    home = AirflowHome(path=path, dags_folder=base.dags_folder)
    outcome = Outcome(home, cluster)
    log_path = path / "first-try.log"
    gate = path / "gate"
    gate.mkdir()
    env = home.env(SKY_TEST_GATE_DIR=str(gate), **({"SKY_TEST_SLOW_PROVISION": slow} if slow else {}))
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for(log_path, needle, proc)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker dies: no on_kill, no cleanup
            proc.wait(timeout=30)
    outcome.first_output = log_path.read_text(errors="replace")
    with sqlite3.connect(path / "airflow.db") as db:
        run_id = db.execute("select run_id from dag_run where dag_id = ?", (dag_id,)).fetchone()[0]
        outcome.state_at_kill = db.execute(
            "select key, value from task_state_store where dag_id = ? and run_id = ?", (dag_id, run_id)
        ).fetchall()
    with sqlite3.connect(path / "sky" / "state.db") as db:
        row = db.execute("select status from sky_clusters where name = ?", (cluster,)).fetchone()
        outcome.cluster_status_at_kill = row[0] if row else None
    retry_log = path / "retry.log"
    with retry_log.open("wb") as out:
        proc = subprocess.Popen(
            [AIRFLOW, "tasks", "test", dag_id, "work", run_id],
            env=home.env(SKY_TEST_GATE_DIR=str(gate)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for(retry_log, "streaming its log", proc)  # the retry follows job 1 (reattached or new)
        finally:
            (gate / "open").touch()
        returncode = proc.wait(timeout=300)
    outcome.retry = subprocess.CompletedProcess(
        proc.args, returncode, retry_log.read_text(errors="replace"), ""
    )
    return outcome


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(REPO / "tests" / "dags" / "sky_kill_retry_dags.py", dags / "sky_kill_retry_dags.py")
    base = make_home(tmp_path_factory.mktemp("airflow_home"), dags)
    root = tmp_path_factory.mktemp("homes")
    results: dict[str, Outcome] = {}

    def run(name: str) -> None:
        try:
            results[name] = _scenario(base, root, name)
        except BaseException as exc:
            results[name] = Outcome(base, SCENARIOS[name][1], error=exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in SCENARIOS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _core(home: AirflowHome) -> SkyCore:
    return SkyCore.from_settings(
        SkySettings(
            state_db_url=home.state_url,
            local_dir=str(home.local_dir),
            log_dir=str(home.path / "sky" / "logs"),
        )
    )


def _check_one_cluster_one_job_complete_log(o: Outcome) -> None:
    if o.error is not None:
        raise o.error
    assert o.retry is not None
    out = o.retry.stdout + o.retry.stderr
    assert o.retry.returncode == 0, out[-4000:]
    core = _core(o.home)
    # Exactly one cluster: one row, at most one launch (a retry adopts or reuses, never launches a
    # second; a try killed inside the cloud's launch call never got to record its "launched").
    assert [c.name for c in core.store.list_clusters()] == [o.cluster]
    outcomes = [a.outcome for a in core.store.list_attempts(o.cluster)]
    assert outcomes in (["launched"], ["adopted"]), outcomes
    assert sorted(p.name for p in (o.home.local_dir / "clusters").iterdir() if p.is_dir()) == []
    # Exactly one job, and it succeeded.
    jobs = core.store.list_jobs(cluster_name=o.cluster)
    assert [(j.job_id, j.status, j.exit_code) for j in jobs] == [(1, JobStatus.SUCCEEDED, 0)]
    # down=True: torn down by the retry, nothing left on the machine.
    assert core.store.get_cluster(o.cluster).status is ClusterStatus.TERMINATED
    assert not (o.home.local_dir / "clusters" / o.cluster).exists()
    # Complete log: the job's log (archived at teardown) has every line once, in order, and the
    # retry's task log streamed the job to its end.
    text, _ = core.read_log(o.cluster, 1, 0, final=True)
    assert text.count("setup-done") == 1
    assert [ln for ln in text.splitlines() if ln.startswith("line-")] == [
        f"line-{i}" for i in range(1, LINES + 1)
    ]
    streamed = {
        ln.split("line-")[1].split()[0] for ln in (o.first_output + out).splitlines() if " line-" in ln
    }
    assert streamed >= {str(i) for i in range(1, LINES + 1)}, sorted(
        set(map(str, range(1, LINES + 1))) - streamed
    )


def test_kill_during_provisioning_then_retry(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["provision"]
    if o.error is None:
        assert o.cluster_status_at_kill == "INIT"  # the cluster existed, the store did not know its handle
        assert o.state_at_kill == []  # nothing recorded for the task yet
    _check_one_cluster_one_job_complete_log(o)
    # The killed try's cloud call created the cluster; the retry adopted it instead of launching.
    assert [a.outcome for a in _core(o.home).store.list_attempts(o.cluster)] == ["adopted"]


def test_kill_during_setup_then_retry_reattaches(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["setup"]
    if o.error is None:
        assert any(key == "sky_job" and '"job_id": 1' in value for key, value in o.state_at_kill)
        assert "setup-done" not in o.first_output
    _check_one_cluster_one_job_complete_log(o)


def test_kill_during_run_then_retry_reattaches(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["run"]
    if o.error is None:
        assert f"line-{LINES}" not in o.first_output
    _check_one_cluster_one_job_complete_log(o)
    assert "Reattaching to job 1" in (o.retry.stdout + o.retry.stderr)
