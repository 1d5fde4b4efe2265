"""Detached jobs over SSH: multi-node env, setup once, cancel, submitter death, connection drops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.jobs import JobStatus
from airflow_provider_sky.execution.logs import LogTailer
from airflow_provider_sky.execution.ssh_runner import install_peer_access
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)

ENV_DUMP = (
    "python3 -c 'import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
    'if k.startswith(("SKYPILOT_", "USER_")) or k == "CUDA_VISIBLE_DEVICES"} | {"cwd": os.getcwd(), "user": os.environ["USER"]}))\''
)


def _cluster(sshd_hosts, n: int, name: str):  # noqa: F811
    runners = [sshd_hosts.runner(i, home=f"c-{name}") for i in range(n)]
    install_peer_access(runners)
    return runners


def test_three_node_job_env_vars_setup_once_and_prefixed_log(sshd_hosts):  # noqa: F811
    runners = _cluster(sshd_hosts, 3, "env")
    runners[2].env = {"CUDA_VISIBLE_DEVICES": "1"}
    setup = "echo setup-ran-$SKYPILOT_SETUP_NODE_RANK >> ~/setup-count"
    handle = jobs.submit_multinode_job(
        runners,
        1,
        ENV_DUMP,
        {"USER_SECRET": "s3cr3t"},
        "wd",
        setup=setup,
        cluster_name="env",
        num_gpus_per_node=1,
    )
    assert handle.num_nodes == 3
    state = jobs.wait_job(runners[0], 1, timeout=30)
    log = LogTailer(jobs.log_reader(runners[0], 1)).flush()[0]
    assert state.status is JobStatus.SUCCEEDED, log
    seen = {}
    for line in log.splitlines():
        m = re.match(r"^(?:\(worker(\d), ip=127\.0\.0\.1\) )?(\{.*\})$", line)
        assert m, line
        data = json.loads(m[2])
        seen[int(data["SKYPILOT_NODE_RANK"])] = data
        assert int(m[1] or 0) == int(data["SKYPILOT_NODE_RANK"])
    assert sorted(seen) == [0, 1, 2]
    for rank, data in seen.items():
        assert data["user"] == sshd_hosts.hosts[rank].user  # really ran on that "host"
        assert data["cwd"] == f"{sshd_hosts.hosts[rank].home}/c-env/wd"
        assert data["SKYPILOT_NODE_IPS"] == "127.0.0.1\n127.0.0.1\n127.0.0.1"
        assert data["SKYPILOT_NUM_NODES"] == "3" and data["SKYPILOT_NUM_GPUS_PER_NODE"] == "1"
        assert data["SKYPILOT_TASK_ID"] == handle.task_id and data["USER_SECRET"] == "s3cr3t"
    assert seen[2]["CUDA_VISIBLE_DEVICES"] == "1" and "CUDA_VISIBLE_DEVICES" not in seen[1]
    # secrets never reach a command line or a worker's disk
    assert "s3cr3t" not in runners[1].run("cat ~/c-env/.sky/jobs/1/* 2>/dev/null || true").stdout
    # setup ran once per node, and is skipped by the next job
    jobs.submit_multinode_job(runners, 2, "true", setup=setup, cluster_name="env")
    assert jobs.wait_job(runners[0], 2, timeout=30).status is JobStatus.SUCCEEDED
    for i, r in enumerate(runners):
        assert r.read_bytes(f"{sshd_hosts.hosts[i].home}/setup-count").decode().split() == [f"setup-ran-{i}"]


def test_failing_worker_fails_job_and_cancel_kills_remote_processes(sshd_hosts):  # noqa: F811
    runners = _cluster(sshd_hosts, 2, "fail")
    jobs.submit_multinode_job(
        runners, 1, 'if [ "$SKYPILOT_NODE_RANK" = 1 ]; then exit 7; fi; sleep 30', cluster_name="f"
    )
    state = jobs.wait_job(runners[0], 1, timeout=30)
    assert (state.status, state.exit_code) == (JobStatus.FAILED, 7)

    jobs.submit_multinode_job(runners, 2, "echo up-$SKYPILOT_NODE_RANK; exec sleep 1234", cluster_name="f")
    tail = LogTailer(jobs.log_reader(runners[0], 2))
    deadline = time.monotonic() + 20
    text = ""
    while text.count("up-") < 2 and time.monotonic() < deadline:
        text += tail.read_new()[0]
        time.sleep(0.1)
    assert "up-0" in text and "up-1" in text
    assert runners[1].run("pgrep -u $USER -f 'sleep 1234'").ok
    state = jobs.cancel_job(runners[0], 2, grace=2)
    assert state.status is JobStatus.CANCELLED
    deadline = time.monotonic() + 10
    while runners[1].run("pgrep -u $USER -f 'sleep 1234'").ok and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not runners[1].run("pgrep -u $USER -f 'sleep 1234'").ok, "worker process survived cancel"
    assert not runners[0].run("pgrep -u $USER -f 'sleep 1234'").ok


SUBMITTER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from airflow_provider_sky.execution import jobs
    from airflow_provider_sky.execution.ssh_runner import SshRunner, install_peer_access
    runners = [SshRunner("127.0.0.1", u, port=p, key_file={key!r}, known_hosts={kh!r}, home="c-kill")
               for u, p in {hosts!r}]
    install_peer_access(runners)
    jobs.submit_multinode_job(runners, 1, "for i in $(seq 1 15); do echo line-$i; sleep 0.1; done")
    print("submitted", flush=True)
    import time
    time.sleep(60)
    """
)


def test_job_survives_killed_submitter_with_complete_log(sshd_hosts):  # noqa: F811
    hosts = [(h.user, h.port) for h in sshd_hosts.hosts[:2]]
    code = SUBMITTER.format(
        root=os.getcwd(), key=sshd_hosts.key_file, kh=sshd_hosts.known_hosts_file, hosts=hosts
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"submitted"
    os.killpg(proc.pid, signal.SIGKILL)  # the "Airflow worker" dies with its SSH connections
    proc.wait()
    head = sshd_hosts.runner(0, home="c-kill")
    state = jobs.wait_job(head, 1, timeout=30)
    assert state.status is JobStatus.SUCCEEDED
    log = LogTailer(jobs.log_reader(head, 1)).flush()[0].splitlines()
    for rank in (0, 1):
        prefix = "(worker1, ip=127.0.0.1) " if rank else ""
        assert [ln for ln in log if ln.startswith(prefix) and (rank or not ln.startswith("("))] == [
            f"{prefix}line-{i}" for i in range(1, 16)
        ]


def test_connection_drop_mid_job_then_reattach_and_resume_log(sshd_hosts):  # noqa: F811
    head = sshd_hosts.runner(1, home="c-drop")
    jobs.submit_job(head, 1, "for i in $(seq 1 20); do echo tick-$i; sleep 0.1; done")
    tail = LogTailer(jobs.log_reader(head, 1))
    first = ""
    while "tick-3" not in first:
        first += tail.read_new()[0]
        time.sleep(0.05)
    offset = tail.offset
    head.connection().transport.close()  # the SSH connection drops mid-job
    # reattach from a fresh runner (as after a deferral), resuming at the saved byte offset
    again = sshd_hosts.runner(1, home="c-drop")
    assert jobs.wait_job(again, 1, timeout=30).status is JobStatus.SUCCEEDED
    rest = LogTailer(jobs.log_reader(again, 1), offset=offset).flush()[0]
    assert (first + rest).split() == [f"tick-{i}" for i in range(1, 21)]
