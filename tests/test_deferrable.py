"""Deferrable SkyTaskOperator, in-process on the local backend: the launch runs in a trigger (the
worker never launches), triggers survive a JSON round trip and a triggerer restart (adopting the
cluster and job instead of starting second ones), and a user kill reaches the trigger's on_kill
through Airflow's own TriggerRunner.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.operators.sky import STATE_KEY, SkyTaskOperator
from airflow_provider_sky.provision.core import SkyCore
from airflow_provider_sky.provision.naming import cluster_name_for
from airflow_provider_sky.state import ClusterStatus, JobStatus
from airflow_provider_sky.triggers.sky import SkyJobTrigger, SkyLaunchTrigger
from tests.deferral import first_event, recreate, resume, run_deferrable
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(180)

GATED_RUN = (
    'for i in 1 2 3; do echo gated-$i; done; while [ ! -e "$GATE" ]; do sleep 0.05; done; echo gated-end'
)


def _worker_must_not_launch(op: SkyTaskOperator) -> list[str]:
    """Make the operator's own (worker-side) core refuse to launch; the trigger has its own core."""
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[1] if len(args) > 1 else kwargs))
        raise AssertionError("the worker launched a cluster")

    op.hook.core.launch = refuse  # type: ignore[method-assign]
    return calls


def _wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_launch_runs_in_the_trigger_and_the_worker_never_launches(
    sky_env: SkyCore,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    op = SkyTaskOperator(
        task_id="dfr",
        run="for i in 1 2 3; do echo dfr-step-$i; done",
        secrets={"TOKEN": "tok-SECRET-4711"},
        deferrable=True,
        poll_interval=0.1,
    )
    worker_launches = _worker_must_not_launch(op)
    store = TaskStateStore()
    result, triggers = run_deferrable(op, _context("dfr", store))
    assert worker_launches == []
    assert [type(t) for t in triggers] == [SkyLaunchTrigger, SkyJobTrigger]
    assert result["status"] == "SUCCEEDED" and result["exit_code"] == 0
    name = cluster_name_for("lifecycle", "dfr", "manual__1")
    assert result["cluster"] == name and result["torn_down"] is True
    assert [a.outcome for a in sky_env.store.list_attempts(name)] == ["launched"]
    assert result["launch_attempts"][0]["outcome"] == "launched"
    text = capsys.readouterr().out
    assert f"Provisioning cluster {name} in the triggerer" in text
    assert "provisioned in the triggerer after 1 launch attempt(s)" in text
    # A job with secrets is printed by the worker on resume (redaction needs the values): once.
    assert sum("dfr-step-2 " in line for line in text.splitlines()) == 1
    assert store.get(STATE_KEY)["job_id"] == result["job_id"]
    assert store.get(STATE_KEY)["log_offset"] > 0  # the resumed worker recorded how far the log got


def test_trigger_kwargs_are_json_without_secrets_or_scripts(sky_env: SkyCore) -> None:  # noqa: F811
    op = SkyTaskOperator(
        task_id="ser",
        run="echo run-script-body",
        setup="echo setup-script-body",
        envs={"PLAIN": "env-value-1"},
        secrets={"TOKEN": "tok-SECRET-0815"},
        resources={"infra": "local", "cpus": "1+"},
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as launch:
        op.execute(_context("ser", TaskStateStore()))
    trigger = launch.value.trigger
    assert isinstance(trigger, SkyLaunchTrigger)
    classpath, kwargs = trigger.serialize()
    text = json.dumps(kwargs)  # JSON, as the triggerer stores it
    for leaked in ("tok-SECRET-0815", "run-script-body", "setup-script-body", "env-value-1"):
        assert leaked not in text
    again = recreate(trigger)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["owner"] == {
        "dag_id": "lifecycle",
        "run_id": "manual__1",
        "task_id": "ser",
        "map_index": -1,
    }
    assert kwargs["task_spec"]["resources"] == {"infra": "local", "cpus": "1+"}
    job = SkyJobTrigger(cluster_name="c-1", job_id=3, log_offset=120, poll_interval=0.5, secret_count=1)
    assert recreate(job).serialize() == job.serialize()
    assert launch.value.kwargs["started"] > 0  # the resume kwargs are JSON too
    json.dumps(launch.value.kwargs)


def test_job_trigger_restarted_mid_wait_follows_the_same_job(
    sky_env: SkyCore,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate = tmp_path / "gate-open"
    op = SkyTaskOperator(
        task_id="rst", run=GATED_RUN, envs={"GATE": str(gate)}, deferrable=True, poll_interval=0.05
    )
    store = TaskStateStore()
    ctx = _context("rst", store)
    with pytest.raises(TaskDeferred) as launch:
        op.execute(ctx)
    with pytest.raises(TaskDeferred) as wait:
        resume(op, ctx, launch.value)
    name, job_id = wait.value.trigger.cluster_name, wait.value.trigger.job_id

    async def run_until_cancelled() -> None:  # a triggerer that dies mid-wait (no on_kill)
        task = asyncio.ensure_future(anext(recreate(wait.value.trigger).run()))
        while "gated-3" not in sky_env.read_log(name, job_id, 0)[0]:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few polls: the first trigger logs what is there
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_until_cancelled())
    assert sky_env.job_status(name, job_id) is JobStatus.RUNNING
    gate.touch()
    event = first_event(recreate(wait.value.trigger))  # the new triggerer re-creates it
    result = op.execute_complete(ctx, event, **wait.value.kwargs)
    assert event["kind"] == "job" and event["job_id"] == job_id and event["status"] == "SUCCEEDED"
    assert result["status"] == "SUCCEEDED" and result["job_id"] == job_id
    assert [j.job_id for j in sky_env.store.list_jobs(cluster_name=name)] == [job_id]  # no second job
    assert [a.outcome for a in sky_env.store.list_attempts(name)] == ["launched"]  # no second cluster
    assert "gated-end" in capsys.readouterr().out


_CRASHING_TRIGGERER = """
import asyncio, json, sys, time
from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.triggers.sky import SkyLaunchTrigger

launch = LocalCloud.launch

def slow(self, *args, **kwargs):
    handle = launch(self, *args, **kwargs)
    print("cluster directories exist", flush=True)
    time.sleep(120)  # the VM is up, the broker has not recorded it: the triggerer dies here
    return handle

LocalCloud.launch = slow
trigger = SkyLaunchTrigger(**json.loads(sys.argv[1]))
asyncio.run(anext(trigger.run()))
"""


def test_launch_trigger_restarted_after_a_triggerer_crash_adopts_the_cluster(
    sky_env: SkyCore,  # noqa: F811
) -> None:
    op = SkyTaskOperator(task_id="crash", run="echo after-adopt", deferrable=True, poll_interval=0.05)
    ctx = _context("crash", TaskStateStore())
    with pytest.raises(TaskDeferred) as launch:
        op.execute(ctx)
    name = launch.value.trigger.cluster_name
    _, kwargs = launch.value.trigger.serialize()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_TRIGGERER, json.dumps(kwargs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line
            if "cluster directories exist" in line:
                break
        assert "cluster directories exist" in seen, seen[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert sky_env.store.get_cluster(name).status is ClusterStatus.INIT
    assert sky_env.clouds["local"].find(name) is not None

    event = first_event(recreate(launch.value.trigger))  # the restarted triggerer
    assert event["kind"] == "launched" and event["created"] is True
    with pytest.raises(TaskDeferred) as wait:
        op.execute_complete(ctx, event, **launch.value.kwargs)
    result, _ = resume(op, ctx, wait.value)
    assert result["status"] == "SUCCEEDED"
    assert [a.outcome for a in sky_env.store.list_attempts(name)] == ["adopted"]  # never launched twice
    assert len(sky_env.store.list_jobs(cluster_name=name)) == 1
    assert [c.name for c in sky_env.store.list_clusters()] == [name]


async def _user_kill(trigger: Any, started: Any) -> None:
    """Run `trigger` under Airflow's TriggerRunner and kill it like a user marking the task failed."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    runner = TriggerRunner()
    task = asyncio.ensure_future(runner.run_trigger(1, trigger))
    runner.triggers[1] = {"task": task, "name": "sky-test", "events": 0, "is_watcher": False}
    while not started():
        await asyncio.sleep(0.05)
    runner.to_cancel.append(1)
    await runner.cancel_triggers()  # cancels with the user-action message: on_kill runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.events == type(runner.events)()  # no event: the task is not resumed


def test_user_kill_during_the_job_wait_cancels_the_job_and_tears_down(
    sky_env: SkyCore,  # noqa: F811
    tmp_path: Path,
) -> None:
    op = SkyTaskOperator(
        task_id="kj",
        run=GATED_RUN,
        envs={"GATE": str(tmp_path / "never")},
        deferrable=True,
        poll_interval=0.05,
    )
    ctx = _context("kj", TaskStateStore())
    with pytest.raises(TaskDeferred) as launch:
        op.execute(ctx)
    with pytest.raises(TaskDeferred) as wait:
        resume(op, ctx, launch.value)
    trigger = recreate(wait.value.trigger)
    name, job_id = trigger.cluster_name, trigger.job_id

    def running() -> bool:  # the trigger is polling the job, which waits at its gate
        polling = getattr(trigger, "_inflight", None) is not None
        return polling and "gated-3" in sky_env.read_log(name, job_id, 0)[0]

    asyncio.run(_user_kill(trigger, running))
    assert sky_env.store.get_job(name, job_id).status is JobStatus.CANCELLED
    assert sky_env.store.get_cluster(name).status is ClusterStatus.TERMINATED
    assert sky_env.clouds["local"].find(name) is None


def test_user_kill_during_the_launch_waits_for_it_and_tears_down(
    sky_env: SkyCore,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = SkyTaskOperator(task_id="kl", run="echo never-runs", deferrable=True)
    with pytest.raises(TaskDeferred) as launch:
        op.execute(_context("kl", TaskStateStore()))
    trigger = recreate(launch.value.trigger)
    name = trigger.cluster_name
    in_launch, release = threading.Event(), threading.Event()
    original = LocalCloud.launch

    def slow_launch(self: LocalCloud, *args: Any, **kwargs: Any) -> Any:
        handle = original(self, *args, **kwargs)
        in_launch.set()
        release.wait(30)  # the kill arrives while the cloud call is still running
        return handle

    monkeypatch.setattr(LocalCloud, "launch", slow_launch)

    def started() -> bool:
        if in_launch.is_set():
            threading.Timer(0.3, release.set).start()  # the cloud call returns after the kill
            return True
        return False

    asyncio.run(_user_kill(trigger, started))
    assert release.is_set()
    record = sky_env.store.get_cluster(name)
    assert record.status is ClusterStatus.TERMINATED  # torn down after the launch came back
    assert sky_env.clouds["local"].find(name) is None
    assert sky_env.store.list_jobs(cluster_name=name) == []


def test_follow_loops_save_the_log_offset_as_they_go(sky_env: SkyCore, tmp_path: Path) -> None:  # noqa: F811
    """Worker-side follow (plain and managed): the stored offset ends at the end of the job's log."""
    plain = SkyTaskOperator(task_id="plain", run="for i in 1 2 3; do echo p-$i; done", poll_interval=0.05)
    managed = SkyTaskOperator(
        task_id="managed",
        run="for i in 1 2 3; do echo m-$i; sleep 0.1; done",
        resources={"infra": "local", "job_recovery": {"strategy": "failover", "max_restarts_on_errors": 0}},
        poll_interval=0.05,
    )
    for op in (plain, managed):
        op.log_offset_save_seconds = 0.0
        store = TaskStateStore()
        saved: list[int] = []
        original = store.set

        def spy(key: str, value: Any, original: Any = original, saved: list[int] = saved) -> None:
            saved.append(int(value.get("log_offset") or 0))
            original(key, value)

        store.set = spy  # type: ignore[method-assign]
        result = op.execute(_context(op.task_id, store))
        assert result["status"] == "SUCCEEDED"
        _, end = sky_env.read_log(result["cluster"], result["job_id"], 0, final=True)
        assert end > 0 and store.get(STATE_KEY)["log_offset"] == end, op.task_id
        assert saved == sorted(saved) and saved[-1] == end  # only ever forward
        assert saved.count(end) == 1  # saved when it moved, not once per poll


def test_the_event_loop_runs_while_the_trigger_launches(
    sky_env: SkyCore,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The launch blocks in a thread: a coroutine on the same loop is what lets it finish."""
    op = SkyTaskOperator(task_id="loop", run="true", deferrable=True)
    with pytest.raises(TaskDeferred) as launch:
        op.execute(_context("loop", TaskStateStore()))
    in_launch, release = threading.Event(), threading.Event()
    original = LocalCloud.launch

    def gated_launch(self: LocalCloud, *args: Any, **kwargs: Any) -> Any:
        in_launch.set()
        if not release.wait(30):  # a blocked event loop never releases it
            raise RuntimeError("the event loop was blocked during the launch")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LocalCloud, "launch", gated_launch)

    async def main() -> Any:
        task = asyncio.ensure_future(anext(recreate(launch.value.trigger).run()))
        while not in_launch.is_set():
            await asyncio.sleep(0.01)
        release.set()
        return await task

    event = asyncio.run(main()).payload
    assert event["kind"] == "launched", event
    sky_env.down(event["cluster"])
