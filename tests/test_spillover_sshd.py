"""Spillover end to end: a pool of two real sshd hosts, the local backend standing in for the cloud.

A burst of five tasks (each runs a real job) hits the two-host pool at once, under each policy; two
processes race for the pool's last host on PostgreSQL; a GPU task the pool cannot run goes to the cloud.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud
from airflow_provider_sky.provision import spillover as sp
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.failover import Backoff
from airflow_provider_sky.provision.spill_launch import launch_with_spillover
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import JobStatus, pool_queue
from airflow_provider_sky.state.store import StateStore
from tests.services import require_postgres
from tests.sshd import SshdHosts, start_hosts, stop_hosts

FAST = Backoff(initial=0.2, factor=1.5, maximum=0.5, jitter=0)
N = 5


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    state = start_hosts(2)
    try:
        yield state
    finally:
        stop_hosts(state)


def pool_conn(hosts: SshdHosts, name: str) -> dict[str, Any]:
    h = hosts.hosts
    return {
        "conn_id": name,
        "conn_type": "sky_ssh_pool",
        "extra": {
            "hosts": ",".join(f"{x.user}@127.0.0.1:{x.port}" for x in h),
            "private_key": hosts.key_text,
            "known_hosts": hosts.known_hosts_text,
            "hosts_spec": {f"127.0.0.1:{x.port}": {"cpus": 2, "memory_gb": 2, "gpus": {}} for x in h},
        },
    }


class GpuLocalCloud(LocalCloud):
    """The local backend pretending to have any GPU (the "cloud" for the GPU test)."""

    def launch(self, cluster_name: str, num_nodes: int, resources: Any, *args: Any, **kw: Any) -> Any:
        if resources is not None:
            resources = dataclasses.replace(resources, accelerators=None, any_of=(), ordered=())
        return super().launch(cluster_name, num_nodes, resources, *args, **kw)


def make_core(hosts: SshdHosts, url: str, local_dir: Path, pool: str, gpu_cloud: bool = False) -> SkyCore:
    store = StateStore(url)
    ssh = SshPoolCloud.from_connection(pool_conn(hosts, pool), store=store, cancel_grace=1)
    local = (GpuLocalCloud if gpu_cloud else LocalCloud)(str(local_dir), cancel_grace=1)
    return SkyCore(store, {"ssh": ssh, "local": local})


def sky_task(estimated_s: float, **res: Any) -> Task:
    return Task.from_dict(
        {
            "name": "burst",
            "run": "echo ran on $(hostname) as $USER; sleep 1",
            "resources": res,
            "estimated_hours": estimated_s / 3600,
        }
    )


def run_burst(core: SkyCore, policy: sp.SpillPolicy, estimated_s: float) -> dict[str, tuple[str, str, str]]:
    """Five tasks at once; each launches by spillover, runs its job to the end, tears down."""
    task = sky_task(estimated_s, cpus="1+")
    barrier = threading.Barrier(N)
    out: dict[str, tuple[str, str, str]] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        name = f"burst-{i}-{secrets.token_hex(2)}"
        owner = Owner("spill_dag", "run1", "burst")
        try:
            barrier.wait()
            result, decision = launch_with_spillover(
                core, task, name, owner, policy, cloud_hourly_price=2.0, cloud_provision_s=5.0, poll=FAST
            )
            job = core.submit(task, name, owner)
            deadline = time.monotonic() + 60
            while (status := core.job_status(name, job)) is not None and not status.is_terminal:
                assert time.monotonic() < deadline, f"{name}: job did not finish"
                time.sleep(0.2)
            out[name] = (decision.choice, result.cluster.cloud or "", status.value if status else "?")
            core.down(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(out) == N
    assert all(status == JobStatus.SUCCEEDED.value for _, _, status in out.values()), out
    assert all((choice == "onprem") == (cloud == "ssh") for choice, cloud, _ in out.values()), out
    return out


def counts(out: dict[str, tuple[str, str, str]]) -> Counter[str]:
    return Counter(choice for choice, _, _ in out.values())


def waits_recorded(core: SkyCore, pool: str) -> int:
    return sum(d.choice == "wait" for d in pool_queue.recent_decisions(core.store, pool, limit=100))


def _now() -> datetime:
    return datetime.now(UTC)


CASES = {
    # policy factory, declared runtime (s), expected (on-prem, cloud), expect waits recorded
    "prefer_onprem-long": (lambda: sp.prefer_onprem(600), 3, (5, 0), True),
    "prefer_onprem-zero": (lambda: sp.prefer_onprem(0), 3, (2, 3), False),
    "deadline-missed": (lambda: sp.deadline(_now() + timedelta(seconds=90)), 60, (2, 3), False),
    "deadline-loose": (lambda: sp.deadline(_now() + timedelta(hours=1)), 60, (5, 0), True),
    "cost_of_delay-dear": (lambda: sp.cost_of_delay(100.0), 60, (2, 3), False),
    "cost_of_delay-cheap": (lambda: sp.cost_of_delay(0.01), 60, (5, 0), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_burst_larger_than_pool(case: str, hosts: SshdHosts, tmp_path: Path) -> None:
    factory, estimated_s, (onprem, cloud), waited = CASES[case]
    pool = f"lab-{secrets.token_hex(3)}"
    core = make_core(hosts, f"sqlite:///{tmp_path}/state.db", tmp_path / "local", pool)
    out = run_burst(core, factory(), estimated_s)
    got = counts(out)
    reasons = [
        (d.cluster_name, d.choice, d.reason) for d in pool_queue.recent_decisions(core.store, pool, limit=100)
    ]
    assert (got["onprem"], got["cloud"]) == (onprem, cloud), reasons
    assert (waits_recorded(core, pool) >= 3) is waited
    assert pool_queue.queue(core.store, pool) == []  # nobody left queued
    decisions = pool_queue.recent_decisions(core.store, pool, limit=100)
    spilled = [d for d in decisions if d.choice == "cloud"]
    assert len(spilled) == cloud
    for d in spilled:  # the reason names the policy's numbers
        key = {
            "prefer_onprem": "max_wait",
            "deadline": "misses the deadline",
            "cost_of_delay": "waiting costs",
        }[case.split("-")[0]]
        assert key in d.reason, d.reason
    # the on-prem runs taught the queue how long this task holds a host (settled by the next task)
    pool_queue.settle_holds(core.store, pool)
    assert pool_queue.learned_runtime(core.store, "spill_dag", "burst").source == "learned"


def test_gpu_task_the_pool_lacks_goes_to_the_cloud(hosts: SshdHosts, tmp_path: Path) -> None:
    pool = f"lab-{secrets.token_hex(3)}"
    core = make_core(hosts, f"sqlite:///{tmp_path}/state.db", tmp_path / "local", pool, gpu_cloud=True)
    seen: list[sp.SpillDecision] = []
    task = sky_task(60, accelerators="H100:1")
    result, decision = launch_with_spillover(
        core, task, "gpu-task", Owner("d", "r", "gpu"), sp.prefer_onprem(3600), on_decision=seen.append
    )
    assert decision.choice == "cloud" and result.cluster.cloud == "local"
    assert "never run" in decision.reason and "no accelerator H100" in decision.reason
    assert seen == [decision] and pool_queue.queue(core.store, pool) == []
    assert pool_queue.recent_decisions(core.store, pool)[0].decision == decision.to_dict()
    core.down("gpu-task")


# ---- two processes, one last host, PostgreSQL ----
ROUNDS = 3


def _race_worker(
    conn: dict[str, Any], url: str, local_dir: str, i: int, token: str, barrier: Any, results: Any
) -> None:
    store = StateStore(url)
    ssh = SshPoolCloud.from_connection(conn, store=store, cancel_grace=1)
    core = SkyCore(store, {"ssh": ssh, "local": LocalCloud(local_dir, cancel_grace=1)})
    task = sky_task(3, cpus="1+")
    for r in range(ROUNDS):
        name = f"race-{token}-{r}-{i}"
        barrier.wait(60)
        try:
            result, decision = launch_with_spillover(
                core, task, name, Owner("race", "r", f"w{i}"), sp.prefer_onprem(0),
                cloud_hourly_price=1.0, cloud_provision_s=1.0, poll=FAST,
            )  # fmt: skip
            results.put((r, i, decision.choice, result.cluster.cloud))
        except BaseException as exc:
            results.put((r, i, "error", repr(exc)))
        barrier.wait(60)  # both placed: now give the host back for the next round
        core.down(name)


def test_two_processes_race_for_the_last_host_on_postgres(hosts: SshdHosts, tmp_path: Path) -> None:
    url = require_postgres()
    token = secrets.token_hex(3)
    conn = pool_conn(hosts, f"race-{token}")
    store = StateStore(url)
    ssh = SshPoolCloud.from_connection(conn, store=store, cancel_grace=1)
    blocker = ssh.launch(f"blocker-{token}", 1, None)  # one of the two hosts is taken: one left
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_worker, args=(conn, url, str(tmp_path / "local"), i, token, barrier, results)
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            p.start()
        got = [results.get(timeout=90) for _ in range(2 * ROUNDS)]
        for p in procs:
            p.join(60)
        assert all(choice != "error" for _, _, choice, _ in got), got
        for r in range(ROUNDS):
            placed = sorted((choice, cloud) for rr, _, choice, cloud in got if rr == r)
            assert placed == [("cloud", "local"), ("onprem", "ssh")], got  # never both on the last host
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        ssh.terminate(blocker)
