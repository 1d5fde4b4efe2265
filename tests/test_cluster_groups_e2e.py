"""Consecutive tasks share one cluster under `airflow dags test` on the local backend.

One DAG run holds four chains of three compatible tasks (tests/dags/sky_cluster_group_dags.py): all
succeed; the middle one's job fails (no retries); the middle one fails once then succeeds on its
retry; the middle one fails before its job exists. Each chain must launch exactly one cluster, run
every job it ran on it, and leave nothing up.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from airflow_provider_sky.provision.naming import group_cluster_name
from tests.airflow_runner import REPO, AirflowHome, make_home

pytestmark = pytest.mark.timeout(600)
DAG_ID = "sky_cluster_groups"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[AirflowHome, str, str]:
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(REPO / "tests" / "dags" / "sky_cluster_group_dags.py", dags / "sky_cluster_group_dags.py")
    home = make_home(tmp_path_factory.mktemp("airflow_home"), dags)
    result = home.airflow("dags", "test", DAG_ID)
    out = result.stdout + result.stderr
    assert result.returncode != 0, "the chain with a failing task fails the DAG run"
    assert "Traceback" in out and "ended FAILED (exit code 4)" in out, out[-4000:]
    with _db(home) as db:
        (run_id,) = db.execute("select run_id from sky_plans where dag_id = ?", (DAG_ID,)).fetchone()
    return home, out, run_id


def _db(home: AirflowHome) -> sqlite3.Connection:
    return sqlite3.connect(Path(home.path) / "sky" / "state.db")


def _jobs(home: AirflowHome, cluster: str) -> list[tuple[str, str]]:
    with _db(home) as db:
        rows = db.execute(
            "select owner_task_id, status from sky_jobs where cluster_name = ? order by job_id", (cluster,)
        ).fetchall()
    return [(task, status) for task, status in rows]


def _clusters(home: AirflowHome) -> dict[str, str]:
    with _db(home) as db:
        rows = db.execute("select name, status from sky_clusters where owner_dag_id = ?", (DAG_ID,)).fetchall()
    return dict(rows)


def _launches(home: AirflowHome) -> dict[str, int]:
    with _db(home) as db:
        rows = db.execute(
            "select cluster_name, count(*) from sky_launch_attempts where outcome = 'launched' group by cluster_name"
        ).fetchall()
    return dict(rows)


def test_the_plan_groups_each_chain_and_each_chain_launches_one_cluster(run: tuple[AirflowHome, str, str]) -> None:
    home, _, run_id = run
    with _db(home) as db:
        (raw,) = db.execute("select plan from sky_plans where dag_id = ?", (DAG_ID,)).fetchone()
    plan = json.loads(raw) if isinstance(raw, str) else raw
    chains = [["prep", "train", "report"], ["first", "broken", "never"], ["a", "flaky", "z"], ["m1", "m2", "m3"]]
    expected = {group_cluster_name(DAG_ID, run_id, chain[0]): chain for chain in chains}
    assert plan["cluster_groups"] == expected
    for name, chain in expected.items():
        entries = [plan["tasks"][t] for t in chain]
        assert [e["cluster_group"] for e in entries] == [name] * 3
        assert [(e["group_first"], e["group_last"]) for e in entries] == [(True, False), (False, False), (False, True)]
        assert [e["shares_with"] for e in entries] == [None, chain[0], chain[1]]
    # One cluster row and one launch per chain; nothing else was launched for this DAG.
    assert set(_clusters(home)) == set(expected)
    assert _launches(home) == dict.fromkeys(expected, 1)


def test_a_succeeding_chain_runs_all_jobs_on_one_cluster_then_tears_it_down(run: tuple[AirflowHome, str, str]) -> None:
    home, out, run_id = run
    name = group_cluster_name(DAG_ID, run_id, "prep")
    assert _jobs(home, name) == [("prep", "SUCCEEDED"), ("train", "SUCCEEDED"), ("report", "SUCCEEDED")]
    assert "trail: prep train report" in out  # the third job saw the files the first two wrote
    assert f"Sharing cluster {name} with upstream prep, saves ~" in out
    assert f"Sharing cluster {name} with upstream train, saves ~" in out
    assert _clusters(home)[name] == "TERMINATED"
    assert not (home.local_dir / "clusters" / name).exists()


def test_a_final_failure_mid_chain_tears_the_shared_cluster_down(run: tuple[AirflowHome, str, str]) -> None:
    home, out, run_id = run
    name = group_cluster_name(DAG_ID, run_id, "first")
    assert _jobs(home, name) == [("first", "SUCCEEDED"), ("broken", "FAILED")]  # "never" never ran
    assert f"Shared cluster {name}: final failure, tearing it down" in out
    assert _clusters(home)[name] == "TERMINATED"


def test_a_failure_before_the_job_is_covered_by_the_failure_callback(run: tuple[AirflowHome, str, str]) -> None:
    home, out, run_id = run
    name = group_cluster_name(DAG_ID, run_id, "m1")
    assert _jobs(home, name) == [("m1", "SUCCEEDED")]
    assert f"Task m2 failed for good: tearing down shared cluster {name}" in out
    assert _clusters(home)[name] == "TERMINATED"


def test_a_retried_task_reuses_the_shared_cluster(run: tuple[AirflowHome, str, str]) -> None:
    home, out, run_id = run
    name = group_cluster_name(DAG_ID, run_id, "a")
    assert _jobs(home, name) == [("a", "SUCCEEDED"), ("flaky", "FAILED"), ("flaky", "SUCCEEDED"), ("z", "SUCCEEDED")]
    assert f"Shared cluster {name}: retries left, keeping it for the retry" in out
    assert "second-try-ok" in out
    assert _launches(home)[name] == 1


def test_nothing_is_left_running(run: tuple[AirflowHome, str, str]) -> None:
    home, _, _ = run
    assert set(_clusters(home).values()) == {"TERMINATED"}
    clusters_dir = home.local_dir / "clusters"
    assert not clusters_dir.exists() or not any(p.is_dir() for p in clusters_dir.iterdir())
