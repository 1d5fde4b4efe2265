"""Keep-warm: break-even decisions for several schedules, next-run computation, measured startup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from croniter import croniter

from airflow_provider_sky.provision.keepwarm import (
    decide_keep_warm,
    measured_startup_seconds,
    next_run_after,
)
from airflow_provider_sky.state import StateStore

NOW = datetime(2026, 3, 10, 10, 10, tzinfo=UTC)


def test_hourly_next_run_in_50_minutes_with_cheap_idle_keeps():
    nxt = next_run_after("0 * * * *", NOW)
    assert nxt == datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    d = decide_keep_warm(
        nxt, NOW, idle_hourly_cost=0.05, provision_seconds=300, setup_seconds=300, hourly_price=3.0
    )
    assert d.keep, d.reason
    assert d.numbers["gap_seconds"] == 3000 and d.numbers["cold_start_cost"] == pytest.approx(0.5)
    assert d.numbers["idle_cost"] == pytest.approx(0.05 * 50 / 60, abs=1e-6)
    assert d.numbers["break_even_seconds"] == pytest.approx(36000)
    assert d.numbers["autostop_idle_minutes"] == 62.5
    assert "in 50.0 min" in d.reason and "keep warm" in d.reason


def test_daily_next_run_in_23_hours_tears_down():
    now = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    nxt = next_run_after("@daily", now)
    assert nxt - now == timedelta(hours=14)
    nxt = next_run_after("0 9 * * *", now)
    assert nxt - now == timedelta(hours=23)
    d = decide_keep_warm(nxt, now, idle_hourly_cost=3.0, provision_seconds=300, setup_seconds=300)
    assert not d.keep and "tear down" in d.reason
    assert d.numbers["idle_cost"] == pytest.approx(69.0)


def test_no_schedule_tears_down():
    for schedule in (None, "@once", ""):
        assert next_run_after(schedule, NOW) is None
    d = decide_keep_warm(None, NOW, 1.0, 300, 60)
    assert not d.keep and d.reason.startswith("no next scheduled run")


def test_without_user_value_only_a_gap_shorter_than_the_startup_pays():
    # Same price idle and starting: keep iff the gap is shorter than provision + setup.
    assert decide_keep_warm(NOW + timedelta(minutes=9), NOW, 2.0, 480, 120).keep
    assert not decide_keep_warm(NOW + timedelta(minutes=11), NOW, 2.0, 480, 120).keep
    # The user's waiting time tips a 2-hour gap: cold start 10 min x ($1 + $20)/h = $3.50 > $2 idle.
    d = decide_keep_warm(NOW + timedelta(hours=2), NOW, 1.0, 420, 180, user_hourly_value=20.0)
    assert d.keep and "user time" in d.reason
    assert decide_keep_warm(NOW + timedelta(hours=2), NOW, 1.0, 420, 180, launch_cost=5.0).keep
    assert not decide_keep_warm(NOW + timedelta(hours=2), NOW, 1.0, 420, 180).keep


def test_due_free_and_capped():
    assert decide_keep_warm(NOW - timedelta(minutes=1), NOW, 5.0, 60, 60).keep
    free = decide_keep_warm(NOW + timedelta(hours=5), NOW, 0.0, 60, 60, hourly_price=0.0)
    assert not free.keep and free.numbers["break_even_seconds"] is None  # nothing to save either way
    capped = decide_keep_warm(
        NOW + timedelta(hours=5), NOW, 0.01, 600, 600, hourly_price=10, max_keep=timedelta(hours=1)
    )
    assert not capped.keep and "max_keep" in capped.reason


def test_next_run_forms():
    assert next_run_after(timedelta(hours=2), NOW) == NOW + timedelta(hours=2)
    assert next_run_after(SimpleNamespace(_delta=timedelta(minutes=30)), NOW) == NOW + timedelta(minutes=30)
    assert next_run_after(croniter("*/15 * * * *", NOW), NOW) == datetime(2026, 3, 10, 10, 15, tzinfo=UTC)
    assert next_run_after(lambda after: after + timedelta(days=1), NOW) == NOW + timedelta(days=1)
    assert next_run_after("@continuous", NOW) == NOW
    naive = datetime(2026, 3, 10, 10, 10)
    assert next_run_after("@hourly", naive) == datetime(2026, 3, 10, 11, tzinfo=UTC)
    # A timetable-like object in Berlin across the DST switch (29 March 2026: UTC+1 -> UTC+2).
    berlin = SimpleNamespace(_expression="0 3 * * *", _timezone="Europe/Berlin")
    assert next_run_after(berlin, datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, tzinfo=UTC
    )
    assert next_run_after(berlin, datetime(2026, 3, 26, 12, tzinfo=UTC)) == datetime(
        2026, 3, 27, 2, tzinfo=UTC
    )
    assert next_run_after("0 3 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), tz="Europe/Berlin").hour == 1
    with pytest.raises(TypeError):
        next_run_after(object(), NOW)


def test_measured_startup_from_history(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    for name, provision, setup in (("c1", 200, 60), ("c2", 400, 120), ("c3", 10_000_000, None)):
        rec = store.upsert_cluster(name, cloud="local", owner_dag_id="etl")
        store.record_attempt(name, outcome="failed", at=rec.created_at + timedelta(seconds=50))
        store.record_attempt(name, outcome="launched", at=rec.created_at + timedelta(seconds=provision))
        job = store.next_job(name)
        store.next_job(name)  # a later job (no setup) is not a sample
        if setup is not None:
            store.update_job(name, job.job_id, started_at=job.submitted_at + timedelta(seconds=setup))
    est = measured_startup_seconds(store, "etl")
    assert (est.provision_seconds, est.setup_seconds) == (300, 90)  # medians; the absurd sample is dropped
    assert (est.provision_samples, est.setup_samples) == (2, 2)
    one = measured_startup_seconds(store, "c1")
    assert (one.provision_seconds, one.setup_seconds, one.provision_samples) == (200, 60, 1)
    none = measured_startup_seconds(store, "unknown-dag", default_provision=111, default_setup=22)
    assert (none.provision_seconds, none.setup_seconds, none.setup_samples) == (111, 22, 0)
