"""SkyTaskOperator behaviour across tries, kills and reuse, run in-process against the local backend.

The Airflow context is reduced to what the operator reads: the task instance ids and a
`task_state_store` that keeps JSON values across tries (Airflow 3.3 semantics).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_sky.operators.sky import STATE_KEY, SkyTaskOperator
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.naming import cluster_name_for
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import SpecError, Task
from airflow_provider_sky.state import ClusterStatus, JobStatus


class TaskStateStore:
    """Per-task-instance JSON store that survives retries, like Airflow 3.3's accessor."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


@pytest.fixture
def sky_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SkyCore:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SKY_STATE_DB_URL", url)
    monkeypatch.setenv("SKY_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    return SkyCore.from_settings(SkySettings(state_db_url=url, local_dir=str(tmp_path / "local")))


def _context(task_id: str, store: TaskStateStore, run_id: str = "manual__1") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="lifecycle", run_id=run_id, task_id=task_id, map_index=-1)
    return {"ti": ti, "task_state_store": store}


def test_retry_reattaches_to_the_running_job_instead_of_launching_again(sky_env: SkyCore) -> None:
    op = SkyTaskOperator(task_id="train", run="for i in 1 2 3; do echo step-$i; sleep 0.3; done", poll_interval=0.1)
    owner = Owner("lifecycle", "manual__1", "train")
    name = cluster_name_for("lifecycle", "train", "manual__1")
    # An earlier try launched the cluster, submitted the job and recorded it, then its worker died.
    task = Task(name="train", run="for i in 1 2 3; do echo step-$i; sleep 0.3; done")
    sky_env.launch(task, name, owner)
    job_id = sky_env.submit(task, name, owner)
    store = TaskStateStore()
    store.set(STATE_KEY, {"cluster": name, "job_id": job_id, "log_offset": 0})

    result = op.execute(_context("train", store))

    assert result["job_id"] == job_id and result["status"] == "SUCCEEDED"
    assert [j.job_id for j in sky_env.store.list_jobs(cluster_name=name)] == [job_id]  # no second job
    assert [a.outcome for a in sky_env.store.list_attempts(name)] == ["launched"]  # no second launch


def test_retry_after_success_returns_the_result_without_rerunning(sky_env: SkyCore) -> None:
    store = TaskStateStore()
    op = SkyTaskOperator(task_id="once", run="echo ran >> ~/runs.txt", cluster_name="keep-once", poll_interval=0.1)
    first = op.execute(_context("once", store))
    second = SkyTaskOperator(
        task_id="once", run="echo ran >> ~/runs.txt", cluster_name="keep-once", poll_interval=0.1
    ).execute(_context("once", store))
    assert second["job_id"] == first["job_id"]
    assert len(sky_env.store.list_jobs(cluster_name="keep-once")) == 1
    sky_env.down("keep-once")


def test_named_cluster_is_reused_and_kept_auto_named_is_torn_down(sky_env: SkyCore) -> None:
    a = SkyTaskOperator(task_id="a", run="echo a > ~/marker", cluster_name="shared-1", poll_interval=0.1)
    b = SkyTaskOperator(task_id="b", run="cat ~/marker", cluster_name="shared-1", poll_interval=0.1)
    ra = a.execute(_context("a", TaskStateStore()))
    rb = b.execute(_context("b", TaskStateStore()))
    assert ra["torn_down"] is False and rb["torn_down"] is False
    assert (ra["job_id"], rb["job_id"]) == (1, 2)  # job ids continue on the reused cluster
    assert "a" in "\n".join(sky_env.log_tail("shared-1", rb["job_id"]))  # same node filesystem
    assert len(sky_env.store.list_attempts("shared-1")) == 1  # launched once
    assert sky_env.store.get_cluster("shared-1").status is ClusterStatus.UP
    sky_env.down("shared-1")

    c = SkyTaskOperator(task_id="c", run="true", poll_interval=0.1)
    rc = c.execute(_context("c", TaskStateStore()))
    assert rc["torn_down"] is True
    assert sky_env.store.get_cluster(rc["cluster"]).status is ClusterStatus.TERMINATED


def test_reuse_refuses_a_cluster_that_does_not_fit(sky_env: SkyCore) -> None:
    SkyTaskOperator(task_id="one", run="true", cluster_name="small-1", poll_interval=0.1).execute(
        _context("one", TaskStateStore())
    )
    big = SkyTaskOperator(task_id="two", run="true", num_nodes=3, cluster_name="small-1", poll_interval=0.1)
    with pytest.raises(Exception, match="does not fit the task: it has 1 nodes, the task needs 3"):
        big.execute(_context("two", TaskStateStore()))
    sky_env.down("small-1")


def test_on_kill_cancels_the_job_and_tears_down_what_the_task_created(sky_env: SkyCore) -> None:
    op = SkyTaskOperator(task_id="long", run="echo started; sleep 60 & wait", poll_interval=0.1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(_context("long", TaskStateStore()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    name = cluster_name_for("lifecycle", "long", "manual__1")
    deadline = time.time() + 30
    while time.time() < deadline:
        jobs = sky_env.store.list_jobs(cluster_name=name)
        if jobs and "started" in sky_env.read_log(name, jobs[0].job_id, 0)[0]:
            break
        time.sleep(0.1)
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], AirflowException)
    assert "CANCELLED" in str(errors[0])
    job = sky_env.store.list_jobs(cluster_name=name)[0]
    assert job.status is JobStatus.CANCELLED
    assert sky_env.store.get_cluster(name).status is ClusterStatus.TERMINATED
    assert sky_env.clouds["local"].find(name) is None


def test_operator_rejects_bad_input_at_construction() -> None:
    with pytest.raises(SpecError, match=r"num_nodes"):
        SkyTaskOperator(task_id="x", run="true", num_nodes=0)
    with pytest.raises(SpecError, match=r"^run: is missing"):
        SkyTaskOperator(task_id="x", resources={"cpus": "2+"})
    with pytest.raises(SpecError, match=r"cluster_name"):
        SkyTaskOperator(task_id="x", run="true", cluster_name="Bad_Name")
    with pytest.raises(SpecError, match=r"task: file not found"):
        SkyTaskOperator(task_id="x", task="/nonexistent/task.yaml")


def test_operator_accepts_a_skypilot_yaml_file_and_inline_overrides(tmp_path: Path, sky_env: SkyCore) -> None:
    yaml_path = tmp_path / "task.yaml"
    yaml_path.write_text(
        "name: hello\nresources:\n  infra: local\n  cpus: 1+\nenvs:\n  WHO: yaml\nrun: echo hello $WHO\n"
    )
    op = SkyTaskOperator(task_id="hello", task=str(yaml_path), envs={"WHO": "override"}, poll_interval=0.1)
    result = op.execute(_context("hello", TaskStateStore()))
    assert result["exit_code"] == 0
    assert "hello override" in "\n".join(sky_env.log_tail(result["cluster"], result["job_id"]))


def test_launch_exec_down_operators_share_one_cluster(sky_env: SkyCore) -> None:
    from airflow_provider_sky.operators.sky import SkyDownOperator, SkyExecOperator, SkyLaunchClusterOperator

    launch = SkyLaunchClusterOperator(
        task_id="launch", cluster_name="etl-1", setup="echo setup-ran >> ~/setup.log", poll_interval=0.1
    )
    first = SkyExecOperator(task_id="e1", cluster_name="etl-1", run="cat ~/setup.log; echo e1", poll_interval=0.1)
    second = SkyExecOperator(task_id="e2", cluster_name="etl-1", run="cat ~/setup.log; echo e2", poll_interval=0.1)
    down = SkyDownOperator(task_id="down", cluster_name="etl-1")

    assert launch.execute(_context("launch", TaskStateStore()))["torn_down"] is False
    r1 = first.execute(_context("e1", TaskStateStore()))
    r2 = second.execute(_context("e2", TaskStateStore()))
    log2 = sky_env.log_tail("etl-1", r2["job_id"])
    assert log2.count("setup-ran") == 1 and "e2" in log2  # setup ran once, exec did not re-run it
    assert r1["cluster"] == r2["cluster"] == "etl-1"
    assert len(sky_env.store.list_attempts("etl-1")) == 1
    assert down.execute(_context("down", TaskStateStore())) == {"cluster": "etl-1", "torn_down": True}
    assert sky_env.store.get_cluster("etl-1").status is ClusterStatus.TERMINATED
    assert sky_env.clouds["local"].find("etl-1") is None


def test_exec_on_a_missing_cluster_fails_clearly(sky_env: SkyCore) -> None:
    from airflow_provider_sky.operators.sky import SkyExecOperator

    op = SkyExecOperator(task_id="e", cluster_name="nowhere-1", run="true")
    with pytest.raises(Exception, match=r"cluster nowhere-1 is not UP .*launch it first"):
        op.execute(_context("e", TaskStateStore()))
    with pytest.raises(SpecError, match="setup"):
        SkyExecOperator(task_id="e", cluster_name="nowhere-1", run="true", setup="pip install x")


def test_keep_warm_keeps_for_a_soon_next_run_and_downs_for_a_far_one(sky_env: SkyCore) -> None:
    from datetime import UTC, datetime, timedelta

    from airflow_provider_sky.provision.autostop import agent_status

    task = Task(name="warm", run="true")
    for name, gap, keep in (("warm-soon", timedelta(seconds=30), True), ("warm-far", timedelta(hours=23), False)):
        sky_env.launch(task, name, Owner("kw", "r1", "t"))
        sky_env.store.update_cluster(name, hourly_price=2.0)  # the local backend is free; price it like a VM
        decision = sky_env.keep_warm_or_down(name, datetime.now(UTC) + gap, "kw")
        assert decision.keep is keep, decision
        record = sky_env.store.get_cluster(name)
        if keep:
            assert record.status is ClusterStatus.UP and record.autostop_down is True
            head = sky_env.clouds["local"].runners(sky_env.clouds["local"].find(name))[0]
            assert agent_status(head)["running"], "a kept cluster must carry a safety autostop agent"
            sky_env.down(name)
        else:
            assert record.status is ClusterStatus.TERMINATED
    assert "break-even" in decision.reason or decision.numbers


def test_keep_warm_needs_a_named_cluster() -> None:
    with pytest.raises(SpecError, match="keep_warm"):
        SkyTaskOperator(task_id="x", run="true", keep_warm=True)


def test_autostop_from_the_spec_installs_the_agent_on_launch(sky_env: SkyCore) -> None:
    from airflow_provider_sky.provision.autostop import agent_status

    op = SkyTaskOperator(
        task_id="auto", run="true", cluster_name="auto-1", resources={"autostop": {"idle_minutes": 7}}, poll_interval=0.1
    )
    result = op.execute(_context("auto", TaskStateStore()))
    assert result["torn_down"] is False
    assert result["launch_attempts"][-1]["outcome"] == "launched"
    record = sky_env.store.get_cluster("auto-1")
    assert record.autostop_idle_minutes == 7
    head = sky_env.clouds["local"].runners(sky_env.clouds["local"].find("auto-1"))[0]
    status = agent_status(head)
    assert status["running"] and float(status["config"]["idle_seconds"]) == 7 * 60
    sky_env.down("auto-1")


def test_retry_adopts_a_job_the_dead_try_submitted_but_never_recorded(sky_env: SkyCore) -> None:
    script = "for i in 1 2 3; do echo adopt-$i; sleep 0.3; done"
    name = cluster_name_for("lifecycle", "adopt", "manual__1")
    owner = Owner("lifecycle", "manual__1", "adopt")
    task = Task(name="adopt", run=script)
    sky_env.launch(task, name, owner)
    job_id = sky_env.submit(task, name, owner)  # the earlier try died right here: nothing in the store
    result = SkyTaskOperator(task_id="adopt", run=script, poll_interval=0.1).execute(_context("adopt", TaskStateStore()))
    assert result["job_id"] == job_id
    assert len(sky_env.store.list_jobs(cluster_name=name)) == 1


def test_on_kill_tears_down_a_job_that_ignores_sigterm(sky_env: SkyCore) -> None:
    """Airflow SIGKILLs a killed task soon after SIGTERM: the job gets a short grace, then the
    cluster still goes, and the job's processes with it."""
    from airflow_provider_sky.operators.sky import ON_KILL_GRACE

    run = "trap '' TERM; echo pgid=$(ps -o pgid= -p $$ | tr -d ' '); while true; do sleep 0.2; done"
    op = SkyTaskOperator(task_id="stubborn", run=run, poll_interval=0.1)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(op, _context("stubborn", TaskStateStore()), errors))
    thread.start()
    name = cluster_name_for("lifecycle", "stubborn", "manual__1")
    pgid = None
    deadline = time.time() + 30
    while time.time() < deadline and pgid is None:
        jobs = sky_env.store.list_jobs(cluster_name=name)
        text = sky_env.read_log(name, jobs[0].job_id, 0)[0] if jobs else ""
        if "pgid=" in text:
            pgid = int(text.split("pgid=")[1].split()[0])
        time.sleep(0.1)
    assert pgid is not None and ON_KILL_GRACE < 10
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive() and errors
    assert sky_env.store.list_jobs(cluster_name=name)[0].status is JobStatus.CANCELLED
    assert sky_env.store.get_cluster(name).status is ClusterStatus.TERMINATED
    deadline = time.time() + 10  # SIGKILL is delivered asynchronously; zombies don't count
    while _live_members(pgid) and time.time() < deadline:
        time.sleep(0.1)
    assert _live_members(pgid) == []


def _live_members(pgid: int) -> list[int]:
    """Pids of the process group's members that are not zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _run_catching(op: SkyTaskOperator, context: dict[str, Any], errors: list[BaseException]) -> None:
    try:
        op.execute(context)
    except BaseException as exc:
        errors.append(exc)
