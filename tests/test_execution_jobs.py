"""Detached single-node jobs with real processes: output, exit codes, env safety, setup, cancel, LOST,
and a job that outlives the process that submitted it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from airflow_provider_sky.clouds.local import kill_processes_under
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.execution.jobs import JobHandle, JobStatus
from airflow_provider_sky.execution.logs import LogTailer
from airflow_provider_sky.execution.runner import SubprocessRunner


@pytest.fixture
def runner(tmp_path):
    node = SubprocessRunner(tmp_path / "node-0")
    yield node
    kill_processes_under(str(tmp_path), grace=1)


def full_log(runner, job_id) -> str:
    return LogTailer(jobs.log_reader(runner, job_id)).flush()[0]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_job_output_and_exit_code(runner):
    handle = jobs.submit_job(runner, 1, 'echo "hello from $SKYPILOT_NODE_RANK"; pwd', workdir="wd")
    assert isinstance(handle, JobHandle) and handle.job_id == "1" and handle.pid
    state = jobs.wait_job(runner, 1, timeout=10)
    assert state.status is JobStatus.SUCCEEDED and state.exit_code == 0
    assert full_log(runner, 1) == f"hello from 0\n{runner.home}/wd\n"
    assert JobHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle
    files = set(os.listdir(handle.job_dir))
    assert {"run.sh", "env.json", "job.json", "log", "pid", "exit_code", "status"} <= files


def test_failing_job_exit_code_and_log_tail(runner):
    jobs.submit_job(runner, 2, "for i in $(seq 1 200); do echo line $i; done; echo boom >&2; exit 7")
    state = jobs.wait_job(runner, 2, timeout=10)
    assert state.status is JobStatus.FAILED and state.exit_code == 7
    tail = jobs.read_log_tail(runner, 2, max_bytes=40)
    assert tail.endswith("line 200\nboom\n")
    assert tail.splitlines()[0].startswith("line ")  # no partial first line


def test_env_values_arrive_verbatim_and_execute_nothing(runner, tmp_path):
    pwn = tmp_path / "pwn"
    env = {
        "SUBST": f"$(touch {pwn})",
        "BACKTICK": f"`touch {pwn}2`",
        "QUOTES": 'it\'s "quoted"; touch ' + str(pwn) + "3",
        "NEWLINES": "line1\nline2\n\nexport X=1",
        "DOLLAR": "$HOME ${PATH} \\n",
        "UNICODE": "ünïcødé ✓",
        "NUMBER": 42,
    }
    script = f"{sys.executable} -c 'import json, os; print(json.dumps({{k: os.environ[k] for k in {json.dumps(sorted(env))}}}))'"
    jobs.submit_job(runner, 3, script, env)
    assert jobs.wait_job(runner, 3, timeout=10).status is JobStatus.SUCCEEDED
    seen = json.loads(full_log(runner, 3))
    assert seen == {k: str(v) for k, v in env.items()}
    assert not any(p.name.startswith("pwn") for p in tmp_path.iterdir())
    run_sh = runner.read_bytes(f"{jobs.job_dir(runner, 3)}/run.sh").decode()
    assert run_sh == script  # values are never substituted into the script


def test_secrets_never_on_a_command_line(runner, tmp_path):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    marker = tmp_path / "seen"
    jobs.submit_job(runner, 4, f'printf %s "$API_TOKEN" > {marker}; sleep 30', {"API_TOKEN": secret})
    wait_for(marker.exists)
    wait_for(lambda: marker.read_text() == secret)
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert secret not in ps
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    assert secret.encode() not in f.read()
            except OSError:
                pass
    env_json = os.path.join(jobs.job_dir(runner, 4), "env.json")
    assert stat.S_IMODE(os.stat(env_json).st_mode) == 0o600
    assert jobs.cancel_job(runner, 4, grace=2).status is JobStatus.CANCELLED


def test_setup_runs_once_and_again_when_changed(runner, tmp_path):
    count = tmp_path / "setup-count"
    setup = f"echo installing; echo x >> {count}"
    jobs.submit_job(runner, 10, "echo run-1", setup=setup)
    assert jobs.wait_job(runner, 10, timeout=10).status is JobStatus.SUCCEEDED
    assert full_log(runner, 10) == "installing\nrun-1\n"
    jobs.submit_job(runner, 11, "echo run-2", setup=setup)
    assert jobs.wait_job(runner, 11, timeout=10).status is JobStatus.SUCCEEDED
    assert full_log(runner, 11) == "run-2\n"
    assert count.read_text() == "x\n"
    jobs.submit_job(runner, 12, "echo run-3", setup=setup + " # v2")
    assert jobs.wait_job(runner, 12, timeout=10).status is JobStatus.SUCCEEDED
    assert count.read_text() == "x\nx\n"
    with open(os.path.join(runner.home, ".sky", "setup_done")) as f:
        assert f.read().strip() == jobs.setup_hash(setup + " # v2")


def test_failing_setup_is_failed_setup_and_skips_run(runner, tmp_path):
    ran = tmp_path / "ran"
    jobs.submit_job(runner, 13, f"touch {ran}", setup="echo cannot install >&2; exit 3")
    state = jobs.wait_job(runner, 13, timeout=10)
    assert state.status is JobStatus.FAILED_SETUP and state.exit_code == 3
    assert "cannot install" in jobs.read_log_tail(runner, 13)
    assert not ran.exists()
    assert not os.path.exists(os.path.join(runner.home, ".sky", "setup_done"))


def test_run_setup_standalone(runner, tmp_path):
    count = tmp_path / "n"
    first = jobs.run_setup(runner, f"echo x >> {count}", timeout=10)
    assert first.ran and first.state.status is JobStatus.SUCCEEDED
    again = jobs.run_setup([runner], f"echo x >> {count}", timeout=10)
    assert not again.ran and again.state.status is JobStatus.SUCCEEDED
    assert count.read_text() == "x\n"
    bad = jobs.run_setup(runner, "echo nope; exit 9", timeout=10)
    assert bad.ran and bad.state.status is JobStatus.FAILED_SETUP and bad.state.exit_code == 9
    assert "nope" in full_log(runner, bad.handle.job_id)


def test_cancel_kills_grandchildren(runner, tmp_path):
    gc = tmp_path / "gc.pid"
    jobs.submit_job(runner, 20, f"sleep 1000 & echo $! > {gc}; wait")
    wait_for(lambda: gc.exists() and gc.read_text().strip())
    pid = int(gc.read_text())
    assert jobs.job_status(runner, 20).status is JobStatus.RUNNING
    state = jobs.cancel_job(runner, 20, grace=2)
    assert state.status is JobStatus.CANCELLED
    wait_for(lambda: not pid_alive(pid), timeout=3)
    # Cancelling again (or a finished job) changes nothing.
    assert jobs.cancel_job(runner, 20, grace=2).status is JobStatus.CANCELLED


def test_cancel_escalates_to_sigkill(runner, tmp_path):
    gc = tmp_path / "gc.pid"
    jobs.submit_job(runner, 21, f"trap '' TERM; sleep 1000 & echo $! > {gc}; wait; wait; wait")
    wait_for(lambda: gc.exists() and gc.read_text().strip())
    start = time.monotonic()
    assert jobs.cancel_job(runner, 21, grace=1).status is JobStatus.CANCELLED
    assert time.monotonic() - start < 6
    wait_for(lambda: not pid_alive(int(gc.read_text())), timeout=3)


def test_driver_killed_means_lost(runner, tmp_path):
    gc = tmp_path / "gc.pid"
    handle = jobs.submit_job(runner, 30, f"sleep 1000 & echo $! > {gc}; wait")
    wait_for(lambda: gc.exists() and gc.read_text().strip())
    wait_for(lambda: os.path.exists(f"{handle.job_dir}/children"))
    os.kill(handle.pid, signal.SIGKILL)
    wait_for(lambda: jobs.job_status(runner, 30).status is JobStatus.LOST)
    assert jobs.job_status(runner, 30).exit_code is None
    # Cancelling a LOST job still kills what it left behind.
    assert jobs.cancel_all_jobs(runner, grace=1)["30"].status is JobStatus.CANCELLED
    wait_for(lambda: not pid_alive(int(gc.read_text())), timeout=3)


def test_job_ids_are_checked_and_never_reused(runner):
    jobs.submit_job(runner, 40, "true")
    with pytest.raises(jobs.JobExistsError):
        jobs.submit_job(runner, 40, "true")
    with pytest.raises(ValueError):
        jobs.submit_job(runner, "../escape", "true")
    with pytest.raises(ValueError):
        jobs.submit_job(runner, 41, "true", {"BAD-NAME": "x"})
    with pytest.raises(jobs.JobNotFoundError):
        jobs.job_status(runner, 999)
    jobs.wait_job(runner, 40, timeout=10)
    assert jobs.list_jobs(runner)["40"].status is JobStatus.SUCCEEDED


SUBMITTER = textwrap.dedent(
    """
    import sys, time
    from airflow_provider_sky.execution import jobs
    from airflow_provider_sky.execution.runner import SubprocessRunner
    runner = SubprocessRunner(sys.argv[1])
    jobs.submit_job(runner, 1, "for i in $(seq 1 25); do echo line $i; sleep 0.08; done")
    print("submitted", flush=True)
    time.sleep(600)
    """
)


def test_job_survives_the_submitter_being_killed(tmp_path):
    root = tmp_path / "node-0"
    submitter = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole below
    )
    try:
        assert submitter.stdout is not None
        assert submitter.stdout.readline().strip() == "submitted"
        runner = SubprocessRunner(root)
        log = root / ".sky" / "jobs" / "1" / "log"
        wait_for(lambda: log.exists() and b"line 3\n" in log.read_bytes())
        os.killpg(submitter.pid, signal.SIGKILL)
        submitter.wait(timeout=5)
        assert jobs.job_status(runner, 1).status is JobStatus.RUNNING  # mid-job when the submitter died
        state = jobs.wait_job(runner, 1, timeout=15)
        assert state.status is JobStatus.SUCCEEDED and state.exit_code == 0
        assert full_log(runner, 1) == "".join(f"line {i}\n" for i in range(1, 26))
    finally:
        if submitter.poll() is None:
            os.killpg(submitter.pid, signal.SIGKILL)
        kill_processes_under(str(tmp_path), grace=1)


def test_kill_owned_group_spares_a_reused_pid_group(tmp_path):
    """A group id read from a job's files may name someone else's processes after pid reuse."""
    import os
    import signal
    import subprocess
    import sys

    from airflow_provider_sky.execution.job_driver import NODE_HOME_ENV, kill_owned_group

    home = str(tmp_path / "node")
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={**os.environ, NODE_HOME_ENV: home}, start_new_session=True)  # fmt: skip
    other_env = {k: v for k, v in os.environ.items() if k != NODE_HOME_ENV}
    theirs = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env=other_env, start_new_session=True)  # fmt: skip
    try:
        kill_owned_group(ours.pid, signal.SIGKILL, home)
        kill_owned_group(theirs.pid, signal.SIGKILL, home)  # not marked for this node: spared
        assert ours.wait(timeout=10) == -signal.SIGKILL
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()
