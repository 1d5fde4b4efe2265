"""AwsCloud against a fault-injecting moto server on 127.0.0.1 (never real AWS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_sky.clouds import aws, vm
from airflow_provider_sky.clouds.aws import AwsCloud
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    QuotaError,
    Scope,
    TransientError,
)
from tests.cloud_test_helpers import cloud_fixtures
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures

REGIONS = ("us-east-1", "us-west-2")
GPU = "p4d.24xlarge"


@pytest.fixture
def cluster(moto_ec2: MotoEc2) -> Iterator[str]:  # noqa: F811
    """A fresh cluster name; after the test no instance of it may be left (checked via the API)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    moto_ec2.clear_faults()
    left = moto_ec2.live_instances(name, REGIONS)
    for inst in left:  # do not leak into other tests, then fail
        region = inst["Placement"]["AvailabilityZone"][:-1]
        moto_ec2.client(region).terminate_instances(InstanceIds=[inst["InstanceId"]])
    assert not left, f"instances of {name} left running: {[i['InstanceId'] for i in left]}"


# One AwsCloud for the module (clients, key pair and security group are created once).
shared_cloud, cloud = cloud_fixtures(
    lambda server, keys: server.cloud(keys, regions=REGIONS, security_group_name="sky-test-ssh"),
    server="moto_server", fake="moto_ec2",
)  # fmt: skip


def tags_of(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_launch_find_terminate_with_tags(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    labels = {"sky-dag-id": "etl", "sky-run-id": "manual__2025-01-01T00:00:00+00:00", "sky-task-id": "train"}
    handle = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1b", instance_type=GPU, labels=labels)
    assert (handle.cloud, handle.region, handle.zone, handle.instance_type) == ("aws", "us-east-1", "us-east-1b", GPU)
    assert handle.num_nodes == 2 and len(set(handle.node_ids)) == 2
    assert all(handle.node_ips) and handle.extra["private_ips"][0].startswith("10.")
    assert handle.head_ip == handle.extra["public_ips"][0]

    live = {i["InstanceId"]: i for i in moto_ec2.live_instances(cluster, REGIONS)}
    assert set(live) == set(handle.node_ids)
    for rank, iid in enumerate(handle.node_ids):
        tags = tags_of(live[iid])
        assert tags["sky-cluster"] == cluster and tags["sky-managed-by"] == "airflow-provider-sky"
        assert tags["sky-dag-id"] == "etl" and tags["sky-task-id"] == "train"
        assert tags["sky-run-id"] == labels["sky-run-id"]
        assert tags["sky-node-rank"] == str(rank)
        assert tags["Name"] == (f"{cluster}-head" if rank == 0 else f"{cluster}-worker1")
        assert live[iid]["KeyName"] == handle.extra["key_name"]

    found = cloud.find(cluster)
    assert found is not None and found.node_ids == handle.node_ids and found.node_ips == handle.node_ips
    assert cloud.status(cluster) == "UP"
    assert cloud.find("t-no-such-cluster") is None

    cloud.terminate(handle)
    assert cloud.find(cluster) is None
    cloud.terminate(handle)  # idempotent


def test_key_pair_and_security_group_created_once(moto_ec2: MotoEc2, cluster: str, tmp_path: Path) -> None:  # noqa: F811
    cloud = moto_ec2.cloud(tmp_path / "keys", regions=REGIONS, security_group_name=f"sg-{uuid.uuid4().hex[:6]}")
    moto_ec2.reset_stats()
    first = cloud.launch(cluster, 1, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    second = cloud.launch(cluster + "-2", 1, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    fresh = AwsCloud(  # another worker process with the same key dir: finds, does not create
        {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
        endpoint_url=moto_ec2.endpoint, regions=REGIONS, image_owners=("self",), key_dir=cloud.key_dir,
        security_group_name=cloud.security_group_name, poll_interval=0.05,
    )  # fmt: skip
    third = fresh.launch(cluster + "-3", 1, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    try:
        stats = moto_ec2.stats()
        assert stats["ImportKeyPair"] == 1 and stats["CreateSecurityGroup"] == 1
        assert stats["AuthorizeSecurityGroupIngress"] == 1
        ec2 = moto_ec2.client("us-east-1")
        keys = ec2.describe_key_pairs(KeyNames=[first.extra["key_name"]])["KeyPairs"]
        assert len(keys) == 1 and {t["Key"] for t in keys[0].get("Tags", [])} >= {"sky-managed-by"}
        groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [cloud.security_group_name]}])
        assert len(groups["SecurityGroups"]) == 1
        perms = groups["SecurityGroups"][0]["IpPermissions"]
        assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in perms] == [("tcp", 22, 22)]
        assert (cloud.key_dir / "sky-key").stat().st_mode & 0o077 == 0
        assert first.extra["key_name"] == second.extra["key_name"] == third.extra["key_name"]
    finally:
        for h in (first, second, third):
            cloud.terminate(h)
    assert not moto_ec2.live_instances(cluster + "-2", REGIONS) and not moto_ec2.live_instances(cluster + "-3", REGIONS)


def test_client_token_makes_run_instances_idempotent(
    cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    token = aws.client_token(cluster, "us-east-1", "us-east-1c", "m5.large", False, 2, 7, "ami-1")
    assert token == aws.client_token(cluster, "us-east-1", "us-east-1c", "m5.large", False, 2, 7, "ami-1")
    assert token != aws.client_token(cluster, "us-east-1", "us-east-1c", "m5.large", False, 2, 8, "ami-1")
    assert len(token) <= 64

    first = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1c", instance_type="m5.large", attempt=7)
    # A retry whose find() misses the cluster (crash before tags were visible): the token returns
    # the same reservation instead of launching two more instances.
    monkeypatch.setattr(cloud, "find", lambda name, region=None: None)
    moto_ec2.reset_stats()
    again = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1c", instance_type="m5.large", attempt=7)
    assert again.node_ids == first.node_ids
    assert moto_ec2.stats()["RunInstances"] == 1
    assert len(moto_ec2.live_instances(cluster, REGIONS)) == 2
    monkeypatch.undo()
    cloud.terminate(first)


def test_relaunch_with_same_name_adopts_instead_of_creating(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    first = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    moto_ec2.reset_stats()
    second = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large", attempt=1)
    assert second.node_ids == first.node_ids
    assert "RunInstances" not in moto_ec2.stats()
    with pytest.raises(ConfigError, match="exists with 2 nodes"):
        cloud.launch(cluster, 3, None, region="us-east-1", instance_type="m5.large")
    cloud.terminate(first)


def test_spot_launch(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    handle = cloud.launch(cluster, 1, None, region="us-west-2", zone="us-west-2a", instance_type="g5.xlarge", use_spot=True)
    [inst] = moto_ec2.live_instances(cluster, REGIONS)
    assert inst["InstanceLifecycle"] == "spot" and handle.extra["use_spot"] is True
    with pytest.raises(ConfigError, match="cannot be stopped"):
        cloud.stop(handle)
    cloud.terminate(handle)


def test_stop_and_start(cloud: AwsCloud, cluster: str) -> None:
    handle = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    cloud.stop(handle)
    assert cloud.status(cluster) == "STOPPED"
    relaunched = cloud.launch(cluster, 2, None, region="us-east-1", instance_type="m5.large")  # restarts it
    assert relaunched.node_ids == handle.node_ids and cloud.status(cluster) == "UP"
    cloud.stop(relaunched)
    started = cloud.start(relaunched)
    assert started.node_ids == handle.node_ids and started.extra["states"] == ["running"]
    cloud.terminate(started)


def test_image_selection(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str, tmp_path: Path) -> None:  # noqa: F811
    dlami = moto_ec2.ensure_image("us-east-1")
    handle = cloud.launch(cluster, 1, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    assert handle.extra["image_id"] == dlami
    cloud.terminate(handle)

    @dataclass(frozen=True)
    class Res:
        image_id: str
        disk_size: int = 100

    other = moto_ec2.ensure_image("us-east-1", name="my-own-image")
    handle = cloud.launch(cluster, 1, Res(other), region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    assert handle.extra["image_id"] == other
    cloud.terminate(handle)

    nothing = moto_ec2.cloud(cloud.key_dir, security_group_name="sky-test-ssh", regions=REGIONS, default_image_name_pattern="no-such-image-*")
    with pytest.raises(ConfigError, match="no x86_64 image") as err:
        nothing.launch(cluster, 1, None, region="us-east-1", instance_type="m5.large")
    assert "image_id" in (err.value.fix or "")
    fallback = moto_ec2.cloud(
        cloud.key_dir, regions=REGIONS, security_group_name="sky-test-ssh", default_image_name_pattern="no-*", image_id=other
    )
    handle = fallback.launch(cluster, 1, None, region="us-east-1", zone="us-east-1b", instance_type="m5.large")
    assert handle.extra["image_id"] == other
    fallback.terminate(handle)


@pytest.mark.parametrize(
    ("rule", "expected", "scope"),
    [
        ({"code": "InsufficientInstanceCapacity"}, CapacityError, Scope.ZONE),
        ({"code": "InsufficientInstanceCapacity", "market": "spot"}, CapacityError, Scope.ZONE),
        ({"code": "Unsupported", "message": "Your requested instance type is not supported in your requested AZ"},
         CapacityError, Scope.ZONE),
        ({"code": "VcpuLimitExceeded", "message": "You have requested more vCPU capacity than your limit"},
         QuotaError, Scope.REGION),
        ({"code": "InstanceLimitExceeded"}, QuotaError, Scope.REGION),
        ({"code": "MaxSpotInstanceCountExceeded", "market": "spot"}, QuotaError, Scope.REGION),
        ({"code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."},
         CredentialsError, Scope.CLOUD),
        ({"code": "OptInRequired", "message": "You are not subscribed to this service."}, ConfigError, Scope.CLOUD),
        ({"code": "RequestLimitExceeded", "message": "Request limit exceeded."}, TransientError, Scope.NONE),
        ({"code": "InternalError", "message": "An internal error has occurred"}, TransientError, Scope.NONE),
    ],
)  # fmt: skip
def test_run_instances_errors_are_classified(
    cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str, rule: dict, expected: type, scope: Scope  # noqa: F811
) -> None:
    spot = rule.get("market") == "spot"
    moto_ec2.add_fault(region="us-east-1", az="us-east-1d", instance_type=GPU, **rule)
    with pytest.raises(expected) as err:
        cloud.launch(cluster, 1, None, region="us-east-1", zone="us-east-1d", instance_type=GPU, use_spot=spot)
    assert type(err.value) is expected and err.value.scope is scope
    assert (err.value.cloud, err.value.region, err.value.zone) == ("aws", "us-east-1", "us-east-1d")
    if expected in (CredentialsError, ConfigError, QuotaError):
        assert err.value.fix
    assert cloud.find(cluster) is None


def test_auth_failure_on_every_call_is_a_credentials_error(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    moto_ec2.add_fault(action="*", code="AuthFailure", message="AWS was not able to validate the provided access credentials")
    with pytest.raises(CredentialsError, match="AuthFailure") as err:
        cloud.launch(cluster, 1, None, region="us-east-1", instance_type="m5.large")
    assert "aws_access_key_id" in (err.value.fix or "")


def test_instance_type_not_offered_in_region_blocks_region(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    moto_ec2.add_fault(code="InvalidParameterValue", message="Invalid value 'p9.huge' for InstanceType.")
    with pytest.raises(CapacityError) as err:
        cloud.launch(cluster, 1, None, region="us-east-1", zone="us-east-1a", instance_type="p9.huge")
    assert err.value.zone is None and err.value.blocked().zone is None and err.value.blocked().region == "us-east-1"


def test_partial_launch_is_terminated(cloud: AwsCloud, moto_ec2: MotoEc2, cluster: str) -> None:  # noqa: F811
    moto_ec2.add_fault(az="us-east-1a", instance_type=GPU, fit=3)
    with pytest.raises(CapacityError, match="partial launch, 3 of 4") as err:
        cloud.launch(cluster, 4, None, region="us-east-1", zone="us-east-1a", instance_type=GPU)
    assert err.value.zone == "us-east-1a" and err.value.scope is Scope.ZONE
    assert moto_ec2.live_instances(cluster, REGIONS) == []


def test_runners_are_ssh_runners(cloud: AwsCloud, cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = cloud.launch(cluster, 2, None, region="us-east-1", zone="us-east-1a", instance_type="m5.large")
    try:
        runners = cloud.runners(handle)  # built lazily, no connection yet
        assert [r.host for r in runners] == list(handle.node_ips)
        assert all(r.port == 22 and r.host_key_mode == "accept-new" for r in runners)
        monkeypatch.setattr(cloud, "runner_factory", lambda ip, h, rank: (ip, rank))
        assert cloud.runners(handle) == [(handle.node_ips[0], 0), (handle.node_ips[1], 1)]
        monkeypatch.setattr(cloud, "runner_factory", None)
        monkeypatch.setattr(vm, "SSH_RUNNER_MODULE", "airflow_provider_sky.execution.no_such_runner")
        with pytest.raises(ConfigError, match="no_such_runner") as err:
            cloud.runners(handle)
        assert err.value.fix
    finally:
        cloud.terminate(handle)


def test_zones_and_regions(cloud: AwsCloud) -> None:
    assert cloud.regions() == list(REGIONS)
    zones = cloud.zones("us-east-1")
    assert zones[:3] == ["us-east-1a", "us-east-1b", "us-east-1c"]
