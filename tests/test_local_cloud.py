"""LocalCloud: directory clusters, honest refusals, and teardown that leaves nothing running."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest

from airflow_provider_sky.clouds import local as local_mod
from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import ConfigError, QuotaError, Scope
from airflow_provider_sky.clouds.local import (
    LocalCloud,
    kill_processes_under,
    local_instance_type,
    machine_cpus,
)
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.execution.jobs import JobStatus
from airflow_provider_sky.execution.runner import SubprocessRunner


@pytest.fixture
def cloud(tmp_path):
    c = LocalCloud(tmp_path / "local", cancel_grace=1)
    yield c
    kill_processes_under(str(tmp_path), grace=1)


def resources(**kw):
    base = {"cloud": None, "region": None, "zone": None, "cpus": None, "memory": None}
    return SimpleNamespace(**{**base, "accelerators": None, "instance_type": None, "use_spot": False, **kw})


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_launch_layout_and_handle(cloud):
    assert isinstance(cloud, Cloud) and cloud.name == "local"
    assert cloud.regions() == ["local"] and cloud.zones("local") == ["local"]
    handle = cloud.launch("c1", 2, resources(), labels={"dag_id": "d"})
    assert handle.cloud == "local" and handle.region == "local" and handle.zone == "local"
    assert handle.instance_type == f"local-{machine_cpus()}cpu" == local_instance_type()
    assert handle.node_ips == ("127.0.0.1", "127.0.0.1")
    assert handle.node_ids == ("node-0", "node-1")
    for i in range(2):
        assert (cloud.base_dir / "clusters" / "c1" / f"node-{i}" / ".sky").is_dir()
    # JSON round trip, as through the state store's JSON column.
    text = handle.to_json()
    assert ClusterHandle.from_json(text) == handle
    assert ClusterHandle.from_json(json.loads(text)).extra == handle.extra
    assert ClusterHandle.from_json({**json.loads(text), "future_field": 1}) == handle
    # Idempotent, and find() sees it.
    assert cloud.launch("c1", 2, resources()) == handle
    assert cloud.find("c1") == handle
    assert cloud.find("nope") is None
    runners = cloud.runners(handle)
    assert [type(r) for r in runners] == [SubprocessRunner, SubprocessRunner]
    assert runners[0].home.endswith("/c1/node-0")


def test_launch_refuses_what_this_machine_cannot_do(cloud):
    with pytest.raises(ConfigError) as err:
        cloud.launch("gpu", 1, resources(accelerators={"A100": 8}))
    assert "A100:8" in str(err.value) and "ssh pool" in str(err.value)
    assert err.value.scope is Scope.CLOUD and err.value.fix

    too_many = SimpleNamespace(value=float(machine_cpus() * 32), at_least=True)
    with pytest.raises(ConfigError, match=rf"cpus: {machine_cpus() * 32}\+ requested, this machine has"):
        cloud.launch("big", 1, resources(cpus=too_many))
    with pytest.raises(ConfigError, match="memory: 100000"):
        cloud.launch("big", 1, resources(memory="100000+"))
    for kw in (
        {"region": "us-east-1"},
        {"cloud": "aws"},
        {"use_spot": True},
        {"instance_type": "p3.2xlarge"},
    ):
        with pytest.raises(ConfigError):
            cloud.launch("bad", 1, resources(**kw))
    with pytest.raises(ConfigError):
        cloud.launch("Bad_Name", 1, None)
    with pytest.raises(ConfigError):
        cloud.launch("zero", 0, None)
    assert not (cloud.base_dir / "clusters" / "gpu").exists()
    # What the machine does have is fine.
    cloud.launch("ok", 1, resources(cpus="1+", memory=0.5, region="local"))


def test_launch_existing_cluster_with_other_size_is_an_error(cloud):
    cloud.launch("c2", 1, None)
    with pytest.raises(ConfigError, match="exists with 1 nodes"):
        cloud.launch("c2", 2, None)


def test_terminate_leaves_no_processes(cloud, tmp_path):
    handle = cloud.launch("c3", 2, None)
    runners = cloud.runners(handle)
    pids = tmp_path / "pids"
    pids.mkdir()
    script = (
        f"sleep 1000 & echo $! > {pids}/child-$SKYPILOT_NODE_RANK; "
        f"setsid sleep 1001 & echo $! > {pids}/escaped-$SKYPILOT_NODE_RANK; wait"
    )
    jobs.submit_multinode_job(runners, 1, script, cluster_name="c3")
    wait_for(lambda: len(list(pids.iterdir())) == 4 and all(p.read_text().strip() for p in pids.iterdir()))
    driver_pid = jobs.job_status(runners[0], 1).pid
    all_pids = [driver_pid] + [int(p.read_text()) for p in pids.iterdir()]
    assert all(pid_alive(p) for p in all_pids)

    cloud.terminate(handle)
    wait_for(lambda: not any(pid_alive(p) for p in all_pids), timeout=5)
    assert not (cloud.base_dir / "clusters" / "c3").exists()
    assert cloud.find("c3") is None
    cloud.terminate(handle)  # idempotent


def test_stop_kills_jobs_keeps_files_and_start_resumes(cloud, tmp_path):
    handle = cloud.launch("c4", 1, None)
    [runner] = cloud.runners(handle)
    gc = tmp_path / "gc"
    jobs.submit_job(runner, 1, f"sleep 1000 & echo $! > {gc}; wait")
    wait_for(lambda: gc.exists() and gc.read_text().strip())
    cloud.stop(handle)
    assert cloud.status("c4") == "STOPPED"
    wait_for(lambda: not pid_alive(int(gc.read_text())), timeout=5)
    assert jobs.job_status(runner, 1).status is JobStatus.CANCELLED
    assert cloud.find("c4") == handle
    assert cloud.start(handle) == handle and cloud.status("c4") == "UP"
    jobs.submit_job(runner, 2, "echo back")
    assert jobs.wait_job(runner, 2, timeout=10).status is JobStatus.SUCCEEDED
    cloud.stop(handle)
    assert cloud.launch("c4", 1, None) == handle and cloud.status("c4") == "UP"  # launch restarts
    cloud.terminate(handle)


def test_default_base_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SKY_LOCAL_DIR", str(tmp_path / "x"))
    assert LocalCloud().base_dir == tmp_path / "x"
    monkeypatch.delenv("SKY_LOCAL_DIR")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "ah"))
    assert LocalCloud().base_dir == tmp_path / "ah" / "sky" / "local"
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert local_mod.default_base_dir() == tmp_path / "home" / ".sky-airflow" / "local"


def test_classify_error(cloud):
    err = cloud.classify_error(OSError(28, "No space left on device"))
    assert isinstance(err, QuotaError) and err.scope is Scope.REGION and err.cloud == "local"
    err = cloud.classify_error(PermissionError(13, "denied"))
    assert isinstance(err, ConfigError) and "SKY_LOCAL_DIR" in str(err)
    same = ConfigError("x", cloud="local")
    assert cloud.classify_error(same) is same
    assert cloud.classify_error(RuntimeError("??")).scope is Scope.REGION


def test_runners_from_a_stored_handle_work(cloud):
    handle = cloud.launch("c5", 1, None)
    restored = ClusterHandle.from_json(handle.to_json())
    [runner] = LocalCloud(os.devnull).runners(restored)  # paths come from the handle itself
    assert runner.run("pwd").stdout.strip() == runner.home
    assert runner.home == handle.extra["node_dirs"][0]
