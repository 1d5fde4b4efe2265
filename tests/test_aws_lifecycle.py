"""AWS lifecycle pieces on a moto server (127.0.0.1): `list_managed` for the orphan reaper (all
enabled regions, only our tags), `sky-airflow gc` reaping a planted orphan while a live owned
cluster stays, and the instance shutdown behaviour that node-side autostop relies on."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from airflow_provider_sky.cli.gc import add_gc_parser
from airflow_provider_sky.clouds.aws import AwsCloud
from airflow_provider_sky.provision import autostop, reaper
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.state import ClusterStatus, StateStore
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures

REGIONS = ("us-east-1", "us-west-2")
TYPE = "m5.large"
OURS = {"sky-managed-by": "airflow-provider-sky"}


@pytest.fixture(scope="module")
def shared_cloud(moto_server: MotoEc2, tmp_path_factory: pytest.TempPathFactory) -> AwsCloud:  # noqa: F811
    """One cloud for the module: its per-region clients (38 regions to list) are made once."""
    return moto_server.cloud(tmp_path_factory.mktemp("keys"), regions=REGIONS)


@pytest.fixture
def cloud(shared_cloud: AwsCloud, moto_ec2: MotoEc2) -> AwsCloud:  # noqa: F811
    return shared_cloud


@pytest.fixture
def names(moto_ec2: MotoEc2) -> Iterator[list[str]]:  # noqa: F811
    """Cluster names a test creates; whatever of them is left at the end is terminated."""
    made: list[str] = []
    yield made
    for region in ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1"):
        ec2 = moto_ec2.client(region)
        for name in made:
            found = ec2.describe_instances(
                Filters=[
                    {"Name": "tag:sky-cluster", "Values": [name]},
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
                ]
            )
            ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
            if ids:
                ec2.terminate_instances(InstanceIds=ids)


def name_for(names: list[str], prefix: str) -> str:
    names.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
    return names[-1]


def plant(moto: MotoEc2, region: str, name: str, tags: dict[str, str] | None = None) -> str:
    """An instance started behind our back (e.g. by a worker that died), tagged as given."""
    ec2 = moto.client(region)
    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}])
    all_tags = {"sky-cluster": name, **OURS, "sky-dag-id": "etl", "sky-task-id": "train", **(tags or {})}
    reply = ec2.run_instances(
        ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}],
    )  # fmt: skip
    return reply["Instances"][0]["InstanceId"]


def live(moto: MotoEc2, name: str, regions: tuple[str, ...] = REGIONS) -> list[str]:
    return [i["InstanceId"] for i in moto.live_instances(name, regions)]


def test_list_managed_covers_all_enabled_regions_and_only_our_instances(
    cloud: AwsCloud,
    moto_ec2: MotoEc2,  # noqa: F811
    names: list[str],
) -> None:
    owned = name_for(names, "owned")
    handle = cloud.launch(owned, 2, None, region="us-east-1", instance_type=TYPE, labels={"sky-dag-id": "d"})
    stray = name_for(names, "stray")
    stray_id = plant(moto_ec2, "eu-west-1", stray)  # a region outside the configured ones
    foreign = name_for(names, "foreign")
    plant(moto_ec2, "us-east-1", foreign, {"sky-managed-by": "someone-else"})

    listed = {m["name"]: m for m in cloud.list_managed()}
    assert owned in listed and stray in listed and foreign not in listed
    mine = listed[owned]
    assert (mine["cloud"], mine["region"], mine["status"]) == ("aws", "us-east-1", "UP")
    assert mine["handle"].node_ids == handle.node_ids and mine["handle"].num_nodes == 2
    assert mine["labels"]["sky-dag-id"] == "d" and "sky-node-rank" not in mine["labels"]
    assert mine["created_at"].tzinfo is not None
    assert datetime.now(UTC) - mine["created_at"] < timedelta(hours=1)
    assert listed[stray]["region"] == "eu-west-1" and listed[stray]["handle"].node_ids == (stray_id,)
    # Only the configured regions when asked to.
    narrow = moto_ec2.cloud(cloud.key_dir, regions=REGIONS, list_all_regions=False)
    assert stray not in {m["name"] for m in narrow.list_managed()}
    cloud.terminate(handle)
    assert owned not in {m["name"] for m in cloud.list_managed()}


def test_reaper_terminates_orphans_and_leaves_a_live_owned_cluster(
    cloud: AwsCloud,
    moto_ec2: MotoEc2,  # noqa: F811
    names: list[str],
    tmp_path: Path,
) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    keep = name_for(names, "shared")  # a user-named cluster, UP in the store: meant for reuse
    kept = cloud.launch(keep, 1, None, region="us-east-1", instance_type=TYPE)
    store.upsert_cluster(keep, cloud="aws", region="us-east-1", status=ClusterStatus.UP, handle=kept.to_json(),
                         owner_dag_id="etl", owner_run_id="r1", owner_task_id="prep")  # fmt: skip
    done = name_for(names, "done")  # the store says TERMINATED, the instance is still there
    cloud.launch(done, 1, None, region="us-west-2", instance_type=TYPE)
    store.upsert_cluster(done, cloud="aws", region="us-west-2", status=ClusterStatus.TERMINATED)
    lost = name_for(names, "lost")  # unknown to the store
    plant(moto_ec2, "us-west-2", lost)

    report = reaper.reap(store, {"aws": cloud}, dry_run=True, min_age=timedelta(0))
    reasons = {o.cluster.name: o.reason for o in report.orphans}
    assert reasons[lost] == "unknown to the state store" and "TERMINATED" in reasons[done]
    assert keep not in reasons and report.terminated == [] and not report.skipped_clouds
    assert live(moto_ec2, lost) and live(moto_ec2, done)  # dry run touched nothing

    report = reaper.reap(store, {"aws": cloud}, dry_run=False, min_age=timedelta(0))
    assert {lost, done} <= set(report.terminated) and keep not in report.terminated
    assert live(moto_ec2, lost) == [] and live(moto_ec2, done) == []
    assert live(moto_ec2, keep) == list(kept.node_ids)
    assert store.get_cluster(lost).status is ClusterStatus.TERMINATED
    assert "reaped by gc" in store.get_cluster(lost).status_reason
    assert store.get_cluster(lost).owner_dag_id == "etl"  # from the tags
    cloud.terminate(kept)


def test_gc_cli_on_aws_lists_then_reaps_a_planted_orphan(
    moto_ec2: MotoEc2,  # noqa: F811
    names: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SKY_KEY_DIR", str(tmp_path / "keys"))
    orphan = name_for(names, "cli-orphan")
    plant(moto_ec2, "ap-south-1", orphan)
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-db")
    parser.add_argument("--clouds")
    add_gc_parser(parser.add_subparsers(dest="command", required=True))

    def gc(*argv: str) -> dict:
        args = parser.parse_args(["--state-db", f"sqlite:///{tmp_path / 's.db'}", "--clouds", "aws", "gc",
                                  "--json", "--min-age", "0", *argv])  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args, Console(file=io.StringIO())) == 0
        return json.loads(out.getvalue())

    dry = gc("--dry-run")  # boto3 reaches moto through AWS_ENDPOINT_URL, credentials from the env
    assert orphan in {o["name"] for o in dry["orphans"]} and dry["terminated"] == []
    assert live(moto_ec2, orphan, ("ap-south-1",))
    done = gc()
    assert orphan in done["terminated"]
    assert live(moto_ec2, orphan, ("ap-south-1",)) == []


def shutdown_behavior(moto: MotoEc2, region: str, instance_id: str) -> str:
    reply = moto.client(region).describe_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    return reply["InstanceInitiatedShutdownBehavior"]["Value"]


@pytest.mark.parametrize(
    ("spec", "at_launch", "prepared"),
    [
        ({"autostop": {"idle_minutes": 10, "down": True}}, "terminate", "terminate"),
        ({"autostop": {"idle_minutes": 10}}, "stop", "stop"),
        ({}, "stop", "stop"),
        ({"use_spot": True, "autostop": {"idle_minutes": 10}}, "terminate", "terminate"),  # spot cannot stop
    ],
)
def test_shutdown_behaviour_follows_autostop(
    cloud: AwsCloud,
    moto_ec2: MotoEc2,  # noqa: F811
    names: list[str],
    spec: dict,
    at_launch: str,
    prepared: str,
) -> None:
    resources = Resources.from_dict({"infra": "aws/us-east-1", "instance_type": TYPE, **spec})
    handle = cloud.launch(name_for(names, "autostop"), 2, resources)
    for instance_id in handle.node_ids:
        assert shutdown_behavior(moto_ec2, "us-east-1", instance_id) == at_launch
    # What provision.autostop does before starting the agent: the behaviour for the agent's `down`.
    down = bool(resources.autostop and resources.autostop.down)
    action = autostop.autostop_action(cloud, handle, [object()], not down)  # flipped by a reusing task
    assert action["command"] == autostop.SHUTDOWN_COMMAND
    flipped = "terminate" if (not down or resources.use_spot) else "stop"
    assert {shutdown_behavior(moto_ec2, "us-east-1", i) for i in handle.node_ids} == {flipped}
    assert cloud.prepare_autostop(handle, down) == prepared
    assert {shutdown_behavior(moto_ec2, "us-east-1", i) for i in handle.node_ids} == {prepared}
    cloud.terminate(handle)


def ingress(moto: MotoEc2, group_id: str) -> set[tuple[int, int, str]]:
    [group] = moto.client("us-east-1").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return {(p["FromPort"], p["ToPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]}


def test_resources_ports_open_in_a_cluster_group_removed_at_terminate(
    moto_ec2: MotoEc2,  # noqa: F811
    names: list[str],
    tmp_path: Path,
) -> None:
    group_name = f"sky-test-{uuid.uuid4().hex[:6]}"
    cloud = moto_ec2.cloud(tmp_path / "keys", regions=REGIONS, security_group_name=group_name, ssh_port=2222,
                           ssh_cidrs=("10.0.0.0/8",), list_all_regions=False)  # fmt: skip
    resources = Resources.from_dict(
        {"infra": "aws/us-east-1", "instance_type": TYPE, "ports": [8080, "10000-10010"]}
    )
    name = name_for(names, "ports")
    handle = cloud.launch(name, 1, resources)
    [inst] = moto_ec2.live_instances(name, REGIONS)
    groups = {g["GroupName"]: g["GroupId"] for g in inst["SecurityGroups"]}
    ports_group = cloud.ports_group_name(name)
    assert set(groups) == {group_name, ports_group}
    assert ingress(moto_ec2, groups[ports_group]) == {(8080, 8080, "0.0.0.0/0"), (10000, 10010, "0.0.0.0/0")}
    assert ingress(moto_ec2, groups[group_name]) == {(2222, 2222, "10.0.0.0/8")}  # SSH only, on ssh_port
    plain = cloud.launch(name_for(names, "noports"), 1, Resources.from_dict({"infra": "aws/us-east-1",
                                                                            "instance_type": TYPE}))  # fmt: skip
    [other] = moto_ec2.live_instances(plain.cluster_name, REGIONS)
    assert [g["GroupName"] for g in other["SecurityGroups"]] == [group_name]  # no ports: no extra group
    cloud.terminate(handle)
    cloud.terminate(plain)
    left = moto_ec2.client("us-east-1").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [ports_group]}]
    )["SecurityGroups"]
    assert left == []
