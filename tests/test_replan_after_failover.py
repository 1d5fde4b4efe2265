"""After failover moves a task, the run is re-planned with it fixed where it runs: the tasks still to
come follow its data (bundled catalog, real egress prices)."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_sky.optimizer import rank_placements
from airflow_provider_sky.provision.planning import plan_for_run, replan_remaining
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import StateStore

CLOUDS = ("aws",)


def _tasks() -> dict[str, Task]:
    return {
        "prep": Task(name="prep", run="true", resources={"infra": "aws", "cpus": "4+"}, outputs={"features": 500}),
        "train": Task(name="train", run="true", resources={"infra": "aws", "cpus": "4+"}),
    }


def test_remaining_tasks_follow_the_moved_task(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    edges = [("prep", "train")]
    first = plan_for_run(store, "d", "r", _tasks(), edges, clouds=CLOUDS)
    assert first is not None
    planned_region = first["tasks"]["prep"]["region"]
    assert first["tasks"]["train"]["region"] == planned_region  # 500 GB keeps them together
    other = next(p for p in rank_placements(_tasks()["prep"], clouds=CLOUDS) if p.region != planned_region)
    elsewhere = other.region
    moved = replan_remaining(
        store, "d", "r", _tasks(), edges, {"prep": ("aws", elsewhere, other.instance_type, False)}, clouds=CLOUDS
    )
    assert moved["tasks"]["prep"]["region"] == elsewhere
    assert moved["tasks"]["train"]["region"] == elsewhere  # follows the data instead of paying egress
    record = store.get_plan_record("d", "r")
    assert record.version == 2 and record.plan == moved


def test_nothing_to_replan_without_a_plan_or_with_only_local(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    assert replan_remaining(store, "d", "r", _tasks(), [], {}, clouds=CLOUDS) is None
    assert plan_for_run(store, "d", "r", _tasks(), [], clouds=("local",)) is None
