"""Staging inputs into the planned region while the cluster launches (moto S3; the local backend
recorded as an aws cluster, and moto EC2 for the cost ceiling)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator
from airflow_provider_sky.provision import input_staging
from airflow_provider_sky.provision.core import LaunchResult, SkyCore
from airflow_provider_sky.provision.input_staging import StagingCostError
from airflow_provider_sky.provision.naming import cluster_name_for
from airflow_provider_sky.state import StateStore
from tests.emulators import get_emulator, set_s3_connection, unique_name
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures
from tests.test_operator_aws import REGIONS, aws_connections  # noqa: F401 - fixture
from tests.test_operator_lifecycle import TaskStateStore, _context

FILES = {"data/a.txt": b"alpha\n" * 40, "data/sub/b.bin": bytes(range(256)) * 30}
TOTAL = sum(map(len, FILES.values()))
WAIT_S = 30.0  # how long one side waits to see the other running (never reached when they overlap)


def _wait_for(check: Callable[[], bool], seconds: float = WAIT_S) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Moto S3 and an Airflow `aws` connection to it for the operator's stores."""
    emu = get_emulator("s3")
    set_s3_connection(monkeypatch, "S3_STAGE")
    return emu


def _source(s3: Any, region: str) -> str:
    bucket = unique_name("ovl")
    client = boto3.client("s3", **s3.options())
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**kwargs)
    for key, body in FILES.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/data/"


class Timeline:
    """Start/end times of the launch and of each staging call (thread, region); each side of the
    overlap waits until it sees the other one running, so run one after the other they time out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.launch: list[float] = []
        self.stagings: list[dict[str, Any]] = []

    def background(self) -> list[dict[str, Any]]:
        return [s for s in self.stagings if s["thread"] != threading.main_thread().name]

    def launch_running(self) -> bool:
        return len(self.launch) == 1


class RelabelingCore(SkyCore):
    """Launches on the local backend (jobs run on this machine) and records the cluster as an aws
    cluster in `land_in`: a planned aws region, or another one (a failover)."""

    land_in = "eu-west-1"
    timeline: Timeline

    def launch(self, task: Any, cluster_name: str, owner: Any = None, preferred: Any = None) -> LaunchResult:
        self.timeline.launch.append(time.time())
        self.preferred = preferred
        _wait_for(lambda: bool(self.timeline.background()))  # staging started while launching
        result = super().launch(task, cluster_name, owner)
        cluster = self.store.update_cluster(cluster_name, cloud="aws", region=self.land_in)
        self.timeline.launch.append(time.time())
        return LaunchResult(cluster, result.created)


@pytest.fixture
def relabeling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RelabelingCore:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    local = LocalCloud(str(tmp_path / "local"))
    core = RelabelingCore(StateStore(f"sqlite:///{tmp_path / 'state.db'}"), {"local": local, "aws": local})
    core.timeline = timeline = Timeline()
    monkeypatch.setattr(SkyHook, "core", property(lambda self: core))
    real = input_staging.stage_task_inputs

    def recording(task: Any, cloud: Any, region: Any, *args: Any, **kwargs: Any) -> Any:
        span = {"thread": threading.current_thread().name, "region": region, "start": time.time()}
        with timeline.lock:
            timeline.stagings.append(span)
        if span["thread"] != threading.main_thread().name:
            _wait_for(timeline.launch_running)  # the launch started while staging
        try:
            return real(task, cloud, region, *args, **kwargs)
        finally:
            span["end"] = time.time()

    monkeypatch.setattr(input_staging, "stage_task_inputs", recording)
    monkeypatch.setattr(
        SkyTaskOperator,
        "_planned_placement",
        lambda self, core, context, owner: {"cloud": "aws", "region": "eu-west-1"},
    )
    return core


def _operator(uri: str, **kwargs: Any) -> SkyTaskOperator:
    return SkyTaskOperator(
        task_id="reads",
        run="cat ~/in/a.txt | head -1",
        file_mounts={"~/in": uri},
        inputs={uri: 0.001},
        resources={"infra": "local"},
        storage_conn_ids={"s3": "s3_stage"},
        poll_interval=0.1,
        **kwargs,
    )


def test_staging_overlaps_the_launch_and_submit_is_a_cache_hit(s3: Any, relabeling: RelabelingCore) -> None:
    uri = _source(s3, "us-east-1")
    result = _operator(uri).execute(_context("reads", TaskStateStore()))

    timeline = relabeling.timeline
    (ahead,) = timeline.background()
    launch_start, launch_end = timeline.launch
    assert ahead["region"] == "eu-west-1"
    assert ahead["start"] < launch_end and launch_start < ahead["end"]  # the intervals intersect
    submit_time = [s for s in timeline.stagings if s is not ahead]
    assert len(submit_time) == 1 and submit_time[0]["start"] >= ahead["end"]  # joined before submit
    assert relabeling.preferred == {"cloud": "aws", "region": "eu-west-1"}  # the launch got its plan

    assert result["exit_code"] == 0
    assert "alpha" in "\n".join(relabeling.log_tail(result["cluster"], result["job_id"], 10))
    staging = result["staging"]
    assert (staging["cloud"], staging["region"]) == ("aws", "eu-west-1")
    (item,) = staging["inputs"]
    assert item["source"] == uri and item["staged"].startswith("s3://sky-stage-eu-west-1-")
    assert item["cache_hit"] is True and item["bytes_copied"] == 0 and item["bytes"] == TOTAL
    assert item["copied"] is True and item["src_region"] == "us-east-1"
    assert item["est_cost_usd"] == 0.0 and item["seconds"] >= 0
    prestaged = staging["prestaged"]
    assert prestaged["used"] is True and prestaged["bytes_copied"] == TOTAL
    assert (prestaged["cloud"], prestaged["region"]) == ("aws", "eu-west-1") and "error" not in prestaged
    json.dumps(result)  # XCom-serialisable
    assert relabeling.store.get_cluster(result["cluster"]).status.value == "TERMINATED"


def test_failover_to_another_region_stages_again_there(
    s3: Any, relabeling: RelabelingCore, caplog: pytest.LogCaptureFixture
) -> None:
    relabeling.land_in = "us-west-2"  # planned eu-west-1, failover put it in us-west-2
    uri = _source(s3, "us-east-1")
    caplog.set_level(logging.INFO, logger="airflow_provider_sky.provision.input_staging")
    result = _operator(uri).execute(_context("reads", TaskStateStore()))

    assert [s["region"] for s in relabeling.timeline.stagings] == ["eu-west-1", "us-west-2"]
    staging = result["staging"]
    assert (staging["cloud"], staging["region"]) == ("aws", "us-west-2")
    (item,) = staging["inputs"]
    assert item["staged"].startswith("s3://sky-stage-us-west-2-")
    assert item["cache_hit"] is False and item["bytes_copied"] == TOTAL
    assert staging["prestaged"]["used"] is False and staging["prestaged"]["bytes_copied"] == TOTAL
    assert any("is unused" in r.getMessage() and "us-west-2" in r.getMessage() for r in caplog.records)
    # the copy made in the planned region is there, just not read
    assert staging["prestaged"]["bucket"].startswith("s3://sky-stage-eu-west-1-")
    unused = staging["prestaged"]["bucket"] + item["staged"].removeprefix(staging["bucket"])
    assert _listing(unused, s3) == {k.removeprefix("data/") for k in FILES}
    assert result["exit_code"] == 0


def test_staging_report_reaches_the_xcom_of_a_try_in_another_process(
    s3: Any, relabeling: RelabelingCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report of what the submit staged is kept in the task's state store: a retry that finds
    the job already done (its first worker died before pushing XCom), or a deferral resumed in
    another worker, runs with a core that never staged anything and still reports it."""
    uri = _source(s3, "us-east-1")
    state = TaskStateStore()
    first = _operator(uri, down=False).execute(_context("reads", state))
    assert first["staging"]["inputs"] and first["exit_code"] == 0

    # The next try runs in a new worker process: a fresh core over the same state database.
    fresh = RelabelingCore(relabeling.store, relabeling.clouds)
    fresh.timeline = relabeling.timeline
    monkeypatch.setattr(SkyHook, "core", property(lambda self: fresh))
    assert fresh.last_staging_report(first["cluster"], first["job_id"]) is None
    again = _operator(uri, down=False).execute(_context("reads", state))
    assert again["job_id"] == first["job_id"]  # not rerun: the earlier try's job succeeded
    assert again["staging"] == first["staging"]
    fresh.down(first["cluster"])


def _listing(uri: str, s3: Any) -> set[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", **s3.options())
    keys = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {k["Key"][len(prefix) :] for k in keys}


def test_background_error_other_than_cost_is_logged_and_submit_retries(
    s3: Any, relabeling: RelabelingCore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uri = _source(s3, "us-east-1")
    recording = input_staging.stage_task_inputs

    def unreachable(uri: str) -> dict[str, Any]:
        raise OSError(f"storage endpoint for {uri} unreachable")

    def flaky(task: Any, cloud: Any, region: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            options = unreachable  # the background staging fails (not on cost)
        return recording(task, cloud, region, options, *args, **kwargs)

    monkeypatch.setattr(input_staging, "stage_task_inputs", flaky)
    caplog.set_level(logging.WARNING, logger="airflow_provider_sky.provision.input_staging")
    result = _operator(uri).execute(_context("reads", TaskStateStore()))

    assert "error" in result["staging"]["prestaged"] and result["staging"]["prestaged"]["used"] is False
    assert any("while launching failed" in r.getMessage() for r in caplog.records)
    (item,) = result["staging"]["inputs"]
    assert item["cache_hit"] is False and item["bytes_copied"] == TOTAL  # the submit staged it
    assert result["exit_code"] == 0


def test_prestage_needs_a_cloud_placement_and_something_to_run(s3: Any) -> None:
    from airflow_provider_sky.spec import Task

    uri = _source(s3, "us-east-1")
    task = Task(name="t", run="true", inputs={uri: 0.001})
    assert input_staging.prestage(task, None) is None
    assert input_staging.prestage(task, {"cloud": "local", "region": None}) is None
    assert input_staging.prestage(task, {"cloud": "aws"}) is None
    assert (
        input_staging.prestage(Task(name="t", inputs={uri: 0.001}), {"cloud": "aws", "region": "eu-west-1"})
        is None
    )
    with pytest.raises(Exception, match="max_staging_cost_usd"):  # a bad ceiling fails before any launch
        input_staging.prestage(
            Task(name="t", run="true", inputs={uri: 0.001}, config={"max_staging_cost_usd": "lots"}),
            {"cloud": "aws", "region": "eu-west-1"},
        )


def test_cost_ceiling_in_the_background_fails_before_any_job_and_leaves_no_instance(
    s3: Any,
    aws_connections: MotoEc2,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pendulum
    from airflow.sdk import DAG

    uri = _source(s3, "eu-west-1")  # far from the planned us-east-1
    with DAG("ovl", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        op = SkyTaskOperator(
            task_id="pricey",
            run="echo never",
            inputs={uri: 0.001},
            resources={"infra": "aws/us-east-1", "cpus": "2+"},
            storage_conn_ids={"s3": "s3_stage"},
            max_staging_cost_usd=0.0,
        )
    core = SkyHook().core

    def submit(self: SkyCore, *args: Any, **kwargs: Any) -> int:
        raise AssertionError("a job was submitted despite the staging cost ceiling")

    monkeypatch.setattr(SkyCore, "submit", submit)
    threads: list[str] = []
    real = input_staging.stage_task_inputs

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(input_staging, "stage_task_inputs", recording)
    ctx = _context("pricey", TaskStateStore(), run_id="manual__ovl")
    ctx["ti"].dag_id = "ovl"
    ctx["dag"] = dag
    with pytest.raises(StagingCostError, match=r"max_staging_cost_usd: .*us-east-1.* over the limit"):
        op.execute(ctx)
    assert threads and all(t != threading.main_thread().name for t in threads)  # raised by the background
    cluster = core.store.get_cluster(cluster_name_for("ovl", "pricey", "manual__ovl", -1))
    assert cluster is not None and cluster.region == "us-east-1"  # launched where planned, then downed
    assert core.store.list_jobs(cluster_name=cluster.name) == []
    assert aws_connections.live_instances(cluster.name, REGIONS) == []
    assert cluster.status.value == "TERMINATED"


def test_settle_raises_the_cost_error_only_where_the_inputs_were_staged() -> None:
    from types import SimpleNamespace

    def refused() -> Any:
        raise StagingCostError(
            "max_staging_cost_usd: over", cloud="aws", region="eu-west-1", estimate=2, limit=1
        )

    here = SimpleNamespace(cloud="aws", region="EU-WEST-1")
    elsewhere = SimpleNamespace(cloud="aws", region="us-west-2")
    with pytest.raises(StagingCostError, match="over"):
        input_staging.Prestaging("aws", "eu-west-1", refused).settle(here)
    summary = input_staging.Prestaging("aws", "eu-west-1", refused).settle(elsewhere)
    assert summary["used"] is False and "over" in summary["error"]  # the submit checks us-west-2 itself
    handle = input_staging.Prestaging("aws", "eu-west-1", refused)
    with pytest.raises(StagingCostError):
        handle.result()
    assert handle.done() and handle.started_at is not None and handle.finished_at >= handle.started_at
