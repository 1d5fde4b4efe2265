"""Which consecutive tasks of a DAG run share a cluster: the grouping decision, its place in the
stored plan, re-planning after failover, and the operator's side (rules, failure teardown)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_sky.catalog import load_catalog
from airflow_provider_sky.optimizer import rank_placements
from airflow_provider_sky.provision.cluster_groups import (
    SharingRules,
    decide_groups,
    fit_problem,
    local_placements,
)
from airflow_provider_sky.provision.keepwarm import StartupEstimate
from airflow_provider_sky.provision.naming import cluster_name_for, group_cluster_name
from airflow_provider_sky.provision.planning import plan_for_run, replan_remaining
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, StateStore

AWS = ("aws",)


def _local(*names: str, **resources: Any) -> dict[str, Task]:
    return {n: Task(name=n, run="true", resources={"infra": "local", **resources}) for n in names}


def _chain(*names: str) -> list[tuple[str, str]]:
    return list(itertools.pairwise(names))


def _aws_place(region: str, itype: str, price: float, spot: bool = False, hours: float = 1.0) -> dict[str, Any]:
    return {"cloud": "aws", "region": region, "zone": None, "instance_type": itype, "accelerators": None,
            "use_spot": spot, "hourly_price": price, "cost": price * hours}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 's.db'}")


# ---- the decision -----------------------------------------------------------------------------
def test_a_compatible_chain_is_one_group_named_after_its_first_task() -> None:
    tasks = _local("prep", "train", "report")
    got = decide_groups(tasks, _chain("prep", "train", "report"), local_placements(tasks), dag_id="d", run_id="r")
    name = group_cluster_name("d", "r", "prep")
    assert name == cluster_name_for("d", "prep", "r")  # the first task's own name: retries and the reaper know it
    assert got.groups == {name: ["prep", "train", "report"]}
    notes = [got.annotations[t] for t in ("prep", "train", "report")]
    assert [(n["group_first"], n["group_last"], n["shares_with"]) for n in notes] == [
        (True, False, None), (False, False, "prep"), (False, True, "train"),
    ]  # fmt: skip
    assert all(d.share for d in got.decisions)


def test_fan_out_and_fan_in_are_not_grouped() -> None:
    tasks = _local("a", "b", "c", "d")
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    got = decide_groups(tasks, edges, local_placements(tasks), dag_id="d", run_id="r")
    assert got.groups == {} and got.annotations == {}
    assert "fan-out" in got.decision("a", "b").reason
    assert "fan-in" in got.decision("b", "d").reason


def test_opt_out_explicit_down_and_indirect_edges_are_respected() -> None:
    tasks = _local("a", "b", "c")
    edges = _chain("a", "b", "c")
    places = local_placements(tasks)
    opted_out = decide_groups(tasks, edges, places, dag_id="d", run_id="r", rules=SharingRules(excluded=frozenset({"b"})))
    assert opted_out.groups == {}
    ends = decide_groups(tasks, edges, places, dag_id="d", run_id="r", rules=SharingRules(no_handoff=frozenset({"b"})))
    assert ends.groups == {group_cluster_name("d", "r", "a"): ["a", "b"]}  # b joins but does not hand over
    assert "down=True" in ends.decision("b", "c").reason
    indirect = decide_groups(
        tasks, edges, places, dag_id="d", run_id="r", rules=SharingRules(indirect=frozenset({("a", "b")}))
    )
    assert indirect.groups == {group_cluster_name("d", "r", "b"): ["b", "c"]}


def test_different_regions_markets_nodes_or_accelerators_are_not_grouped() -> None:
    catalog = load_catalog()
    tasks = {n: Task(name=n, run="true", resources={"infra": "aws", "cpus": "4+"}) for n in ("u", "v")}
    cases = {
        "different places": {"u": _aws_place("us-east-1", "t3.xlarge", 0.17), "v": _aws_place("us-west-2", "t3.xlarge", 0.17)},
        "different markets": {"u": _aws_place("us-east-1", "t3.xlarge", 0.17), "v": _aws_place("us-east-1", "t3.xlarge", 0.05, spot=True)},
    }  # fmt: skip
    for reason, places in cases.items():
        got = decide_groups(tasks, [("u", "v")], places, dag_id="d", run_id="r", catalog=catalog)
        assert got.groups == {} and reason in got.decision("u", "v").reason
    same = {"u": _aws_place("us-east-1", "t3.xlarge", 0.17), "v": _aws_place("us-east-1", "t3.xlarge", 0.17)}
    assert decide_groups(tasks, [("u", "v")], same, dag_id="d", run_id="r", catalog=catalog).groups
    two_nodes = {**tasks, "v": Task(name="v", run="true", num_nodes=2, resources={"infra": "aws", "cpus": "4+"})}
    got = decide_groups(two_nodes, [("u", "v")], same, dag_id="d", run_id="r", catalog=catalog)
    assert got.groups == {} and "node counts" in got.decision("u", "v").reason
    gpu = {**tasks, "v": Task(name="v", run="true", resources={"infra": "aws", "accelerators": "T4:1"})}
    got = decide_groups(gpu, [("u", "v")], same, dag_id="d", run_id="r", catalog=catalog)
    assert got.groups == {} and "accelerators T4:1" in got.decision("u", "v").reason


def test_an_instance_that_does_not_fit_the_next_task_is_not_shared() -> None:
    catalog = load_catalog()
    small = _aws_place("us-east-1", "t3.medium", 0.0416)
    big_task = Task(name="v", run="true", resources={"infra": "aws", "cpus": "8+", "memory": "32+"})
    assert fit_problem(small, big_task, catalog) is not None
    assert fit_problem(_aws_place("us-east-1", "m6i.2xlarge", 0.384), big_task, catalog) is None
    tasks = {"u": Task(name="u", run="true", resources={"infra": "aws", "cpus": "2+"}), "v": big_task}
    places = {"u": small, "v": _aws_place("us-east-1", "m6i.2xlarge", 0.384)}
    got = decide_groups(tasks, [("u", "v")], places, dag_id="d", run_id="r", catalog=catalog)
    assert got.groups == {} and "does not fit" in got.decision("u", "v").reason


def test_a_bigger_instance_is_shared_only_while_the_saved_cold_start_pays_for_it(store: StateStore) -> None:
    def tasks(hours: float) -> dict[str, Task]:
        return {
            "prep": Task(name="prep", run="true", resources={"infra": "aws/us-east-1", "cpus": "4+"}),
            "check": Task(name="check", run="true", estimated_hours=hours, resources={"infra": "aws/us-east-1", "cpus": "2+"}),
        }  # fmt: skip

    short = plan_for_run(store, "d", "short", tasks(0.01), [("prep", "check")], clouds=AWS, sharing=SharingRules())
    assert short is not None and short["cluster_groups"]  # seconds on a bigger box < a cold start
    prep, check = short["tasks"]["prep"], short["tasks"]["check"]
    assert check["instance_type"] == prep["instance_type"]  # moved onto the group's instance...
    assert check["hourly_price"] == prep["hourly_price"]
    assert check["cost"] == pytest.approx(prep["hourly_price"] * 0.01)  # ...and repriced
    long = plan_for_run(store, "d", "long", tasks(10.0), [("prep", "check")], clouds=AWS, sharing=SharingRules())
    assert long is not None and long["cluster_groups"] == {}
    assert long["tasks"]["check"]["instance_type"] != long["tasks"]["prep"]["instance_type"]
    assert "cluster_group" not in long["tasks"]["check"]


def test_the_measured_cold_start_enters_the_cost_model() -> None:
    catalog = load_catalog()
    tasks = {
        "u": Task(name="u", run="true", resources={"infra": "aws", "cpus": "4+"}),
        "v": Task(name="v", run="true", resources={"infra": "aws", "cpus": "2+"}),
    }
    places = {"u": _aws_place("us-east-1", "t3.xlarge", 0.1664), "v": _aws_place("us-east-1", "t3.medium", 0.0416, hours=0.02)}
    slow = StartupEstimate(provision_seconds=900, setup_seconds=0, provision_samples=3, setup_samples=0)
    fast = StartupEstimate(provision_seconds=5, setup_seconds=0, provision_samples=3, setup_samples=0)
    shared = decide_groups(tasks, [("u", "v")], places, dag_id="d", run_id="r", catalog=catalog, startup=slow)
    separate = decide_groups(tasks, [("u", "v")], places, dag_id="d", run_id="r", catalog=catalog, startup=fast)
    assert shared.decision("u", "v").share and shared.decision("u", "v").saves_usd > 0
    assert not separate.decision("u", "v").share and separate.decision("u", "v").saves_usd < 0
    assert "900s cold start" in shared.decision("u", "v").reason


# ---- the stored plan --------------------------------------------------------------------------
def test_local_only_runs_store_a_plan_only_when_tasks_share(store: StateStore) -> None:
    tasks = _local("a", "b")
    assert plan_for_run(store, "d", "r0", tasks, [("a", "b")], clouds=("local",)) is None  # no rules: as before
    assert plan_for_run(store, "d", "r1", tasks, [], clouds=("local",), sharing=SharingRules()) is None
    plan = plan_for_run(store, "d", "r2", tasks, [("a", "b")], clouds=("local",), sharing=SharingRules())
    assert plan["cluster_groups"] == {group_cluster_name("d", "r2", "a"): ["a", "b"]}
    again = plan_for_run(store, "d", "r2", tasks, [("a", "b")], clouds=("local",), sharing=SharingRules())
    assert again == plan and store.get_plan_record("d", "r2").version == 1


def test_a_plan_stored_without_groups_gets_them_once(store: StateStore) -> None:
    tasks = {n: Task(name=n, run="true", resources={"infra": "aws/us-east-1", "cpus": "4+"}) for n in ("a", "b")}
    first = plan_for_run(store, "d", "r", tasks, [("a", "b")], clouds=AWS)  # e.g. planned by a transfer task
    assert "cluster_groups" not in first
    grouped = plan_for_run(store, "d", "r", tasks, [("a", "b")], clouds=AWS, sharing=SharingRules())
    assert grouped["cluster_groups"] == {group_cluster_name("d", "r", "a"): ["a", "b"]}
    assert store.get_plan_record("d", "r").version == 2
    plan_for_run(store, "d", "r", tasks, [("a", "b")], clouds=AWS, sharing=SharingRules())
    assert store.get_plan_record("d", "r").version == 2


# ---- re-planning after failover ---------------------------------------------------------------
def _moved_region(task: Task, planned: str) -> tuple[str, str]:
    other = next(p for p in rank_placements(task, clouds=AWS) if p.region != planned)
    return other.region, other.instance_type


def test_after_failover_the_group_follows_the_moved_cluster_when_the_data_does(store: StateStore) -> None:
    tasks = {
        "a": Task(name="a", run="true", resources={"infra": "aws", "cpus": "4+"}, outputs={"x": 500}),
        "b": Task(name="b", run="true", resources={"infra": "aws", "cpus": "4+"}, outputs={"y": 500}),
        "c": Task(name="c", run="true", resources={"infra": "aws", "cpus": "4+"}),
    }
    edges = _chain("a", "b", "c")
    plan = plan_for_run(store, "d", "r", tasks, edges, clouds=AWS, sharing=SharingRules())
    name = group_cluster_name("d", "r", "a")
    assert plan["cluster_groups"] == {name: ["a", "b", "c"]}
    region, itype = _moved_region(tasks["a"], plan["tasks"]["a"]["region"])
    moved = replan_remaining(store, "d", "r", tasks, edges, {"a": ("aws", region, itype, False)}, clouds=AWS)
    assert {t: p["region"] for t, p in moved["tasks"].items()} == dict.fromkeys("abc", region)
    assert moved["cluster_groups"] == {name: ["a", "b", "c"]}  # same cluster name: b and c follow it
    assert store.get_plan_record("d", "r").version == 2


def test_after_failover_a_task_that_cannot_follow_gets_its_own_cluster(store: StateStore) -> None:
    a = Task(name="a", run="true", resources={"infra": "aws", "cpus": "4+"})
    plan0 = plan_for_run(store, "d", "probe", {"a": a}, [], clouds=AWS)
    home = plan0["tasks"]["a"]["region"]
    pinned = {"infra": f"aws/{home}", "cpus": "4+"}
    tasks = {"a": a, "b": Task(name="b", run="true", resources=pinned), "c": Task(name="c", run="true", resources=pinned)}
    edges = _chain("a", "b", "c")
    plan = plan_for_run(store, "d", "r", tasks, edges, clouds=AWS, sharing=SharingRules())
    assert plan["cluster_groups"] == {group_cluster_name("d", "r", "a"): ["a", "b", "c"]}
    region, itype = _moved_region(a, home)
    moved = replan_remaining(store, "d", "r", tasks, edges, {"a": ("aws", region, itype, False)}, clouds=AWS)
    # b is pinned to the old region: the group breaks there; a ends alone (and tears its cluster
    # down), b and c share a new cluster named after b.
    assert moved["cluster_groups"] == {group_cluster_name("d", "r", "b"): ["b", "c"]}
    assert "cluster_group" not in moved["tasks"]["a"]


def test_started_tasks_keep_their_decisions_on_a_re_plan() -> None:
    tasks = _local("a", "b", "c")
    edges = _chain("a", "b", "c")
    places = local_placements(tasks)
    name = group_cluster_name("d", "r", "a")
    old = {"a": {"cluster_group": name}, "b": {"cluster_group": name}, "c": {}}  # c had its own cluster
    got = decide_groups(tasks, edges, places, dag_id="d", run_id="r", previous=old, started={"a", "b", "c"})
    assert got.groups == {name: ["a", "b"]}  # c already runs on its own: not pulled in
    fresh = decide_groups(tasks, edges, places, dag_id="d", run_id="r", previous=old, started={"a"})
    assert fresh.groups == {name: ["a", "b", "c"]}  # b and c have not started: decided afresh
    never = {"a": {}, "b": {}, "c": {}}
    kept_apart = decide_groups(tasks, edges, places, dag_id="d", run_id="r", previous=never, started={"a"})
    assert not kept_apart.decision("a", "b").share  # a started alone: b does not join afterwards
    assert kept_apart.groups == {group_cluster_name("d", "r", "b"): ["b", "c"]}


# ---- the operator -----------------------------------------------------------------------------
def _dag() -> Any:
    import pendulum
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_provider_sky.operators.sky import SkyTaskOperator

    with DAG("groups_op", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        ops = {
            "a": SkyTaskOperator(task_id="a", run="echo a-ran", resources={"infra": "local"}, poll_interval=0.1),
            "b": SkyTaskOperator(task_id="b", run="echo b", resources={"infra": "local"}, poll_interval=0.1),
            "c": SkyTaskOperator(task_id="c", run="echo c", resources={"infra": "local"}, share_cluster=False),
            "d": SkyTaskOperator(task_id="d", run="echo d", resources={"infra": "local"}, cluster_name="named-d"),
            "e": SkyTaskOperator(task_id="e", run="echo e", resources={"infra": "local"}, down=True),
            "f": SkyTaskOperator(task_id="f", run="echo f", resources={"infra": "local"}),
        }
        gap = EmptyOperator(task_id="gap")
        ops["a"] >> ops["b"] >> ops["c"] >> ops["d"] >> ops["e"] >> gap >> ops["f"]
    return dag, ops


def test_the_dag_gives_the_sharing_rules() -> None:
    from airflow_provider_sky.operators.sky import _down_shared_cluster_on_failure, sharing_rules_of

    dag, ops = _dag()
    rules = sharing_rules_of(dag)
    assert rules.excluded == {"c", "d"}
    assert rules.no_handoff == {"e"}
    assert rules.indirect == {("e", "f")}
    assert _down_shared_cluster_on_failure in ops["a"].on_failure_callback
    assert _down_shared_cluster_on_failure not in ops["d"].on_failure_callback  # a named cluster never shares


def test_operator_hands_the_cluster_on_and_a_final_failure_downstream_tears_it_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_sky.operators.sky import _down_shared_cluster_on_failure
    from airflow_provider_sky.provision.core import SkyCore
    from airflow_provider_sky.provision.settings import SkySettings

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("SKY_STATE_DB_URL", url)
    monkeypatch.setenv("SKY_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    core = SkyCore.from_settings(SkySettings(state_db_url=url, local_dir=str(tmp_path / "local")))
    dag, ops = _dag()

    def context(task_id: str, try_number: int = 1, max_tries: int = 0) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="groups_op", run_id="manual__1", task_id=task_id, map_index=-1,
                             try_number=try_number, max_tries=max_tries)  # fmt: skip
        return {"ti": ti, "dag": dag, "task": ops[task_id]}

    result = ops["a"].execute(context("a"))
    name = group_cluster_name("groups_op", "manual__1", "a")
    assert result["cluster"] == name and result["torn_down"] is False
    assert result["cluster_group"] == {"cluster_group": name, "group_first": True, "group_last": False, "shares_with": None}
    assert core.store.get_cluster(name).status is ClusterStatus.UP
    # b fails before its job (say, its launch) on a try with a retry left: the cluster stays...
    assert ops["b"]._final_try(context("b", try_number=1, max_tries=1)) is False
    # ...and on its last try the failure callback tears the shared cluster down.
    _down_shared_cluster_on_failure(context("b", try_number=2, max_tries=1))
    assert core.store.get_cluster(name).status is ClusterStatus.TERMINATED
    assert not (tmp_path / "local" / "clusters" / name).exists()


def test_sky_airflow_plan_shows_the_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps narrow table cells

    from airflow_provider_sky.cli.main import main

    doc = "resources: {infra: aws/us-east-1, cpus: 4+}\nrun: echo %s\n"
    path = tmp_path / "chain.yaml"
    path.write_text(doc % "a" + "---\n" + doc % "b")
    assert main(["plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    name = group_cluster_name("chain", "plan", "task-0")
    assert plan["cluster_groups"] == {name: ["task-0", "task-1"]}
    assert plan["tasks"]["task-1"]["shares_with"] == "task-0"
    assert main(["plan", str(path), "--json", "--no-share"]) == 0
    assert "cluster_groups" not in json.loads(capsys.readouterr().out)
    assert main(["plan", str(path)]) == 0
    assert f"{name} (first)" in capsys.readouterr().out
