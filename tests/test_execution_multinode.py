"""Multi-node jobs on local node directories: SkyPilot env vars, combined log, exit codes."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from airflow_provider_sky.clouds.local import kill_processes_under
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.execution.jobs import JobStatus
from airflow_provider_sky.execution.logs import LogTailer
from airflow_provider_sky.execution.runner import SubprocessRunner

ENV_DUMP = (
    f"{sys.executable} -c 'import json, os; "
    'print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("SKYPILOT_")} | {"cwd": os.getcwd()}))\''
)


@pytest.fixture
def runners(tmp_path):
    nodes = [SubprocessRunner(tmp_path / f"node-{i}", node_ip=f"10.0.0.{i + 1}") for i in range(3)]
    yield nodes
    kill_processes_under(str(tmp_path), grace=1)


def full_log(runner, job_id) -> str:
    return LogTailer(jobs.log_reader(runner, job_id)).flush()[0]


def test_three_nodes_env_vars_and_prefixed_log(runners):
    info = {"cluster_name": "clus", "cloud": "local", "num_nodes": 3}
    handle = jobs.submit_multinode_job(
        runners,
        7,
        ENV_DUMP,
        {"USER_VAR": "u"},
        "wd",
        cluster_name="clus",
        num_gpus_per_node=0,
        cluster_info=info,
    )
    assert handle.num_nodes == 3 and handle.node_ip == "10.0.0.1"
    assert re.fullmatch(r"sky-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}_clus_7", handle.task_id)
    state = jobs.wait_job(runners[0], 7, timeout=15)
    assert state.status is JobStatus.SUCCEEDED and state.exit_code == 0

    lines = full_log(runners[0], 7).splitlines()
    assert len(lines) == 3
    by_rank = {}
    for line in lines:
        m = re.match(r"^\(worker(\d), ip=(10\.0\.0\.\d)\) (.*)$", line)
        if m:
            rank, ip, payload = int(m[1]), m[2], m[3]
            assert ip == f"10.0.0.{rank + 1}"
        else:
            rank, payload = 0, line  # the head node's lines carry no prefix
        by_rank[rank] = json.loads(payload)
    assert sorted(by_rank) == [0, 1, 2]
    for rank, env in by_rank.items():
        assert env["SKYPILOT_NODE_RANK"] == str(rank)
        assert env["SKYPILOT_NODE_IPS"] == "10.0.0.1\n10.0.0.2\n10.0.0.3"
        assert env["SKYPILOT_NUM_NODES"] == "3"
        assert env["SKYPILOT_NUM_GPUS_PER_NODE"] == "0"
        assert env["SKYPILOT_TASK_ID"] == handle.task_id
        assert json.loads(env["SKYPILOT_CLUSTER_INFO"]) == info
        assert env["cwd"] == f"{runners[rank].home}/wd"  # each node runs in its own directory


def test_first_failure_is_the_exit_code_and_stops_the_others(runners):
    script = 'if [ "$SKYPILOT_NODE_RANK" = 1 ]; then echo dying; exit 5; fi; sleep 30'
    start = time.monotonic()
    jobs.submit_multinode_job(runners, 8, script, grace_seconds=2)
    state = jobs.wait_job(runners[0], 8, timeout=15)
    assert state.status is JobStatus.FAILED and state.exit_code == 5
    assert time.monotonic() - start < 10
    log = full_log(runners[0], 8)
    assert "(worker1, ip=10.0.0.2) dying\n" in log
    assert "node 1 exited with code 5" in log


def test_without_fail_fast_all_nodes_finish(runners, tmp_path):
    script = f"case $SKYPILOT_NODE_RANK in 2) exit 7;; 1) sleep 0.6; exit 3;; *) sleep 0.6; echo done > {tmp_path}/head;; esac"
    jobs.submit_multinode_job(runners, 9, script, fail_fast=False)
    state = jobs.wait_job(runners[0], 9, timeout=15)
    assert state.status is JobStatus.FAILED and state.exit_code == 7
    assert (tmp_path / "head").read_text() == "done\n"


def test_setup_runs_on_every_node_once(runners, tmp_path):
    setup = f"echo setup on $SKYPILOT_SETUP_NODE_RANK; echo $SKYPILOT_NODE_RANK >> {tmp_path}/setup-ranks"
    jobs.submit_multinode_job(runners, 1, "echo run $SKYPILOT_NODE_RANK", setup=setup)
    assert jobs.wait_job(runners[0], 1, timeout=15).status is JobStatus.SUCCEEDED
    log = full_log(runners[0], 1)
    assert "setup on 0\n" in log and "(worker2, ip=10.0.0.3) setup on 2\n" in log
    assert log.index("(worker1, ip=10.0.0.2) setup on 1") < log.index("run 0")  # setup before run
    jobs.submit_multinode_job(runners, 2, "echo again", setup=setup)
    assert jobs.wait_job(runners[0], 2, timeout=15).status is JobStatus.SUCCEEDED
    assert sorted((tmp_path / "setup-ranks").read_text().split()) == ["0", "1", "2"]


def test_multinode_cancel_stops_every_node(runners, tmp_path):
    script = f"sleep 1000 & echo $! > {tmp_path}/gc-$SKYPILOT_NODE_RANK; wait"
    jobs.submit_multinode_job(runners, 3, script)
    deadline = time.monotonic() + 10
    while len(list(tmp_path.glob("gc-*"))) < 3 or any(not p.read_text() for p in tmp_path.glob("gc-*")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert jobs.cancel_job(runners[0], 3, grace=2).status is JobStatus.CANCELLED
    time.sleep(0.2)
    assert not any(pid_alive(int(p.read_text())) for p in tmp_path.glob("gc-*"))
