"""Operators on AWS EC2 (moto server on 127.0.0.1): credentials from an Airflow `aws` connection,
failover across zones and regions, the failover history in XCom, and nothing left running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyDownOperator, SkyLaunchClusterOperator
from airflow_provider_sky.state import ClusterStatus
from tests.moto_server import KEY, MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures
from tests.test_operator_lifecycle import TaskStateStore, _context

REGIONS = ("us-east-1", "us-west-2")
TYPE = "m5.large"


@pytest.fixture
def aws_connections(moto_ec2: MotoEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoEc2:  # noqa: F811
    image_id = moto_ec2.ensure_image("us-east-1")
    west_image = moto_ec2.ensure_image("us-west-2")
    assert image_id and west_image
    monkeypatch.setenv("SKY_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_MOTO_AWS",
        json.dumps({"conn_type": "aws", "login": KEY, "password": KEY, "extra": {"endpoint_url": moto_ec2.endpoint}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKY_DEFAULT",
        json.dumps(
            {
                "conn_type": "sky",
                "extra": {
                    "enabled_clouds": "aws",
                    "aws_conn_id": "moto_aws",
                    "region_preferences": ",".join(REGIONS),
                    "aws_image_owners": "self",  # the test AMIs are registered by this account
                    "state_db_url": f"sqlite:///{tmp_path / 'state.db'}",
                },
            }
        ),
    )
    return moto_ec2


def test_launch_fails_over_to_the_next_zone_and_down_leaves_nothing(aws_connections: MotoEc2) -> None:
    aws_connections.add_fault(region="us-east-1", az="us-east-1a", instance_type=TYPE)
    launch = SkyLaunchClusterOperator(
        task_id="launch",
        cluster_name="aws-fo-1",
        resources={"infra": "aws/us-east-1", "instance_type": TYPE},
    )
    result = launch.execute(_context("launch", TaskStateStore()))
    assert (result["cloud"], result["region"]) == ("aws", "us-east-1")
    assert result["zone"] != "us-east-1a" and result["created"] is True
    attempts = SkyHook().core.store.list_attempts("aws-fo-1")
    assert [a.outcome for a in attempts][-1] == "launched"
    assert any(a.zone == "us-east-1a" and a.error_class == "CapacityError" for a in attempts)
    assert len(aws_connections.live_instances("aws-fo-1", REGIONS)) == 1

    SkyDownOperator(task_id="down", cluster_name="aws-fo-1").execute(_context("down", TaskStateStore()))
    assert aws_connections.live_instances("aws-fo-1", REGIONS) == []
    assert SkyHook().core.store.get_cluster("aws-fo-1").status is ClusterStatus.TERMINATED


def test_region_out_of_capacity_ends_with_every_attempt_listed(aws_connections: MotoEc2) -> None:
    aws_connections.add_fault(region="us-east-1", instance_type=TYPE)
    launch = SkyLaunchClusterOperator(
        task_id="launch",
        cluster_name="aws-fo-2",
        resources={"infra": "aws/us-east-1", "instance_type": TYPE},
    )
    with pytest.raises(Exception, match=r"us-east-1a.*CapacityError") as info:
        launch.execute(_context("launch", TaskStateStore()))
    assert "us-east-1b" in str(info.value)
    assert aws_connections.live_instances("aws-fo-2", REGIONS) == []
    assert SkyHook().core.store.get_cluster("aws-fo-2").status is ClusterStatus.TERMINATED


def test_dag_run_is_planned_once_and_tasks_launch_where_the_plan_says(aws_connections: MotoEc2) -> None:
    import pendulum
    from airflow.sdk import DAG

    with DAG("planned", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        prep = SkyLaunchClusterOperator(
            task_id="prep", cluster_name="plan-prep", resources={"infra": "aws", "cpus": "2+", "memory": "4+"}
        )
        train = SkyLaunchClusterOperator(
            task_id="train", cluster_name="plan-train", resources={"infra": "aws/us-west-2", "cpus": "4+"}
        )
        prep >> train
    core = SkyHook().core
    results = {}
    for op in (prep, train):
        ctx = _context(op.task_id, TaskStateStore(), run_id="manual__planned")
        ctx["ti"].dag_id = "planned"
        ctx["dag"] = dag
        results[op.task_id] = op.execute(ctx)
    record = core.store.get_plan_record("planned", "manual__planned")
    assert record is not None and record.version == 1  # computed once, reused by the second task
    plan = record.plan
    assert set(plan["tasks"]) == {"prep", "train"}
    for task_id, result in results.items():
        placed = plan["tasks"][task_id]
        assert (result["cloud"], result["region"], result["instance_type"]) == (
            placed["cloud"],
            placed["region"],
            placed["instance_type"],
        )
        assert result["hourly_price"] == pytest.approx(placed["hourly_price"])
    assert results["train"]["region"] == "us-west-2"
    for name in ("plan-prep", "plan-train"):
        core.down(name)
        assert aws_connections.live_instances(name, REGIONS) == []
