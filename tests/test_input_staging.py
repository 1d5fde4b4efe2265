"""Automatic staging of bucket inputs into the cluster's region (moto S3, fake-gcs-server, Azurite)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.provision import input_staging
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.input_staging import StagingCostError, stage_task_inputs
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import JobStatus, StateStore
from airflow_provider_sky.state.staging_cache import StateStagingCache
from airflow_provider_sky.storage import parse_uri, store_for_uri
from airflow_provider_sky.storage.staging import staging_account, staging_bucket_name, staging_uri
from tests.emulators import get_emulator, unique_name

FILES = {"data/a.txt": b"alpha\n" * 50, "data/sub/b.bin": bytes(range(256)) * 40}


@pytest.fixture
def s3() -> Any:
    return get_emulator("s3")


@pytest.fixture
def cache(tmp_path: Path) -> StateStagingCache:
    return StateStagingCache(StateStore(f"sqlite:///{tmp_path / 'state.db'}"))


def _options_for(**emulators: Any) -> Any:
    """A store-options callback over the emulators given by scheme (s3=, gs=, az=)."""

    def options(uri: str) -> dict[str, Any]:
        return emulators[parse_uri(uri).scheme].options()

    return options


def _client(s3: Any) -> Any:
    return boto3.client("s3", **s3.options())


def _s3_source(s3: Any, region: str, files: dict[str, bytes] = FILES) -> str:
    bucket = unique_name("src")
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client = _client(s3)
    client.create_bucket(**kwargs)
    for key, body in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


def _read_prefix(uri: str, options: dict[str, Any]) -> dict[str, bytes]:
    loc = parse_uri(uri)
    store = store_for_uri(uri, **options)
    prefix = loc.key if loc.key.endswith("/") else loc.key + "/"
    try:
        return {o.key[len(prefix) :]: store.read(o.key) for o in store.list(prefix)}
    finally:
        store.close()


def _task(uri: str, **extra: Any) -> Task:
    return Task(name="reads", run="true", inputs={uri: 0.001}, file_mounts={"~/in": uri}, **extra)


def test_cross_region_input_is_staged_then_cached_then_recopied_when_changed(
    s3: Any, cache: StateStagingCache, caplog: pytest.LogCaptureFixture
) -> None:
    src = _s3_source(s3, "us-east-1")
    uri = f"s3://{src}/data/"
    opts = _options_for(s3=s3)
    caplog.set_level(logging.INFO, logger="airflow_provider_sky.provision.input_staging")

    first = stage_task_inputs(_task(uri), "aws", "eu-west-1", opts, cache=cache)

    staged = first.mapping[uri]
    bucket = staging_bucket_name("aws", "eu-west-1", staging_account("s3", s3.options()))
    assert staged == f"s3://{bucket}/s3/{src}/data/"
    assert _client(s3).get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    rules = _client(s3).get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(r.get("Expiration", {}).get("Days") for r in rules)
    expected = {k.removeprefix("data/"): v for k, v in FILES.items()}
    assert _read_prefix(staged, s3.options()) == expected
    assert first.task.file_mounts["~/in"].source == staged
    assert json.loads(first.task.envs["SKY_INPUTS"]) == {uri: staged}
    (item,) = first.inputs
    assert item.copied and not item.cache_hit and item.src_region == "us-east-1"
    assert item.bytes == item.bytes_copied == sum(map(len, FILES.values()))
    assert item.est_cost_usd is not None and item.est_cost_usd > 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"input {uri}"))
    assert "(aws/us-east-1)" in line and "(aws/eu-west-1)" in line and "cache miss" in line

    second = stage_task_inputs(_task(uri), "aws", "eu-west-1", opts, cache=cache)
    assert second.mapping == first.mapping
    assert second.inputs[0].cache_hit and second.inputs[0].bytes_copied == 0

    _client(s3).put_object(Bucket=src, Key="data/a.txt", Body=b"changed\n")
    third = stage_task_inputs(_task(uri), "aws", "eu-west-1", opts, cache=cache)
    assert not third.inputs[0].cache_hit
    assert third.inputs[0].bytes_copied == len(b"changed\n")  # the unchanged object is skipped
    assert _read_prefix(staged, s3.options())["a.txt"] == b"changed\n"


def test_same_region_input_is_read_in_place(s3: Any, cache: StateStagingCache) -> None:
    src = _s3_source(s3, "eu-west-1")
    uri = f"s3://{src}/data/"
    out = stage_task_inputs(_task(uri), "aws", "eu-west-1", _options_for(s3=s3), cache=cache)
    assert out.mapping == {uri: uri} and not out.inputs[0].copied
    assert out.task.file_mounts["~/in"].source == uri
    assert cache.entries() == []


def test_local_cluster_needs_no_staging(s3: Any) -> None:
    uri = f"s3://{_s3_source(s3, 'us-east-1')}/data/"
    task = _task(uri)
    assert not input_staging.wanted(task, "local") and input_staging.wanted(task, "aws")
    out = stage_task_inputs(task, "local", None, _options_for(s3=s3))
    assert out.task is task and out.mapping == {}


def test_gcs_input_for_an_aws_cluster_crosses_providers(s3: Any, cache: StateStagingCache) -> None:
    gcs = get_emulator("gcs")
    bucket = unique_name("gsrc")
    store = store_for_uri(f"gs://{bucket}/", **gcs.options())
    store.create_bucket("us-central1")
    for key, body in FILES.items():
        store.write(key, body)
    store.close()
    uri = f"gs://{bucket}/data/"
    out = stage_task_inputs(_task(uri), "aws", "eu-west-1", _options_for(s3=s3, gs=gcs), cache=cache)
    staged = out.mapping[uri]
    assert staged.startswith("s3://sky-stage-eu-west-1-") and staged.endswith(f"/gs/{bucket}/data/")
    assert _read_prefix(staged, s3.options()) == {k.removeprefix("data/"): v for k, v in FILES.items()}
    (item,) = out.inputs
    assert item.src_cloud == "gcp" and item.src_region == "us-central1"
    assert item.est_cost_usd is not None and item.est_cost_usd > 0


def test_cost_ceiling_fails_before_any_copy(s3: Any, cache: StateStagingCache) -> None:
    src = _s3_source(s3, "us-east-1", {"data/big.bin": b"x" * 300_000})
    uri = f"s3://{src}/data/"
    task = _task(uri, config={"max_staging_cost_usd": 1e-9})
    with pytest.raises(StagingCostError, match=r"^max_staging_cost_usd: .* over the limit") as err:
        stage_task_inputs(task, "aws", "eu-west-1", _options_for(s3=s3), cache=cache,
                          max_cost_usd=input_staging.cost_limit(task))  # fmt: skip
    assert err.value.field == "max_staging_cost_usd" and err.value.estimate > err.value.limit
    bucket = staging_bucket_name("aws", "eu-west-1", staging_account("s3", s3.options()))
    if any(b["Name"] == bucket for b in _client(s3).list_buckets()["Buckets"]):  # made by another test
        assert _read_prefix(staging_uri("aws", bucket, f"s3/{src}/data/"), s3.options()) == {}
    assert cache.entries() == []
    with pytest.raises(Exception, match="max_staging_cost_usd"):
        input_staging.cost_limit(Task(run="true", config={"max_staging_cost_usd": "lots"}))


def test_azure_cluster_stages_into_a_container_mountable_by_url(s3: Any, cache: StateStagingCache) -> None:
    az = get_emulator("azure")
    uri = f"s3://{_s3_source(s3, 'us-east-1')}/data/"
    out = stage_task_inputs(_task(uri), "azure", "eastus", _options_for(s3=s3, az=az), cache=cache)
    staged = out.mapping[uri]
    assert staged.startswith("https://devstoreaccount1.blob.core.windows.net/sky-stage-eastus-")
    assert out.task.file_mounts["~/in"].source == staged  # file_mounts accept the URL form
    assert _read_prefix(staged, az.options()) == {k.removeprefix("data/"): v for k, v in FILES.items()}


# --------------------------------------------------------------------------- end to end


def _relabel(core: SkyCore, name: str, task: Task, region: str) -> None:
    """Launch a local cluster and record it as an aws cluster in `region` (runs on this machine)."""
    core.launch(task, name, Owner("staging", "run-1", name))
    core.store.update_cluster(name, cloud="aws", region=region)


def _run(core: SkyCore, task: Task, name: str, store_options: Any) -> str:
    job_id = core.submit(task, name, Owner("staging", "run-1", name), store_options=store_options)
    deadline = time.monotonic() + 60
    status = core.job_status(name, job_id)
    while (status is None or not status.is_terminal) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = core.job_status(name, job_id)
    assert status is JobStatus.SUCCEEDED, core.log_tail(name, job_id)
    return "\n".join(core.log_tail(name, job_id, 50))


def test_submit_stages_mounts_and_outputs_handed_downstream(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream in aws/us-east-1 writes an output to its region's staging bucket; downstream in
    aws/eu-west-1 mounts that URI: it is staged again, and the node sees the same bytes."""
    local = LocalCloud(str(tmp_path / "local"))
    core = SkyCore(StateStore(f"sqlite:///{tmp_path / 'state.db'}"), {"local": local, "aws": local})
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    opts = _options_for(s3=s3)
    up, down = "up-use1", "down-euw1"
    write = 'mkdir -p "$SKY_OUTPUT_DIR/features" && printf "f1,f2\\n" > "$SKY_OUTPUT_DIR/features/part-0.csv"'
    producer = Task(name="produce", run=write, outputs={"features": 0.001}, resources={"infra": "local"})
    _relabel(core, up, producer, "us-east-1")
    _run(core, producer, up, opts)
    account = staging_account("s3", s3.options())
    out_root = staging_uri("aws", staging_bucket_name("aws", "us-east-1", account), "outputs/staging/run-1/")
    store = store_for_uri(out_root, **s3.options())
    store.create_bucket("us-east-1")
    store.close()
    outputs = core.collect_outputs(up, producer, lambda name: (out_root + name, s3.options()))
    features = outputs["features"]

    src = _s3_source(s3, "us-east-1")
    consumer = Task(
        name="consume",
        run='cat ~/in/a.txt | head -1; cat ~/features/part-0.csv; echo "inputs=$SKY_INPUTS"',
        file_mounts={"~/in": f"s3://{src}/data", "~/features": features},
        resources={"infra": "local"},
    )
    _relabel(core, down, consumer, "eu-west-1")
    log = _run(core, consumer, down, opts)
    assert "alpha" in log and "f1,f2" in log
    inputs = json.loads(log.split("inputs=", 1)[1].splitlines()[0])
    assert set(inputs) == {f"s3://{src}/data", features}
    assert all(v.startswith("s3://sky-stage-eu-west-1-") for v in inputs.values())
    node = Path(local.runners(local.find(down))[0].home)
    assert (node / "features" / "part-0.csv").read_bytes() == b"f1,f2\n"
    assert (node / "in" / "sub" / "b.bin").read_bytes() == FILES["data/sub/b.bin"]
    jobs_before = len(core.store.list_jobs(cluster_name=down))
    pricey = Task(name="pricey", run="true", inputs={f"s3://{_s3_source(s3, 'us-east-1')}/data/": 1.0})
    with pytest.raises(StagingCostError, match="max_staging_cost_usd"):
        core.submit(pricey, down, store_options=opts, max_staging_cost_usd=0.0)
    assert len(core.store.list_jobs(cluster_name=down)) == jobs_before  # refused before any job
    core.down(up)
    core.down(down)


def test_operator_carries_the_cost_ceiling_to_the_task() -> None:
    from airflow_provider_sky.operators.sky import SkyTaskOperator
    from airflow_provider_sky.spec import SpecError

    op = SkyTaskOperator(task_id="t", run="true", max_staging_cost_usd=2.5)
    assert input_staging.cost_limit(op._rendered_task()) == 2.5
    assert input_staging.cost_limit(op._rendered_task(), 0.5) == 0.5  # submit's argument wins
    with pytest.raises(SpecError, match=r"^max_staging_cost_usd: must be a number"):
        SkyTaskOperator(task_id="u", run="true", max_staging_cost_usd=-1)


def test_gcp_cluster_stages_an_s3_input_into_a_regional_gcs_bucket(s3: Any, cache: StateStagingCache) -> None:
    gcs = get_emulator("gcs")
    uri = f"s3://{_s3_source(s3, 'us-east-1')}/data/"
    out = stage_task_inputs(_task(uri), "gcp", "europe-west4", _options_for(s3=s3, gs=gcs), cache=cache)
    staged = out.mapping[uri]
    bucket = staging_bucket_name("gcp", "europe-west4", "test-project")
    assert staged.startswith(f"gs://{bucket}/s3/")
    store = store_for_uri(f"gs://{bucket}/", **gcs.options())
    try:  # (fake-gcs-server ignores a new bucket's location, so only its existence is checked)
        assert store.bucket_exists()
    finally:
        store.close()
    assert _read_prefix(staged, gcs.options()) == {k.removeprefix("data/"): v for k, v in FILES.items()}
    assert [e.dest_uri for e in cache.entries()] == [str(parse_uri(staged))]
