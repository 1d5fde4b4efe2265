"""Declared outputs are uploaded after the job and handed on by URI; downstream tasks mount them."""

from __future__ import annotations

import boto3
import pytest

from airflow_provider_sky.operators.sky import SkyTaskOperator
from tests.test_operator_bucket_mounts import s3_bucket  # noqa: F401  (fixture: emulator + connection)
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401  (fixture)

WRITE = 'mkdir -p "$SKY_OUTPUT_DIR/features" && echo "f1,f2" > "$SKY_OUTPUT_DIR/features/part-0.csv"'


def test_local_output_is_staged_and_mounted_downstream(sky_env) -> None:  # noqa: F811
    producer = SkyTaskOperator(task_id="produce", run=WRITE, outputs={"features": 0.001}, poll_interval=0.1)
    produced = producer.execute(_context("produce", TaskStateStore()))
    staged = produced["outputs"]["features"]
    assert staged.endswith("/features") and "://" not in staged
    consumer = SkyTaskOperator(
        task_id="consume", run="cat ~/data/features/part-0.csv", file_mounts={"/data/features": staged}, poll_interval=0.1
    )
    consumed = consumer.execute(_context("consume", TaskStateStore()))
    assert "f1,f2" in sky_env.log_tail(consumed["cluster"], consumed["job_id"])


def test_output_named_by_a_bucket_uri_is_uploaded_there(sky_env, s3_bucket: str) -> None:  # noqa: F811
    from tests.emulators import get_emulator

    uri = f"s3://{s3_bucket}/runs/1/features"
    producer = SkyTaskOperator(
        task_id="produce", run=WRITE, outputs={uri: 0.001}, storage_conn_ids={"s3": "s3_mounts"}, poll_interval=0.1
    )
    result = producer.execute(_context("produce", TaskStateStore()))
    assert result["outputs"][uri] == uri + "/"
    body = boto3.client("s3", **get_emulator("s3").options()).get_object(
        Bucket=s3_bucket, Key="runs/1/features/part-0.csv"
    )["Body"].read()
    assert body == b"f1,f2\n"


def test_missing_output_fails_with_the_fix(sky_env) -> None:  # noqa: F811
    op = SkyTaskOperator(task_id="lazy", run="true", outputs={"model": 1}, poll_interval=0.1)
    with pytest.raises(Exception, match=r"outputs.model: the job wrote nothing|nothing to collect"):
        op.execute(_context("lazy", TaskStateStore()))
