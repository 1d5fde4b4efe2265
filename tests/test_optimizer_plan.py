"""Plans from spec tasks and YAML files on the bundled catalog: semantics, JSON, table, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from airflow_provider_sky.catalog import default_catalog
from airflow_provider_sky.optimizer import InfeasibleTaskError, OptimizerError, Plan, optimize
from airflow_provider_sky.optimizer.cli_support import plan_file
from airflow_provider_sky.spec.errors import SpecError
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.task import Task

TASK_KEYS = {"cloud", "region", "zone", "instance_type", "accelerators", "use_spot", "hourly_price", "cost"}


def task(name: str, resources: dict, **kw) -> Task:
    return Task(name=name, resources=Resources.from_dict(resources), **kw)


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


def test_single_task_is_cheapest_offering(cat) -> None:
    plan = optimize([task("t", {"accelerators": "V100:1"})], cat)
    p = plan.tasks["t"]
    rows = cat.find(__import__("airflow_provider_sky.catalog", fromlist=["OfferingQuery"]).OfferingQuery(accelerator="V100", accelerator_count=1))
    assert p.hourly_price == pytest.approx(float(cat.table.price[rows].min()))
    assert p.accelerators == {"V100": 1}
    assert plan.total_cost == pytest.approx(p.cost) and plan.total_hours == 1.0


def test_hours_nodes_and_spot_scale_cost(cat) -> None:
    plan = optimize([task("t", {"accelerators": "A100:8", "use_spot": True}, num_nodes=2, estimated_hours=3)], cat)
    p = plan.tasks["t"]
    assert p.use_spot
    assert p.cost == pytest.approx(p.hourly_price * 3 * 2)
    assert plan.total_hours == 3


def test_pins_blocklist_and_failover(cat) -> None:
    t = task("t", {"infra": "aws/us-east-1", "accelerators": "V100:1"})
    first = optimize([t], cat).tasks["t"]
    assert (first.cloud, first.region) == ("aws", "us-east-1")
    second = optimize([t], cat, blocked=[("aws", "us-east-1", first.zone)]).tasks["t"]
    assert second.region == "us-east-1" and second.zone != first.zone
    with pytest.raises(InfeasibleTaskError, match="blocked after failures"):
        optimize([t], cat, blocked=[("aws", "us-east-1")])


def test_any_of_takes_cheapest_and_ordered_takes_first_feasible(cat) -> None:
    anyof = optimize([task("t", {"accelerators": {"H100": 8, "T4": 1}})], cat).tasks["t"]
    assert anyof.accelerators == {"T4": 1}
    ordered = optimize([task("t", {"accelerators": ["H100:8", "T4:1"]})], cat).tasks["t"]
    assert ordered.accelerators == {"H100": 8}
    skip = optimize([task("t", {"ordered": [{"cloud": "azure", "accelerators": "A10G:1"}, {"accelerators": "L4:1"}]})], cat)
    assert skip.tasks["t"].accelerators == {"L4": 1}


def test_local_pin(cat) -> None:
    p = optimize([task("t", {"infra": "local"})], cat).tasks["t"]
    assert (p.cloud, p.cost) == ("local", 0.0)
    cheap = optimize([task("t", {"cpus": "2+"})], cat).tasks["t"]
    assert cheap.cloud != "local"  # free local machine is only used when asked for


def test_infeasible_error_names_task_request_and_nearest(cat) -> None:
    with pytest.raises(InfeasibleTaskError) as err:
        optimize([task("train", {"accelerators": "A100:16", "region": "eu-north-1"})], cat)
    msg = str(err.value)
    assert msg.startswith("no offering satisfies task 'train': accelerators A100:16 in region eu-north-1;")
    assert "nearest offerings" in msg and err.value.task == "train"


def test_json_round_trip_and_exact_keys(cat) -> None:
    tasks = [
        task("prep", {"cpus": "8+"}, outputs={"data": 200}),
        task("train", {"accelerators": "A100:8"}, depends_on=["prep"], estimated_hours=2),
    ]
    plan = optimize(tasks, cat)
    d = plan.to_json_dict()
    assert set(d) == {"total_cost", "total_hours", "tasks", "egress"}
    assert all(set(v) == TASK_KEYS for v in d["tasks"].values())
    again = Plan.from_json_dict(json.loads(json.dumps(d)))
    assert again.to_json_dict() == d
    text = _render(plan)
    assert "prep" in text and "train" in text and "Sky placement plan" in text


def test_egress_is_reported_when_data_crosses(cat) -> None:
    tasks = [
        task("a", {"cloud": "aws", "cpus": 8}, outputs={"x": 100}),
        task("b", {"cloud": "gcp", "cpus": 8}, depends_on=["a"]),
    ]
    plan = optimize(tasks, cat)
    (flow,) = plan.egress
    assert (flow.src, flow.dst, flow.gb, flow.src_cloud, flow.dst_cloud) == ("a", "b", 100, "aws", "gcp")
    assert flow.cost == pytest.approx(9.0)
    assert plan.total_cost == pytest.approx(plan.compute_cost + 9.0)
    assert "egress" in _render(plan)


def test_time_objective_prefers_colocation(cat) -> None:
    tasks = [
        task("a", {"cpus": 8}, outputs={"x": 2000}),
        task("b", {"accelerators": "V100:1"}, depends_on=["a"]),
    ]
    fast = optimize(tasks, cat, minimize="time", bandwidth_gbps=0.5)
    assert (fast.tasks["a"].cloud, fast.tasks["a"].region) == (fast.tasks["b"].cloud, fast.tasks["b"].region)
    assert fast.total_hours == pytest.approx(2.0)


def test_bad_inputs(cat) -> None:
    with pytest.raises(OptimizerError, match="minimize"):
        optimize([task("t", {})], cat, minimize="speed")
    with pytest.raises(OptimizerError, match="not a task"):
        optimize([task("t", {}, depends_on=["ghost"])], cat)
    with pytest.raises(OptimizerError, match="cycle"):
        optimize([task("a", {}, depends_on=["b"]), task("b", {}, depends_on=["a"])], cat)


def test_plan_file_dag_yaml(tmp_path: Path) -> None:
    f = tmp_path / "dag.yaml"
    f.write_text(
        "name: pipe\nminimize: time\ntasks:\n"
        "  - name: prep\n    resources: {cpus: 8+}\n    outputs: {prep: 50}\n"
        "  - name: train\n    depends_on: [prep]\n    resources: {accelerators: V100:1}\n    estimated_hours: 2\n"
        "  - name: eval\n    depends_on: [train, prep]\n    resources: {accelerators: T4}\n"
    )
    plan = plan_file(f, minimize=None)
    assert plan.minimize == "time" and list(plan.tasks) == ["prep", "train", "eval"]
    assert plan.total_hours == pytest.approx(4.0)


def test_plan_file_skypilot_chain(tmp_path: Path) -> None:
    f = tmp_path / "chain.yaml"
    f.write_text(
        "name: chain\n---\nname: a\nresources: {cpus: 4+}\noutputs: {o: 10}\nrun: echo a\n"
        "---\nname: b\nresources: {accelerators: L4:1}\nrun: echo b\n"
    )
    plan = plan_file(f)
    assert list(plan.tasks) == ["a", "b"] and plan.total_hours == pytest.approx(2.0)
    single = tmp_path / "one.yaml"
    single.write_text("resources:\n  accelerators: H100:8\nrun: python train.py\n")
    assert plan_file(single).tasks["task-0"].accelerators == {"H100": 8}


def test_plan_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: a\n    depends_on: [nope]\n")
    with pytest.raises(SpecError, match="depends_on"):
        plan_file(bad)
    bad.write_text("tasks:\n  - name: a\n    resources: {accelerators: V99:1}\n")
    with pytest.raises(SpecError, match="accelerators"):
        plan_file(bad)
    bad.write_text("minimize: fast\ntasks:\n  - name: a\n")
    with pytest.raises(SpecError, match="minimize"):
        plan_file(bad)


def _render(plan: Plan) -> str:
    console = Console(width=200, record=True)
    console.print(plan.render_table())
    return console.export_text()
