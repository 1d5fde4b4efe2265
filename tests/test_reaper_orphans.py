"""Orphan reaper: a planted orphan is found, dry-run touches nothing, a real run reaps, owners are safe."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from airflow_provider_sky.cli.gc import add_gc_parser
from airflow_provider_sky.clouds.local import LocalCloud, kill_processes_under
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.provision import reaper
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.naming import cluster_name_for
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, StateStore

LATER = timedelta(minutes=10)


def labels(name: str, dag: str = "etl", task: str = "train", run: str = "manual__1") -> dict[str, str]:
    return {
        "sky-cluster": name, "sky-managed-by": "airflow-provider-sky",
        "sky-dag-id": dag, "sky-task-id": task, "sky-run-id": run,
    }  # fmt: skip


@pytest.fixture
def env(tmp_path):
    cloud = LocalCloud(tmp_path / "local", cancel_grace=1)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    core = SkyCore(store, {"local": cloud})
    yield SimpleNamespace(cloud=cloud, store=store, core=core, tmp=tmp_path)
    kill_processes_under(str(tmp_path), grace=1)


def plant_orphan(cloud: LocalCloud, name: str = "orphan-1") -> int:
    """A cluster made directly with the backend (never recorded), running a long job."""
    handle = cloud.launch(name, 1, None, labels=labels(name))
    return jobs.submit_job(cloud.runners(handle)[0], 1, "sleep 60").pid


def task(run: str = "sleep 60", **resources) -> Task:
    return Task.from_dict({"run": run, "resources": {"infra": "local", **resources}})


def owned(core: SkyCore, run_cmd: str, task_id: str, name: str | None = None, **resources) -> str:
    owner = Owner("etl", "manual__1", task_id)
    name = name or cluster_name_for(owner.dag_id, task_id, owner.run_id)
    t = task(run_cmd, **resources)
    core.launch(t, name, owner)
    job_id = core.submit(t, name, owner)
    if run_cmd != "sleep 60":
        jobs.wait_job(core._runners(name)[0], job_id, timeout=20)
        core.job_status(name, job_id)
    return name


def test_planted_orphan_dry_run_then_reap(env):
    pid = plant_orphan(env.cloud)
    env.cloud.launch("not-ours", 1, None, labels={"team": "x"})  # no managed-by label: never touched
    live = owned(env.core, "sleep 60", "live")
    now = datetime.now(UTC) + LATER

    assert [o.cluster.name for o in reaper.find_orphans(env.store, env.core.clouds, now)] == ["orphan-1"]
    # Too young to judge (a launch may be racing its state row): left alone.
    assert reaper.find_orphans(env.store, env.core.clouds, datetime.now(UTC)) == []

    report = reaper.reap(env.store, env.core.clouds, now, dry_run=True)
    assert [(o.cluster.name, o.reason) for o in report.orphans] == [
        ("orphan-1", "unknown to the state store")
    ]
    assert report.terminated == [] and env.cloud.find("orphan-1") is not None and pid_alive(pid)
    assert env.store.get_cluster("orphan-1") is None

    report = reaper.reap(env.store, env.core.clouds, now, dry_run=False)
    assert report.terminated == ["orphan-1"] and not report.errors
    assert env.cloud.find("orphan-1") is None and not pid_alive(pid)
    row = env.store.get_cluster("orphan-1")
    assert row.status is ClusterStatus.TERMINATED and row.status_reason.startswith("reaped by gc")
    assert (row.owner_dag_id, row.owner_task_id, row.owner_run_id) == ("etl", "train", "manual__1")
    # The legitimately owned cluster with a running job, and the unlabelled one, are untouched.
    assert env.cloud.status(live) == "UP" and env.cloud.find("not-ours") is not None
    assert env.store.get_cluster(live).status is ClusterStatus.UP
    assert reaper.reap(env.store, env.core.clouds, now + timedelta(days=2), dry_run=False).terminated == []


def test_owner_rules(env):
    done = owned(env.core, "true", "done")  # auto-named, finished, no autostop
    named = owned(env.core, "true", "named", name="shared-warm")  # user-named: meant for reuse
    auto = owned(env.core, "true", "auto", autostop={"idle_minutes": 60})  # the node agent ends it
    now = datetime.now(UTC)
    assert reaper.find_orphans(env.store, env.core.clouds, now + LATER) == []  # within grace
    later = now + timedelta(hours=1)
    orphans = {o.cluster.name: o.reason for o in reaper.find_orphans(env.store, env.core.clouds, later)}
    assert list(orphans) == [done] and "last job ended" in orphans[done] and "no autostop" in orphans[done]
    assert named not in orphans and auto not in orphans
    # A row that says TERMINATED while the cluster still exists is an orphan at once.
    env.store.transition_cluster(named, ClusterStatus.TERMINATED, status_reason="lost track")
    orphans = {o.cluster.name: o.reason for o in reaper.find_orphans(env.store, env.core.clouds, now)}
    assert orphans == {named: "state store says TERMINATED (lost track)"}


def test_store_running_but_node_finished(env):
    name = owned(env.core, "sleep 60", "crashed")
    head = env.core._runners(name)[0]
    jobs.cancel_job(head, 1, grace=1)  # finished on the node; the store still says running
    later = datetime.now(UTC) + timedelta(hours=1)
    assert [o.cluster.name for o in reaper.find_orphans(env.store, env.core.clouds, later)] == [name]


def test_stuck_init_and_orphan_reason_unit():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    item = reaper.ManagedCluster("local", "c", labels("c"), created_at=now - timedelta(hours=1))
    rec = SimpleNamespace(
        name="c", status=ClusterStatus.INIT, status_changed_at=now - timedelta(hours=3), status_reason=None
    )
    assert "stuck in INIT" in reaper.orphan_reason(item, rec, [], now)
    rec.status_changed_at = now - timedelta(minutes=5)
    assert reaper.orphan_reason(item, rec, [], now) is None
    keep = reaper.ManagedCluster("local", "c", {**labels("c"), "sky-keep": "true"})
    assert reaper.orphan_reason(keep, None, [], now) is None


def test_is_auto_named_handles_mapped_tasks():
    def rec(name):
        return SimpleNamespace(name=name, owner_dag_id="etl", owner_task_id="train", owner_run_id="r1")

    assert reaper.is_auto_named(rec(cluster_name_for("etl", "train", "r1")))
    assert reaper.is_auto_named(rec(cluster_name_for("etl", "train", "r1", map_index=3)))
    assert not reaper.is_auto_named(rec("my-cluster"))
    assert not reaper.is_auto_named(rec(cluster_name_for("other", "train", "r1")))


def test_cloud_without_listing_is_skipped(env):
    class Blind:
        name = "ssh"

    report = reaper.reap(env.store, {"ssh": Blind()}, dry_run=True)
    assert report.skipped_clouds == ["ssh"] and report.orphans == []

    class Lister:
        name = "aws"

        def list_managed(self):
            return [
                reaper.ManagedCluster("aws", "x", labels("x")),
                {"name": "y", "labels": {"sky-managed-by": "someone-else"}},
                {
                    "name": "z",
                    "labels": labels("z"),
                    "handle": {
                        "cloud": "aws",
                        "cluster_name": "z",
                        "region": "us-east-1",
                        "zone": None,
                        "instance_type": "m5.large",
                        "num_nodes": 1,
                    },
                },
            ]

    assert isinstance(Lister(), reaper.ManagedLister)
    orphans = reaper.find_orphans(env.store, {"aws": Lister()}, datetime.now(UTC))
    assert [o.cluster.name for o in orphans] == ["x", "z"]
    assert orphans[1].cluster.cloud == "aws" and orphans[1].cluster.handle.region == "us-east-1"


def test_gc_cli(env, monkeypatch):
    monkeypatch.setenv("SKY_LOCAL_DIR", str(env.cloud.base_dir))
    plant_orphan(env.cloud, "orphan-cli")
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-db")
    parser.add_argument("--clouds")
    add_gc_parser(parser.add_subparsers(dest="command", required=True))
    db = ["--state-db", env.store.url]

    def run(*argv):
        out = io.StringIO()
        args = parser.parse_args([*db, "gc", *argv])
        return args.func(args, Console(file=out, width=200)), out.getvalue()

    code, text = run("--dry-run")
    assert code == 0 and "no orphaned clusters" in text  # younger than --min-age
    code, text = run("--dry-run", "--min-age", "0", "--grace", "10")
    assert code == 0 and "orphan-cli" in text and "would terminate" in text
    assert env.cloud.find("orphan-cli") is not None
    args = parser.parse_args([*db, "gc", "--min-age", "0", "--json"])
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert args.func(args, Console(file=io.StringIO())) == 0
    assert json.loads(out.getvalue())["terminated"] == ["orphan-cli"]
    assert env.cloud.find("orphan-cli") is None


def test_maintenance_dag_parses():
    path = Path(__file__).resolve().parent.parent / "dags_examples" / "sky_maintenance.py"
    spec = importlib.util.spec_from_file_location("sky_maintenance_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dag.dag_id == "sky_maintenance" and set(module.dag.task_dict) == {"reap_orphans"}


def test_other_cloud_rows_are_never_touched(env):
    handle = env.cloud.launch("moved", 1, None, labels=labels("moved"))
    env.store.upsert_cluster("moved", cloud="aws", status=ClusterStatus.INIT)  # failover mid-way
    now = datetime.now(UTC) + LATER
    assert reaper.find_orphans(env.store, env.core.clouds, now) == []
    env.store.transition_cluster("moved", ClusterStatus.UP)  # it came up on aws: the local one is left over
    report = reaper.reap(env.store, env.core.clouds, now, dry_run=False)
    assert report.terminated == ["moved"] and "leftover" in report.orphans[0].reason
    assert env.cloud.find(handle.cluster_name) is None
    row = env.store.get_cluster("moved")
    assert row.cloud == "aws" and row.status is ClusterStatus.UP
