"""SkyTaskOperator with ``job_recovery`` (docs/patches/recovery-operator.diff): preemption recovered
in the follow loop, after a worker died, and in deferrable mode; counts in XCom.

Skipped until the operator carries the integration (``SkyTaskOperator._follow_managed``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_sky.operators.sky import STATE_KEY, SkyTaskOperator
from airflow_provider_sky.provision import recovery
from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.naming import cluster_name_for
from airflow_provider_sky.state import ClusterStatus, JobStatus
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401 - fixture
from tests.test_recovery_local import CHECKPOINTING_RUN, _preempt_when, preempt

pytestmark = pytest.mark.timeout(120)


def _op(tmp_path: Path, task_id: str, steps: int = 30, **kwargs: object) -> SkyTaskOperator:
    return SkyTaskOperator(
        task_id=task_id,
        run=CHECKPOINTING_RUN,
        envs={"CKPT": str(tmp_path / "ckpt"), "STEPS": str(steps)},
        resources={"infra": "local", "job_recovery": {"strategy": "failover", "max_restarts_on_errors": 0}},
        poll_interval=0.1,
        **kwargs,
    )


def test_operator_recovers_a_preempted_cluster_and_reports_it_in_xcom(
    sky_env: SkyCore,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = TaskStateStore()
    name = cluster_name_for("lifecycle", "managed", "manual__1")
    killer = _preempt_when(sky_env, name, tmp_path, at_step=8)
    result = _op(tmp_path, "managed").execute(_context("managed", store))
    killer.join(timeout=5)
    assert result["status"] == "SUCCEEDED" and result["preemptions"] == 1
    assert result["restarts_on_errors"] == 0 and len(result["recoveries"]) == 1
    starts = (tmp_path / "ckpt" / "starts.txt").read_text().splitlines()
    assert {s.split()[0] for s in starts} == {result["skypilot_task_id"]}
    assert store.get(STATE_KEY)["job_id"] == result["job_id"] == 2  # the restarted job is what a retry sees
    assert result["torn_down"] is True  # auto-named: down at the end, as usual
    assert sky_env.clouds["local"].find(name) is None


def test_retry_after_worker_death_and_preemption_recovers_instead_of_relaunching_blind(
    sky_env: SkyCore,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = cluster_name_for("lifecycle", "managed", "manual__1")
    op = _op(tmp_path, "managed", steps=10)
    task = op._prepare()
    owner = op._owner(_context("managed", TaskStateStore()))
    sky_env.launch(task, name, owner)
    job_id = recovery.submit_managed(sky_env, task, name, owner)
    task_id = recovery.summary(sky_env, name, job_id)["skypilot_task_id"]
    store = TaskStateStore()
    store.set(STATE_KEY, {"cluster": name, "job_id": job_id, "log_offset": 0})
    # The worker died; while nobody watched, the cluster was reclaimed.
    _preempt_when(sky_env, name, tmp_path, at_step=3).join(timeout=30)
    result = _op(tmp_path, "managed", steps=10).execute(_context("managed", store))
    assert result["status"] == "SUCCEEDED" and result["preemptions"] == 1
    assert result["skypilot_task_id"] == task_id
    jobs = sky_env.store.list_jobs(cluster_name=name)
    assert [j.status for j in jobs] == [JobStatus.LOST, JobStatus.SUCCEEDED]  # one restart, no duplicate


def test_deferrable_execute_complete_recovers_and_defers_again(
    sky_env: SkyCore,  # noqa: F811
    tmp_path: Path,
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    name = "managed-deferred-1"
    store = TaskStateStore()
    op = _op(tmp_path, "managed", steps=5, cluster_name=name, deferrable=True)
    with pytest.raises(TaskDeferred) as launch:  # deferrable: the launch runs in a trigger
        op.execute(_context("managed", store))
    from tests.deferral import resume

    with pytest.raises(TaskDeferred):  # then the job is submitted and its wait deferred
        resume(op, _context("managed", store), launch.value)
    job_id = store.get(STATE_KEY)["job_id"]
    preempt(sky_env, name)
    assert sky_env.job_status(name, job_id) is JobStatus.LOST
    op2 = _op(tmp_path, "managed", steps=5, cluster_name=name, deferrable=True)
    event = {"status": "LOST", "cluster": name, "job_id": job_id, "log_offset": 0}
    with pytest.raises(TaskDeferred) as deferred:
        op2.execute_complete(_context("managed", store), event, started=0.0)
    new_job_id = deferred.value.trigger.job_id
    assert new_job_id != job_id and store.get(STATE_KEY)["job_id"] == new_job_id
    assert sky_env.store.get_cluster(name).status is ClusterStatus.UP
    sky_env.down(name)
