"""Jobs on one cluster queue by their accelerator demand: never more than the cluster's GPUs at once."""

from __future__ import annotations

import time
from pathlib import Path

from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.runner import SubprocessRunner

SCRIPT = 'echo "start $(date +%s.%N)" >> ~/timeline; sleep 1.2; echo "end $(date +%s.%N)" >> ~/timeline; echo done'


def _wait(runner: SubprocessRunner, job_id: int, timeout: float = 30) -> jobs.JobState:
    return jobs.wait_job(runner, job_id, timeout=timeout, poll=0.1)


#: Runs until ~/release exists (no race with a fixed sleep on a loaded machine).
HOLD = (
    'echo "start $(date +%s.%N)" >> ~/timeline; while [ ! -e ~/release ]; do sleep 0.05; done; '
    'echo "end $(date +%s.%N)" >> ~/timeline; echo done'
)


def test_second_gpu_job_waits_for_the_first(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "node")
    jobs.submit_job(runner, 1, HOLD, num_gpus_per_node=1, gpu_capacity=1)
    deadline = time.time() + 10
    while jobs.job_status(runner, 1).status is not jobs.JobStatus.RUNNING and time.time() < deadline:
        time.sleep(0.05)
    jobs.submit_job(runner, 2, HOLD, num_gpus_per_node=1, gpu_capacity=1)
    time.sleep(0.6)
    assert jobs.job_status(runner, 1).status is jobs.JobStatus.RUNNING
    assert jobs.job_status(runner, 2).status is jobs.JobStatus.PENDING  # queued behind job 1
    (tmp_path / "node" / "release").touch()
    assert _wait(runner, 1).status is jobs.JobStatus.SUCCEEDED
    assert _wait(runner, 2).status is jobs.JobStatus.SUCCEEDED
    events = [line.split() for line in (tmp_path / "node" / "timeline").read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end", "start", "end"]  # never overlapping
    assert "queued: needs 1 accelerator(s), 1 of 1 held by job(s) 1" in jobs.read_log_tail(runner, 2)


def test_jobs_that_fit_together_run_concurrently_and_cpu_jobs_never_queue(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "node")
    jobs.submit_job(runner, 1, SCRIPT, num_gpus_per_node=1, gpu_capacity=2)
    jobs.submit_job(runner, 2, SCRIPT, num_gpus_per_node=1, gpu_capacity=2)
    jobs.submit_job(runner, 3, SCRIPT)  # no accelerator demand
    for job_id in (1, 2, 3):
        assert _wait(runner, job_id).status is jobs.JobStatus.SUCCEEDED
    kinds = [line.split()[0] for line in (tmp_path / "node" / "timeline").read_text().splitlines()]
    assert kinds[:3] == ["start", "start", "start"]  # all three overlapped


def test_cancelling_a_queued_job(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "node")
    jobs.submit_job(runner, 1, "sleep 5", num_gpus_per_node=2, gpu_capacity=2)
    jobs.submit_job(runner, 2, "echo never", num_gpus_per_node=1, gpu_capacity=2)
    time.sleep(0.6)
    assert jobs.job_status(runner, 2).status is jobs.JobStatus.PENDING
    assert jobs.cancel_job(runner, 2, grace=1).status is jobs.JobStatus.CANCELLED
    assert "never" not in jobs.read_log_tail(runner, 2)
    jobs.cancel_job(runner, 1, grace=1)
