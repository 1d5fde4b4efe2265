"""SkyTransferOperator and SkyStorageHook against the emulators, with `AIRFLOW_CONN_*` connections."""

from __future__ import annotations

import importlib
import json
import logging
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_sky.get_provider_info import get_provider_info
from airflow_provider_sky.hooks.storage import (
    SkyStorageHook,
    azure_account_name,
    describe_options,
    store_options,
)
from airflow_provider_sky.state.store import StateStore
from airflow_provider_sky.storage import store_for_uri
from airflow_provider_sky.storage.staging import staging_bucket_name
from airflow_provider_sky.transfers.sky_storage import SkyTransferOperator
from tests.emulators import AZURITE_KEY, get_emulator, unique_name

MiB = 1 << 20
S3_SECRET = "moto-s3cr3t-Value-7731"  # moto accepts any key: a distinctive one to look for in logs
FILES = {f"part-{i:02d}.bin": random.Random(i).randbytes(1000 + 777 * i) for i in range(10)}
FILES["big/blob.bin"] = random.Random(99).randbytes(7 * MiB)  # 2 parts of 5 MiB
ENGINE = {"part_size": 5 * MiB, "multipart_threshold": 6 * MiB, "workers": 8, "progress_interval": 0.2}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Emulators, their connections as AIRFLOW_CONN_* JSON, and a throwaway state DB."""
    s3, gcs, az = get_emulator("s3"), get_emulator("gcs"), get_emulator("azure")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SKY_STATE_DB_URL", url)
    monkeypatch.delenv("AIRFLOW_CONN_SKY_DEFAULT", raising=False)
    conns = {
        "S3_EMU": {
            "conn_type": "aws",
            "login": "AKIDEMULATOR",
            "password": S3_SECRET,
            "extra": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
        },
        "GCS_EMU": {
            "conn_type": "google_cloud_platform",
            "extra": {"project": "test-project", "endpoint": gcs.endpoint},
        },
        "AZ_EMU": {
            "conn_type": "wasb",
            "extra": {"connection_string": az.connection_string, "region": "eastus"},
        },
    }
    for name, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))
    return SimpleNamespace(s3=s3, gcs=gcs, az=az, state=StateStore(url))


def _ctx(task_id: str = "copy", run_id: str = "scheduled__1") -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id="staging_dag", run_id=run_id, task_id=task_id, map_index=-1)}


def _seed(emu: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> Any:
    store = emu.store(bucket)
    for rel, data in files.items():
        store.write(prefix + rel, data)
    return store


def _contents(store: Any, prefix: str) -> dict[str, bytes]:
    return {o.key[len(prefix) :]: store.read(o.key) for o in store.list(prefix)}


def test_s3_to_gcs_copies_verifies_and_a_second_run_skips_everything(
    env: SimpleNamespace, capfd, caplog
) -> None:
    caplog.set_level(logging.INFO)
    src_bucket, dst_bucket = unique_name("src"), unique_name("dst")
    _seed(env.s3, src_bucket, "data/", FILES)
    env.gcs.store(dst_bucket)
    kwargs = {
        "source_uri": "s3://{{ params.bucket }}/data/",
        "dest_uri": f"gs://{dst_bucket}/copy/",
        "source_conn_id": "s3_emu",
        "dest_conn_id": "gcs_emu",
        "use_cache": False,
        **ENGINE,
    }
    op = SkyTransferOperator(task_id="copy", **kwargs)
    op.render_template_fields({"params": {"bucket": src_bucket}})
    assert op.source_uri == f"s3://{src_bucket}/data/"
    result = op.execute(_ctx())

    total = sum(map(len, FILES.values()))
    assert result["files_copied"] == len(FILES) and result["bytes_copied"] == total
    assert result["files_skipped"] == 0 and result["verified"] is True and result["cache_hit"] is False
    assert result["dest_uri"] == f"gs://{dst_bucket}/copy/" and result["dest_cloud"] == "gcp"
    assert result["cost_usd"] == pytest.approx(total / 1e9 * 0.09)  # AWS internet egress, catalog price
    assert result["estimated_cost_usd"] == pytest.approx(result["cost_usd"])
    assert result["seconds"] > 0
    json.dumps(result)  # XCom-serializable
    dst = store_for_uri(f"gs://{dst_bucket}/", **env.gcs.options())
    assert _contents(dst, "copy/") == FILES

    out = capfd.readouterr().out
    assert (
        "Estimate: 11 objects / 7.0 MiB to copy (0 identical / 0 B skipped)" in out
        and "egress $0.0007" in out
    )
    assert "at $0.09/GB (us-east-1 -> us-central1)" in out
    assert "transfer progress: 7.0/7.0 MiB, 11/11 files" in caplog.text  # the engine's progress lines
    assert "transfer done:" in caplog.text and "verified=True" in caplog.text
    assert S3_SECRET not in out + caplog.text and "'aws_secret_access_key': '***'" in out

    op2 = SkyTransferOperator(task_id="copy", **{**kwargs, "source_uri": f"s3://{src_bucket}/data/"})
    again = op2.execute(_ctx(run_id="scheduled__2"))
    assert again["files_copied"] == 0 and again["bytes_copied"] == 0
    assert again["files_skipped"] == len(FILES) and again["bytes_skipped"] == total
    assert again["verified"] is True and again["cost_usd"] == 0


def test_gcs_to_azure_with_the_cache(env: SimpleNamespace, capfd) -> None:
    src_bucket, container = unique_name("src"), unique_name("dst")
    src = _seed(env.gcs, src_bucket, "in/", FILES)
    env.az.store(container)
    kwargs = {
        "source_uri": f"gs://{src_bucket}/in/",
        "dest_uri": env.az.uri(container, "in/"),
        "source_conn_id": "gcs_emu",
        "dest_conn_id": "az_emu",
        **ENGINE,
    }
    first = SkyTransferOperator(task_id="copy", **kwargs).execute(_ctx())
    assert first["files_copied"] == len(FILES) and first["verified"] and not first["cache_hit"]
    assert first["cost_usd"] == pytest.approx(first["bytes_copied"] / 1e9 * 0.12)  # GCP internet egress
    dst = store_for_uri(env.az.uri(container), **env.az.options())
    assert _contents(dst, "in/") == FILES

    second = SkyTransferOperator(task_id="copy", **kwargs).execute(_ctx(run_id="scheduled__2"))
    assert second["cache_hit"] and second["files_copied"] == 0 and second["files_skipped"] == len(FILES)
    assert "not re-copied" in capfd.readouterr().out

    src.write("in/part-03.bin", b"a new version")
    third = SkyTransferOperator(task_id="copy", **kwargs).execute(_ctx(run_id="scheduled__3"))
    assert not third["cache_hit"] and third["files_copied"] == 1 and third["files_skipped"] == len(FILES) - 1
    assert dst.read("in/part-03.bin") == b"a new version"
    assert AZURITE_KEY not in capfd.readouterr().out


def test_max_cost_below_the_estimate_refuses_before_copying(env: SimpleNamespace) -> None:
    src_bucket, dst_bucket = unique_name("src"), unique_name("dst")
    _seed(env.s3, src_bucket, "data/", FILES)
    dst = env.gcs.store(dst_bucket)
    op = SkyTransferOperator(
        task_id="copy",
        source_uri=f"s3://{src_bucket}/data/",
        dest_uri=f"gs://{dst_bucket}/data/",
        source_conn_id="s3_emu",
        dest_conn_id="gcs_emu",
        max_cost_usd=0.0001,
        **ENGINE,
    )
    with pytest.raises(
        AirflowException,
        match=r"refusing to copy .* estimated egress cost \$0\.0007 .* exceeds max_cost_usd=\$0\.0001",
    ):
        op.execute(_ctx())
    assert list(dst.list("")) == []


def _plan(cloud: str, region: str) -> dict[str, Any]:
    place = {"cloud": cloud, "region": region, "zone": None, "instance_type": "m5.large", "accelerators": None,
             "use_spot": False, "hourly_price": 0.1, "cost": 0.1}  # fmt: skip
    other = {**place, "cloud": "gcp", "region": "us-central1"}
    return {"total_cost": 0.2, "total_hours": 1.0, "tasks": {"train": place, "prep": other}, "egress": []}


def test_dest_near_task_stages_into_that_tasks_region_bucket(env: SimpleNamespace, capfd) -> None:
    src_bucket = unique_name("src")
    _seed(env.gcs, src_bucket, "inputs/", FILES)
    env.state.put_plan("staging_dag", "scheduled__7", _plan("aws", "us-west-2"))
    op = SkyTransferOperator(
        task_id="stage_inputs",
        source_uri=f"gs://{src_bucket}/inputs/",
        dest_near_task="train",
        source_conn_id="gcs_emu",
        dest_conn_id="s3_emu",
        lifecycle_days=3,
        **ENGINE,
    )
    result = op.execute(_ctx("stage_inputs", "scheduled__7"))

    bucket = staging_bucket_name("aws", "us-west-2", SkyStorageHook("s3_emu").account_identity("s3"))
    assert bucket.startswith("sky-stage-us-west-2-")
    assert result["dest_uri"] == f"s3://{bucket}/gs/{src_bucket}/inputs/"
    assert result["dest_cloud"] == "aws" and result["dest_region"] == "us-west-2"
    assert result["files_copied"] == len(FILES) and result["verified"]
    staged = store_for_uri(f"s3://{bucket}/", **env.s3.options())
    assert staged.region() == "us-west-2"
    assert staged.client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["Expiration"] == {
        "Days": 3
    }
    assert _contents(staged, f"gs/{src_bucket}/inputs/") == FILES
    assert "created" in capfd.readouterr().out

    # The next scheduled run reuses the bucket and, the input being unchanged, copies nothing.
    env.state.put_plan("staging_dag", "scheduled__8", _plan("aws", "us-west-2"))
    again = op.execute(_ctx("stage_inputs", "scheduled__8"))
    assert again["dest_uri"] == result["dest_uri"] and again["cache_hit"] and again["files_copied"] == 0


def test_dest_near_task_on_the_local_backend_stages_under_airflow_home(
    env: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    src_bucket = unique_name("src")
    _seed(env.s3, src_bucket, "in/", {"a.txt": b"alpha", "b/c.txt": b"gamma"})
    env.state.put_plan("staging_dag", "local__1", _plan("local", "local"))
    op = SkyTransferOperator(
        task_id="stage", source_uri=f"s3://{src_bucket}/in/", dest_near_task="train", source_conn_id="s3_emu"
    )
    result = op.execute(_ctx("stage", "local__1"))
    staged = tmp_path / "home" / "sky" / "staging" / "local" / "s3" / src_bucket / "in"
    assert result["dest_uri"] == f"file://{staged}/" and result["dest_cloud"] == "local"
    assert (staged / "b" / "c.txt").read_bytes() == b"gamma"
    assert result["cost_usd"] == pytest.approx(10 / 1e9 * 0.09)  # AWS egress to this machine


def test_dest_near_task_errors_are_clear(env: SimpleNamespace) -> None:
    kwargs = {"source_uri": "gs://nowhere/in/", "source_conn_id": "gcs_emu", "dest_conn_id": "s3_emu"}
    op = SkyTransferOperator(task_id="stage", dest_near_task="train", **kwargs)
    with pytest.raises(AirflowException, match="no optimizer plan is stored for DAG 'staging_dag' run 'r1'"):
        op.execute(_ctx("stage", "r1"))
    env.state.put_plan("staging_dag", "r2", _plan("aws", "us-east-1"))
    op = SkyTransferOperator(task_id="stage", dest_near_task="evaluate", **kwargs)
    with pytest.raises(AirflowException, match=r"'evaluate' is not in the stored plan .*\['prep', 'train'\]"):
        op.execute(_ctx("stage", "r2"))
    op = SkyTransferOperator(task_id="stage", dest_near_task="prep", **kwargs)  # gcp task, aws connection
    with pytest.raises(AirflowException, match="dest_conn_id='s3_emu' is not a connection for gs://"):
        op.execute(_ctx("stage", "r2"))


def test_parse_time_validation() -> None:
    with pytest.raises(ValueError, match="exactly one of dest_uri= or dest_near_task="):
        SkyTransferOperator(task_id="t", source_uri="s3://a/", dest_uri="gs://b/", dest_near_task="x")
    with pytest.raises(ValueError, match="exactly one"):
        SkyTransferOperator(task_id="t", source_uri="s3://a/")
    with pytest.raises(ValueError, match="dest_uri: unsupported storage URI"):
        SkyTransferOperator(task_id="t", source_uri="s3://a/", dest_uri="ftp://b/")
    with pytest.raises(ValueError, match="max_cost_usd"):
        SkyTransferOperator(task_id="t", source_uri="s3://a/", dest_uri="gs://b/", max_cost_usd=-1)
    SkyTransferOperator(
        task_id="t", source_uri="s3://{{ var.value.b }}/", dest_uri="gs://b/"
    )  # templated: later


# --------------------------------------------------------------------------- hook (no emulators)


def test_aws_connection_fields_map_to_s3_options() -> None:
    fields = {
        "conn_id": "a",
        "conn_type": "aws",
        "login": "AKID",
        "password": "SECRET",
        "host": None,
        "extra": {
            "region_name": "eu-west-1",
            "aws_session_token": "TOKEN",
            "endpoint_url": "http://127.0.0.1:9",
        },
    }
    opts = store_options("s3", fields)
    assert opts == {
        "aws_access_key_id": "AKID",
        "aws_secret_access_key": "SECRET",
        "aws_session_token": "TOKEN",
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:9",
    }
    shown = describe_options(opts)
    assert "SECRET" not in str(shown) and "TOKEN" not in str(shown) and shown["aws_access_key_id"] == "AKID"
    legacy = {
        "conn_id": "b",
        "conn_type": "aws",
        "extra": json.dumps({"extra__aws__region_name": "us-east-2"}),
    }
    assert store_options("s3", legacy) == {"region_name": "us-east-2"}
    assert store_options("s3", None) == {}  # no connection: boto3's default chain
    with pytest.raises(ValueError, match="has type 'aws', but gs:// URIs need one of google_cloud_platform"):
        store_options("gs", fields)


def test_wasb_connection_variants() -> None:
    base = {"conn_id": "w", "conn_type": "wasb", "login": "acct", "password": None, "host": None}
    conn_str = (
        "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=K==;EndpointSuffix=core.windows.net"
    )
    opts = store_options("az", {**base, "extra": {"connection_string": conn_str, "region": "WestEurope"}})
    assert opts == {"connection_string": conn_str, "region": "westeurope"}
    assert azure_account_name(opts) == "acct1"
    opts = store_options(
        "az", {**base, "extra": {"account_url": "https://acct2.blob.core.windows.net", "sas_token": "sv=x"}}
    )
    assert opts == {"account_url": "https://acct2.blob.core.windows.net", "sas_token": "sv=x"}
    assert azure_account_name(opts) == "acct2"
    opts = store_options("az", {**base, "password": "KEY", "extra": {}})
    assert opts == {"account_key": "KEY"} and azure_account_name(opts, "acct") == "acct"
    emu = "DefaultEndpointsProtocol=http;AccountKey=K;BlobEndpoint=http://127.0.0.1:10000/devacct;"
    assert azure_account_name({"connection_string": emu}) == "devacct"
    sp = store_options(
        "az",
        {
            **base,
            "login": "app-id",
            "password": "pw",
            "extra": {"tenant_id": "t", "account_url": "https://a.blob.core.windows.net"},
        },
    )
    assert type(sp["credential"]).__name__ == "ClientSecretCredential"
    assert describe_options(sp)["credential"] == "ClientSecretCredential"


def test_gcp_keyfile_dict_builds_service_account_credentials(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    keyfile = {
        "type": "service_account",
        "project_id": "key-project",
        "private_key_id": "abc",
        "private_key": pem,
        "client_email": "sa@key-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    fields = {
        "conn_id": "g",
        "conn_type": "google_cloud_platform",
        "extra": {"keyfile_dict": json.dumps(keyfile)},
    }
    opts = store_options("gs", fields)
    assert type(opts["credentials"]).__name__ == "Credentials" and opts["project"] == "key-project"
    assert "anonymous" not in opts
    assert pem not in str(describe_options(opts))
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(keyfile))
    from_file = store_options(
        "gs", {"conn_type": "google_cloud_platform", "extra": {"key_path": str(key_path), "project": "p2"}}
    )
    assert (
        from_file["credentials"].service_account_email == keyfile["client_email"]
        and from_file["project"] == "p2"
    )
    with pytest.raises(ValueError, match="unsupported GCP key file type 'external_account'"):
        store_options("gs", {"conn_type": "gcp", "extra": {"keyfile_dict": {"type": "external_account"}}})
    emu = store_options(
        "gs",
        {"conn_id": "e", "conn_type": "gcp", "extra": {"endpoint": "http://127.0.0.1:1", "project": "p"}},
    )
    assert emu == {"endpoint": "http://127.0.0.1:1", "anonymous": True, "project": "p"}


def test_transfer_is_registered_in_provider_info() -> None:
    info = get_provider_info()
    (entry,) = [t for t in info["transfers"] if t["python-module"].endswith("sky_storage")]
    module = importlib.import_module(entry["python-module"])
    assert module.SkyTransferOperator is SkyTransferOperator
    assert any("airflow_provider_sky.hooks.storage" in h["python-modules"] for h in info["hooks"])
