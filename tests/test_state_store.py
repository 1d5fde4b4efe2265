"""Functional tests of ``StateStore`` on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from airflow_provider_sky.state import (
    ClusterExistsError,
    ClusterNotFoundError,
    ClusterRecord,
    ClusterStatus,
    JobNotFoundError,
    JobRecord,
    JobStatus,
    StateStore,
)
from airflow_provider_sky.state.engine import get_entry
from airflow_provider_sky.state.models import Counter
from tests import test_state_support as support

pg_admin = support.pg_admin
store_url = support.store_url
store = support.store


def _add(store: StateStore, name: str = "c1", **kw) -> ClusterRecord:
    return store.add_cluster(name, cloud="local", region="here", **kw)


# -- clusters ---------------------------------------------------------------------------------


def test_add_and_get_cluster_round_trips_every_field(store: StateStore) -> None:
    handle = {"nodes": [{"ip": "10.0.0.1", "port": 22}], "extra": None}
    rec = store.add_cluster(
        "c1", cloud="aws", region="us-east-1", zone="us-east-1a", instance_type="p3.2xlarge",
        num_nodes=2, accelerators="V100:1", use_spot=True, owner_dag_id="d", owner_run_id="r",
        owner_task_id="t", handle=handle, autostop_idle_minutes=10, autostop_down=True, hourly_price=3.06,
    )  # fmt: skip
    got = store.get_cluster("c1")
    assert got == rec
    assert isinstance(got, ClusterRecord)
    assert got.status is ClusterStatus.INIT and got.is_live
    assert got.handle == handle and got.num_nodes == 2 and got.use_spot is True
    assert got.accelerators == "V100:1" and got.hourly_price == pytest.approx(3.06)
    assert got.cost_so_far == 0.0
    for ts in (got.created_at, got.last_used_at, got.status_changed_at):
        assert ts is not None and ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - got.created_at) < timedelta(minutes=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.status = ClusterStatus.UP  # type: ignore[misc]
    assert store.get_cluster("nope") is None


def test_records_do_not_alias_stored_json(store: StateStore) -> None:
    rec = _add(store, handle={"k": [1]})
    rec.handle["k"].append(2)
    assert store.get_cluster("c1").handle == {"k": [1]}


@pytest.mark.parametrize("status", [s for s in ClusterStatus if s is not ClusterStatus.TERMINATED])
def test_add_cluster_refuses_a_live_name(store: StateStore, status: ClusterStatus) -> None:
    _add(store)
    store.update_cluster("c1", status=status)
    with pytest.raises(ClusterExistsError) as err:
        _add(store)
    assert err.value.name == "c1" and err.value.status == status.value


def test_add_cluster_replaces_a_terminated_row(store: StateStore) -> None:
    old = _add(store, owner_dag_id="old", handle={"x": 1})
    store.add_cost("c1", 5.0)
    assert store.transition_cluster("c1", ClusterStatus.TERMINATED)
    new = store.add_cluster("c1", cloud="gcp", owner_dag_id="new")
    assert new.cloud == "gcp" and new.region is None and new.handle is None
    assert new.owner_dag_id == "new" and new.cost_so_far == 0.0 and new.status is ClusterStatus.INIT
    assert new.created_at >= old.created_at
    assert [c.name for c in store.list_clusters()] == ["c1"]


def test_upsert_cluster_inserts_then_merges(store: StateStore) -> None:
    rec = store.upsert_cluster("c1", cloud="local", handle={"a": 1})
    assert rec.status is ClusterStatus.INIT and rec.num_nodes == 1 and rec.handle == {"a": 1}
    rec2 = store.upsert_cluster("c1", status="UP", region="r")
    assert rec2.cloud == "local" and rec2.region == "r" and rec2.status is ClusterStatus.UP
    assert rec2.status_changed_at >= rec.status_changed_at and rec2.created_at == rec.created_at
    with pytest.raises(TypeError, match="bogus"):
        store.upsert_cluster("c1", bogus=1)


def test_list_clusters_filters(store: StateStore) -> None:
    _add(store, "a", owner_dag_id="d1", owner_run_id="r1")
    _add(store, "b", owner_dag_id="d1", owner_run_id="r2")
    _add(store, "c", owner_dag_id="d2")
    store.transition_cluster("b", ClusterStatus.UP)
    store.transition_cluster("c", ClusterStatus.STOPPED)
    names = lambda recs: [r.name for r in recs]  # noqa: E731
    assert names(store.list_clusters()) == ["a", "b", "c"]
    assert names(store.list_clusters(status=ClusterStatus.UP)) == ["b"]
    assert names(store.list_clusters(status=["UP", ClusterStatus.STOPPED])) == ["b", "c"]
    assert names(store.list_clusters(owner_dag_id="d1")) == ["a", "b"]
    assert names(store.list_clusters(owner_dag_id="d1", owner_run_id="r2")) == ["b"]
    assert names(store.list_clusters(status="INIT", owner_dag_id="d2")) == []


def test_update_cluster(store: StateStore) -> None:
    rec = _add(store)
    upd = store.update_cluster("c1", handle={"ip": "1.2.3.4"}, status_reason="why", zone="z")
    assert upd.handle == {"ip": "1.2.3.4"} and upd.status_reason == "why" and upd.zone == "z"
    assert upd.status_changed_at == rec.status_changed_at  # status did not change
    upd = store.update_cluster("c1", status=ClusterStatus.ERROR)
    assert upd.status is ClusterStatus.ERROR and upd.status_changed_at > rec.status_changed_at
    with pytest.raises(ClusterNotFoundError) as err:
        store.update_cluster("missing", zone="z")
    assert isinstance(err.value, KeyError) and "missing" in str(err.value)
    for bad in ({"name": "x"}, {"nope": 1}):
        with pytest.raises(TypeError):
            store.update_cluster("c1", **bad)


def test_transition_cluster_is_compare_and_set(store: StateStore) -> None:
    rec = _add(store)
    assert not store.transition_cluster("c1", ClusterStatus.UP, from_=ClusterStatus.STOPPED)
    assert store.get_cluster("c1").status is ClusterStatus.INIT
    assert store.transition_cluster("c1", "UP", from_="INIT", handle={"h": 1}, status_reason=None)
    up = store.get_cluster("c1")
    assert up.status is ClusterStatus.UP and up.handle == {"h": 1}
    assert up.status_changed_at > rec.status_changed_at
    assert not store.transition_cluster("c1", ClusterStatus.UP, from_=ClusterStatus.INIT)
    assert store.transition_cluster("c1", ClusterStatus.STOPPED, from_=(ClusterStatus.INIT, ClusterStatus.UP))
    assert store.transition_cluster("c1", ClusterStatus.ERROR, status_reason="boom")  # from any
    err = store.get_cluster("c1")
    assert err.status is ClusterStatus.ERROR and err.status_reason == "boom"
    assert not store.transition_cluster("missing", ClusterStatus.UP)
    with pytest.raises(TypeError):
        store.transition_cluster("c1", ClusterStatus.UP, status=ClusterStatus.INIT)
    with pytest.raises(ValueError):
        store.transition_cluster("c1", "RUNNING")


def test_touch_cost_and_remove(store: StateStore) -> None:
    rec = _add(store)
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.touch_cluster("c1", at=at)
    assert store.get_cluster("c1").last_used_at == at
    assert store.touch_cluster("c1")
    assert rec.last_used_at <= store.get_cluster("c1").last_used_at < at
    assert not store.touch_cluster("missing")
    assert store.add_cost("c1", 0.25) == pytest.approx(0.25)
    assert store.add_cost("c1", 1.5) == pytest.approx(1.75)
    assert store.get_cluster("c1").cost_so_far == pytest.approx(1.75)
    with pytest.raises(ClusterNotFoundError):
        store.add_cost("missing", 1.0)
    assert store.remove_cluster("c1")
    assert store.get_cluster("c1") is None
    assert not store.remove_cluster("c1")


# -- jobs -------------------------------------------------------------------------------------


def test_next_job_allocates_consecutive_ids_per_cluster(store: StateStore) -> None:
    ids_a = [store.next_job("a").job_id for _ in range(3)]
    ids_b = [store.next_job("b").job_id for _ in range(2)]
    assert ids_a == [1, 2, 3] and ids_b == [1, 2]
    job = store.next_job(
        "a", name="train", log_path="/l", owner_dag_id="d", owner_run_id="r", owner_task_id="t"
    )
    assert isinstance(job, JobRecord) and job.job_id == 4
    assert (job.name, job.log_path, job.owner_dag_id, job.owner_run_id, job.owner_task_id) == (
        "train", "/l", "d", "r", "t",
    )  # fmt: skip
    assert job.status is JobStatus.PENDING and not job.is_terminal
    assert job.started_at is None and job.ended_at is None and job.submitted_at.tzinfo is not None
    assert store.get_job("a", 4) == job
    assert store.get_job("a", 99) is None


def test_job_ids_are_never_reused_across_cluster_recreation(store: StateStore) -> None:
    _add(store)
    assert [store.next_job("c1").job_id for _ in range(2)] == [1, 2]
    store.transition_cluster("c1", ClusterStatus.TERMINATED)
    assert store.remove_cluster("c1")
    _add(store)
    assert store.next_job("c1").job_id == 3
    store.transition_cluster("c1", ClusterStatus.TERMINATED)
    _add(store)  # replaces the TERMINATED row
    assert store.next_job("c1").job_id == 4
    assert [j.job_id for j in store.list_jobs("c1")] == [1, 2, 3, 4]


def test_job_counter_is_reseeded_from_existing_jobs(store: StateStore) -> None:
    for _ in range(3):
        store.next_job("c1")
    with Session(get_entry(store.url).engine) as s, s.begin():
        s.execute(delete(Counter))
    assert store.next_job("c1").job_id == 4


def test_next_job_with_initial_status_sets_timestamps(store: StateStore) -> None:
    running = store.next_job("c1", status=JobStatus.RUNNING)
    assert running.started_at is not None and running.ended_at is None
    done = store.next_job("c1", status="CANCELLED")
    assert done.is_terminal and done.ended_at is not None and done.started_at is None


def test_set_job_status_life_cycle(store: StateStore) -> None:
    job = store.next_job("c1")
    assert store.set_job_status("c1", job.job_id, JobStatus.SETTING_UP, from_=JobStatus.PENDING)
    assert not store.set_job_status("c1", job.job_id, JobStatus.RUNNING, from_=JobStatus.PENDING)
    assert store.set_job_status("c1", job.job_id, "RUNNING", from_=["PENDING", "SETTING_UP"])
    running = store.get_job("c1", job.job_id)
    assert running.status is JobStatus.RUNNING and running.started_at is not None
    assert running.ended_at is None
    assert store.set_job_status("c1", job.job_id, JobStatus.RUNNING)  # re-entering keeps started_at
    assert store.get_job("c1", job.job_id).started_at == running.started_at
    assert store.set_job_status("c1", job.job_id, JobStatus.FAILED, exit_code=3)
    done = store.get_job("c1", job.job_id)
    assert done.is_terminal and done.exit_code == 3 and done.ended_at >= done.started_at
    # default from_ is "any non-terminal": a late poll cannot overwrite a final status
    assert not store.set_job_status("c1", job.job_id, JobStatus.LOST)
    assert store.get_job("c1", job.job_id).status is JobStatus.FAILED
    # an explicit from_ may leave a terminal status (ended_at is cleared again)
    assert store.set_job_status("c1", job.job_id, JobStatus.PENDING, from_=JobStatus.FAILED)
    assert store.get_job("c1", job.job_id).ended_at is None
    assert not store.set_job_status("c1", 999, JobStatus.RUNNING)


def test_job_status_enum() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FAILED_SETUP, JobStatus.CANCELLED, JobStatus.LOST,
    }  # fmt: skip
    assert JobStatus.terminal() | JobStatus.non_terminal() == frozenset(JobStatus)
    assert not ClusterStatus.TERMINATED.is_live and ClusterStatus.ERROR.is_live


def test_list_and_update_jobs(store: StateStore) -> None:
    for cluster in ("b", "a", "a"):
        store.next_job(cluster)
    store.set_job_status("a", 2, JobStatus.SUCCEEDED, exit_code=0)
    assert [(j.cluster_name, j.job_id) for j in store.list_jobs()] == [("a", 1), ("a", 2), ("b", 1)]
    assert [j.job_id for j in store.list_jobs("a", status=JobStatus.PENDING)] == [1]
    assert [j.cluster_name for j in store.list_jobs(status=JobStatus.non_terminal())] == ["a", "b"]
    upd = store.update_job("a", 1, log_path="/x/log", name="n", status=JobStatus.RUNNING)
    assert upd.log_path == "/x/log" and upd.name == "n" and upd.started_at is not None
    with pytest.raises(JobNotFoundError):
        store.update_job("a", 42, name="x")
    with pytest.raises(TypeError):
        store.update_job("a", 1, job_id=7)


# -- plans ------------------------------------------------------------------------------------


def test_plans_first_writer_wins(store: StateStore) -> None:
    assert store.get_plan("d", "r") is None
    plan = {"tasks": {"t1": {"cloud": "aws", "region": "us-east-1", "cost": 1.5}}, "order": ["t1"]}
    assert store.put_plan("d", "r", plan) == plan
    assert store.put_plan("d", "r", {"other": True}) == plan
    assert store.get_plan("d", "r") == plan
    assert store.get_plan("d", "r2") is None
    with pytest.raises(ValueError):
        store.put_plan("d", "r3", None)


def test_replace_plan_is_compare_and_set_on_version(store: StateStore) -> None:
    first = store.put_plan_record("d", "r", {"v": 1})
    assert first.version == 1
    second = store.replace_plan("d", "r", {"v": 2}, expected_version=1)
    assert (second.version, second.plan) == (2, {"v": 2})
    stale = store.replace_plan("d", "r", {"v": "stale"}, expected_version=1)
    assert (stale.version, stale.plan) == (2, {"v": 2})
    assert store.get_plan_record("d", "r") == stale
    assert store.replace_plan("d", "new", {"v": 9}, expected_version=0).version == 1
    assert store.delete_plan("d", "r") and not store.delete_plan("d", "r")
    assert store.get_plan("d", "r") is None


# -- launch attempts --------------------------------------------------------------------------


class CapacityError(Exception):
    pass


def test_launch_attempts(store: StateStore) -> None:
    a1 = store.record_attempt(
        "c1", outcome="failed", cloud="aws", region="us-east-1", zone="us-east-1a",
        instance_type="p3.2xlarge", error_class=CapacityError("no capacity in us-east-1a"),
    )  # fmt: skip
    assert (a1.attempt, a1.error_class, a1.message) == (1, "CapacityError", "no capacity in us-east-1a")
    a2 = store.record_attempt("c1", outcome="failed", cloud="gcp", error_class=CapacityError, message="m")
    assert (a2.attempt, a2.error_class, a2.message) == (2, "CapacityError", "m")
    at = datetime(2030, 1, 1, tzinfo=UTC)
    a3 = store.record_attempt("c1", outcome="succeeded", cloud="azure", at=at)
    assert a3.attempt == 3 and a3.error_class is None and a3.at == at
    store.record_attempt("c0", outcome="failed", error_class="QuotaError")
    assert store.list_attempts("c1") == [a1, a2, a3]
    assert [(a.cluster_name, a.attempt) for a in store.list_attempts()] == [
        ("c0", 1), ("c1", 1), ("c1", 2), ("c1", 3),
    ]  # fmt: skip
    store.remove_cluster("c1")
    assert store.record_attempt("c1", outcome="failed").attempt == 4


def test_repr_hides_password() -> None:
    text = repr(StateStore("postgresql+psycopg://u:secret@h/db"))
    assert "secret" not in text and "postgresql+psycopg://u:***@h/db" in text
