"""Races between threads and between processes (spawn) on both backends."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import Pool
from typing import Any

import pytest

from airflow_provider_sky.state import ClusterExistsError, ClusterStatus, StateStore, dispose_engines
from tests import test_state_support as support

pg_admin = support.pg_admin
store_url = support.store_url
store = support.store

THREADS = 12
PROCESSES = 4
START_DELAY_S = 0.6  # time for every worker to be waiting before the race starts


def _thread_race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# -- process workers (module-level so that spawned children can import them) ------------------


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def _worker(op: str, url: str, index: int, start_at: float) -> tuple[int, Any]:
    """One racing process: returns its pid and what it saw."""
    try:
        store = StateStore(url)
        _wait_until(start_at)
        if op == "transition":
            result: Any = store.transition_cluster("c1", ClusterStatus.UP, from_=ClusterStatus.INIT)
        elif op == "next_job":  # several threads per process
            result = _thread_race(4, lambda _i: [store.next_job("c1").job_id for _ in range(5)])
        elif op == "put_plan":
            result = (store.put_plan("d", "r", {"writer": index}), store.get_plan("d", "r"))
        elif op == "create":
            store.add_cluster(f"c{index}")
            result = sorted(c.name for c in store.list_clusters())
        else:  # pragma: no cover
            raise ValueError(op)
        return os.getpid(), result
    finally:
        dispose_engines(url)  # do not leave connections to a schema the test will drop


def _pid(_i: int) -> int:
    time.sleep(0.3)
    return os.getpid()


@pytest.fixture(scope="module")
def procs() -> Iterator[Pool]:
    """A pool of spawned processes, warmed up so that every worker is idle before a race."""
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        assert len(set(pool.map(_pid, range(PROCESSES), chunksize=1))) == PROCESSES
        yield pool


def _process_race(pool: Pool, op: str, url: str) -> list[Any]:
    start_at = time.time() + START_DELAY_S
    args = [(op, url, i, start_at) for i in range(PROCESSES)]
    out = pool.starmap(_worker, args, chunksize=1)
    assert len({pid for pid, _ in out}) == PROCESSES, "every worker process should take part"
    return [result for _, result in out]


# -- threads ----------------------------------------------------------------------------------


def test_threads_race_transition_exactly_one_wins(store: StateStore) -> None:
    store.add_cluster("c1")
    wins = _thread_race(THREADS, lambda _i: store.transition_cluster("c1", "UP", from_="INIT"))
    assert wins.count(True) == 1
    assert store.get_cluster("c1").status is ClusterStatus.UP


def test_threads_race_next_job_ids_unique_and_consecutive(store: StateStore) -> None:
    results = _thread_race(THREADS, lambda _i: [store.next_job("c1").job_id for _ in range(5)])
    ids = sorted(i for chunk in results for i in chunk)
    assert ids == list(range(1, THREADS * 5 + 1))
    assert [j.job_id for j in store.list_jobs("c1")] == ids


def test_threads_race_put_plan_converges(store: StateStore) -> None:
    results = _thread_race(THREADS, lambda i: store.put_plan("d", "r", {"writer": i}))
    assert len({r["writer"] for r in results}) == 1
    assert all(r == store.get_plan("d", "r") for r in results)


def test_threads_race_add_cluster_exactly_one_creates(store: StateStore) -> None:
    def add(i: int) -> bool | str:
        try:
            store.add_cluster("c1", owner_task_id=str(i))
        except ClusterExistsError:
            return "exists"
        return True

    results = _thread_race(THREADS, add)
    assert results.count(True) == 1 and results.count("exists") == THREADS - 1


def test_threads_race_replan_one_wins(store: StateStore) -> None:
    store.put_plan("d", "r", {"v": 0})
    results = _thread_race(THREADS, lambda i: store.replace_plan("d", "r", {"v": i + 1}, expected_version=1))
    assert len({(r.version, r.plan["v"]) for r in results}) == 1
    assert results[0].version == 2


def test_threads_race_add_cost_loses_nothing(store: StateStore) -> None:
    store.add_cluster("c1")
    _thread_race(THREADS, lambda _i: [store.add_cost("c1", 0.5) for _ in range(3)])
    assert store.get_cluster("c1").cost_so_far == pytest.approx(THREADS * 3 * 0.5)


# -- processes --------------------------------------------------------------------------------


def test_processes_race_table_creation_and_inserts(procs: Pool, store_url: str) -> None:
    results = _process_race(procs, "create", store_url)  # the database has no tables yet
    expected = sorted(f"c{i}" for i in range(PROCESSES))
    assert max(results, key=len) == expected  # the last writer saw every row
    assert sorted(c.name for c in StateStore(store_url).list_clusters()) == expected


def test_processes_race_transition_exactly_one_wins(procs: Pool, store: StateStore) -> None:
    store.add_cluster("c1")
    dispose_engines(store.url)
    results = _process_race(procs, "transition", store.url)
    assert results.count(True) == 1
    assert store.get_cluster("c1").status is ClusterStatus.UP


def test_processes_and_threads_race_next_job(procs: Pool, store: StateStore) -> None:
    results = _process_race(procs, "next_job", store.url)
    ids = sorted(i for per_process in results for per_thread in per_process for i in per_thread)
    assert ids == list(range(1, PROCESSES * 4 * 5 + 1))


def test_processes_race_put_plan_converges(procs: Pool, store: StateStore) -> None:
    results = _process_race(procs, "put_plan", store.url)
    plans = {str(p) for pair in results for p in pair}
    assert len(plans) == 1
    assert [store.get_plan("d", "r")] * PROCESSES == [put for put, _ in results]
