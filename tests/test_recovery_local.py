"""Managed jobs on the local backend: a cluster "preempted" mid-job (its nodes terminated from
outside) is relaunched and the job restarted under the same SKYPILOT_TASK_ID; user-code failures
are restarted up to max_restarts_on_errors; nothing is recovered without job_recovery."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_sky.clouds.local import LocalCloud, _marked_processes
from airflow_provider_sky.execution.jobs import JobError
from airflow_provider_sky.provision import recovery
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, JobStatus
from airflow_provider_sky.state import recovery as chains

pytestmark = pytest.mark.timeout(120)

OWNER = Owner("recovery", "manual__1", "train")

# Resumes from a checkpoint kept outside the cluster (like a bucket): each start appends
# "<task id> start=<n>" and the job counts on from the last step it checkpointed.
CHECKPOINTING_RUN = """\
mkdir -p "$CKPT"
f="$CKPT/$SKYPILOT_TASK_ID"
step=$(cat "$f.step" 2>/dev/null || echo 0)
echo "$SKYPILOT_TASK_ID start=$step" >> "$CKPT/starts.txt"
while [ "$step" -lt "$STEPS" ]; do
  step=$((step+1)); echo "step $step"; echo "$step" > "$f.step"; sleep 0.1
done
echo "finished at step $step"
"""


@pytest.fixture
def core(tmp_path: Path) -> SkyCore:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    return SkyCore.from_settings(
        SkySettings(state_db_url=url, local_dir=str(tmp_path / "local"), log_dir=str(tmp_path / "logs"))
    )


def _task(tmp_path: Path, job_recovery: object = None, run: str = CHECKPOINTING_RUN, steps: int = 30) -> Task:
    resources: dict[str, object] = {"infra": "local"}
    if job_recovery is not None:
        resources["job_recovery"] = job_recovery
    return Task.from_dict(
        {
            "name": "train",
            "resources": resources,
            "envs": {"CKPT": str(tmp_path / "ckpt"), "STEPS": str(steps)},
            "run": run,
        }
    )


def preempt(core: SkyCore, name: str) -> None:
    """What a spot reclaim does to a local cluster: every process SIGKILLed, the nodes gone.

    (`LocalCloud.terminate` would cancel the jobs gracefully first; a reclaimed VM gets no such chance.)
    The state store still says UP: nobody told it.
    """
    local = core.clouds["local"]
    assert isinstance(local, LocalCloud)
    cdir = local.cluster_dir(name).resolve()
    pids = _marked_processes(str(cdir))
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # frozen first: no driver sees its child die
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    shutil.rmtree(cdir, ignore_errors=True)


def _preempt_when(core: SkyCore, name: str, tmp_path: Path, at_step: int) -> threading.Thread:
    """Terminate the cluster's nodes from outside once the job checkpointed `at_step` (a spot preemption)."""

    def run() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            steps = list((tmp_path / "ckpt").glob("*.step"))
            if steps and int(steps[0].read_text().strip() or 0) >= at_step:
                preempt(core, name)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_preempted_cluster_is_relaunched_and_job_resumes_with_same_task_id(
    core: SkyCore, tmp_path: Path
) -> None:
    task = _task(tmp_path, {"strategy": "failover"})
    name = "spot-train-1"
    core.launch(task, name, OWNER)
    job_id = recovery.submit_managed(core, task, name, OWNER)
    original_task_id = chains.get_job(core.store, name, job_id).task_id
    killer = _preempt_when(core, name, tmp_path, at_step=8)
    lines: list[str] = []
    new_jobs: list[int] = []

    result = recovery.follow_with_recovery(
        core, task, name, OWNER, job_id, lines.append, poll_interval=0.1, on_new_job=new_jobs.append
    )
    killer.join(timeout=5)

    assert result.status is JobStatus.SUCCEEDED
    assert result.preemptions == 1 and result.restarts_on_errors == 0
    assert new_jobs == [result.job_id] and result.job_id != job_id
    starts = (tmp_path / "ckpt" / "starts.txt").read_text().splitlines()
    assert len(starts) == 2
    assert {s.split()[0] for s in starts} == {original_task_id} == {result.task_id}
    resumed_at = int(starts[1].split("start=")[1])
    assert resumed_at >= 8, starts  # resumed from its checkpoint, not from 0
    text = "".join(lines)
    assert "[sky recovery] preempted" in text and "finished at step 30" in text
    assert f"SKYPILOT_TASK_ID={original_task_id}" in text
    # The preempted job is LOST, the restarted one SUCCEEDED; one cluster, UP, relaunched once.
    jobs = {j.job_id: j.status for j in core.store.list_jobs(cluster_name=name)}
    assert jobs == {job_id: JobStatus.LOST, result.job_id: JobStatus.SUCCEEDED}
    assert core.store.get_cluster(name).status is ClusterStatus.UP
    assert [a.outcome for a in core.store.list_attempts(name)] == ["launched", "launched"]
    assert result.history[0]["reason"] == "preemption" and result.history[0]["previous_job_id"] == job_id
    assert result.to_xcom()["preemptions"] == 1
    core.down(name)
    assert core.clouds["local"].find(name) is None


def test_eager_next_region_falls_back_to_the_only_region_and_detects_only_real_loss(
    core: SkyCore, tmp_path: Path
) -> None:
    task = _task(tmp_path, "eager_next_region", steps=20)
    name = "spot-eager-1"
    core.launch(task, name, OWNER)
    assert recovery.detect_preemption(core, name) is None  # healthy
    job_id = recovery.submit_managed(core, task, name, OWNER)
    killer = _preempt_when(core, name, tmp_path, at_step=5)
    result = recovery.follow_with_recovery(
        core, task, name, OWNER, job_id, lambda _t: None, poll_interval=0.1
    )
    killer.join(timeout=5)
    assert result.status is JobStatus.SUCCEEDED and result.preemptions == 1
    # local has one region: the blocked attempt found nothing, then the preempted region was used again.
    assert result.history[0]["placement"]["region"] == "local"
    core.down(name)
    assert recovery.detect_preemption(core, name) is None  # torn down by us: not a preemption


def test_detect_preemption_reports_missing_nodes(core: SkyCore, tmp_path: Path) -> None:
    task = Task.from_dict({"name": "two", "num_nodes": 2, "resources": {"infra": "local"}, "run": "true"})
    name = "spot-two-1"
    core.launch(task, name, OWNER)
    local = core.clouds["local"]
    handle = local.find(name)
    # The cloud now reports one node (the other was reclaimed).
    meta_path = Path(handle.extra["cluster_dir"]) / "cluster.json"
    meta = json.loads(meta_path.read_text())
    meta["handle"]["num_nodes"] = 1
    meta["handle"]["node_ids"] = meta["handle"]["node_ids"][:1]
    meta["handle"]["node_ips"] = meta["handle"]["node_ips"][:1]
    meta["handle"]["extra"]["node_dirs"] = meta["handle"]["extra"]["node_dirs"][:1]
    meta_path.write_text(json.dumps(meta))
    info = recovery.detect_preemption(core, name)
    assert info is not None and (info.expected_nodes, info.found_nodes) == (2, 1)
    assert "node-1" in info.reason
    core.down(name)


def test_user_error_is_restarted_up_to_max_restarts_on_errors_then_fails(
    core: SkyCore, tmp_path: Path
) -> None:
    run = 'echo "try $SKYPILOT_TASK_ID" >> "$CKPT/tries.txt"; echo failing; exit 7'
    (tmp_path / "ckpt").mkdir()
    task = _task(tmp_path, {"strategy": "failover", "max_restarts_on_errors": 1}, run=run)
    name = "err-restart-1"
    core.launch(task, name, OWNER)
    job_id = recovery.submit_managed(core, task, name, OWNER)
    lines: list[str] = []
    result = recovery.follow_with_recovery(core, task, name, OWNER, job_id, lines.append, poll_interval=0.1)
    assert result.status is JobStatus.FAILED
    assert (result.restarts_on_errors, result.preemptions) == (1, 0)
    tries = (tmp_path / "ckpt" / "tries.txt").read_text().splitlines()
    assert len(tries) == 2 and len(set(tries)) == 1  # twice, same task id
    jobs = core.store.list_jobs(cluster_name=name)
    assert [(j.status, j.exit_code) for j in jobs] == [(JobStatus.FAILED, 7), (JobStatus.FAILED, 7)]
    assert len(core.store.list_attempts(name)) == 1  # restarted on the same cluster, no relaunch
    assert "restart 1 of 1" in "".join(lines)
    core.down(name)


def test_no_recovery_without_job_recovery(core: SkyCore, tmp_path: Path) -> None:
    task = _task(tmp_path, None, steps=30)
    assert recovery.RecoveryPolicy.from_task(task) is None
    assert recovery.RecoveryPolicy.from_task(_task(tmp_path, "failover")) == recovery.RecoveryPolicy(
        "FAILOVER"
    )
    name = "plain-1"
    core.launch(task, name, OWNER)
    job_id = core.submit(task, name, OWNER)  # the operator's plain path: no chain
    killer = _preempt_when(core, name, tmp_path, at_step=5)
    deadline = time.time() + 60
    status = None
    while time.time() < deadline:
        try:
            status = core.job_status(name, job_id)
        except JobError:  # a poll that raced the kill (core.job_status does not absorb these)
            continue
        if status is None or status.is_terminal:
            break
        time.sleep(0.1)
    killer.join(timeout=5)
    assert status is JobStatus.LOST
    assert len(core.store.list_jobs(cluster_name=name)) == 1  # nothing restarted it
    assert len(core.store.list_attempts(name)) == 1
    assert chains.get_job(core.store, name, job_id) is None
    assert len((tmp_path / "ckpt" / "starts.txt").read_text().splitlines()) == 1
    core.down(name)
