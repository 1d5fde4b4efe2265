"""Bucket `file_mounts` (COPY): objects from S3 (moto server) land on every node of a local cluster."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import boto3
import pytest

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator
from tests.emulators import set_s3_connection
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401  (fixture)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> str:
    opts = set_s3_connection(monkeypatch, "S3_MOUNTS")
    client = boto3.client("s3", **opts)
    bucket = "mount-src"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="data/a.txt", Body=b"alpha\n")
    client.put_object(Bucket=bucket, Key="data/sub/b.txt", Body=b"beta\n")
    return bucket


def test_bucket_mount_is_copied_onto_every_node(s3_bucket: str, sky_env, tmp_path: Path) -> None:  # noqa: F811
    op = SkyTaskOperator(
        task_id="reads",
        run="cat /data/in/a.txt 2>/dev/null || cat ~/data/in/a.txt; cat ~/data/in/sub/b.txt",
        file_mounts={"/data/in": f"s3://{s3_bucket}/data"},
        num_nodes=2,
        storage_conn_ids={"s3": "s3_mounts"},
        poll_interval=0.1,
    )
    result = op.execute(_context("reads", TaskStateStore()))
    assert result["exit_code"] == 0
    log = [line.split(") ", 1)[-1] for line in SkyHook().core.log_tail(result["cluster"], result["job_id"], 20)]
    assert log.count("alpha") == 2 and log.count("beta") == 2  # head and worker both have the files


def test_mount_mode_and_missing_prefix_fail_clearly(
    s3_bucket: str,
    sky_env,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without rclone on the node MOUNT falls back to COPY; SKY_MOUNT_FALLBACK=error makes it fail instead
    # (tests/test_bucket_mount_mode.py covers mounting and the fallback).
    monkeypatch.setenv("SKY_MOUNT_FALLBACK", "error")
    no_rclone = [p for p in os.environ["PATH"].split(os.pathsep) if not shutil.which("rclone", path=p)]
    monkeypatch.setenv("PATH", os.pathsep.join(no_rclone))
    monkeypatch.setenv("SKY_PUSH_RCLONE", "0")  # no rclone pushed to the node either: test the fallback
    mount = SkyTaskOperator(
        task_id="m",
        run="true",
        file_mounts={"/data": {"source": f"s3://{s3_bucket}/data", "mode": "MOUNT"}},
        storage_conn_ids={"s3": "s3_mounts"},
    )
    with pytest.raises(Exception, match=r"file_mounts./data: mode MOUNT of .* cannot be mounted"):
        mount.execute(_context("m", TaskStateStore()))
    empty = SkyTaskOperator(
        task_id="e", run="true", file_mounts={"/d": f"s3://{s3_bucket}/nothing-here"}, storage_conn_ids={"s3": "s3_mounts"}
    )
    with pytest.raises(Exception, match="holds no objects"):
        empty.execute(_context("e", TaskStateStore()))
