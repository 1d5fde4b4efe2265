"""Failover scenarios on AwsCloud against the fault-injecting moto server (127.0.0.1 only).

After every test no instance of the cluster may be left (asserted through DescribeInstances).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_provider_sky.clouds.aws import AwsCloud
from airflow_provider_sky.clouds.errors import CredentialsError
from airflow_provider_sky.provision.failover import FailoverExhaustedError, launch_with_failover
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.state import StateStore
from tests.cloud_test_helpers import FAST, cloud_fixtures, launch, store, terminated_cluster  # noqa: F401 - fixtures
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures
from tests.test_failover_unit import FakeCloud

REGIONS = ("us-east-1", "us-west-2")
GPU = "p4d.24xlarge"
EAST = Placement("aws", "us-east-1", None, GPU, hourly_price=32.77)
WEST = Placement("aws", "us-west-2", None, GPU, hourly_price=32.77)

shared_cloud, cloud = cloud_fixtures(
    lambda server, keys: server.cloud(keys, regions=REGIONS, security_group_name="sky-fo-ssh"),
    server="moto_server", fake="moto_ec2",
)  # fmt: skip


@pytest.fixture
def cluster(moto_ec2: MotoEc2, cloud: AwsCloud) -> Iterator[str]:  # noqa: F811
    def live(name: str) -> list:
        return moto_ec2.live_instances(name, REGIONS)

    yield from terminated_cluster(cloud, moto_ec2.clear_faults, live, "instances of {name} left running")


def test_zone_capacity_fault_lands_in_next_zone(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(region="us-east-1", az="us-east-1a", instance_type=GPU)
    handle, attempts = launch(cluster, cloud, store, [EAST])
    assert (handle.region, handle.zone) == ("us-east-1", "us-east-1b")
    assert handle.extra["hourly_price"] == 32.77
    assert [(a.zone, a.outcome, type(a.error).__name__) for a in attempts] == [
        ("us-east-1a", "failed", "CapacityError"),
        ("us-east-1b", "launched", "NoneType"),
    ]
    assert [(r.zone, r.error_class) for r in store.list_attempts(cluster)] == [
        ("us-east-1a", "CapacityError"),
        ("us-east-1b", None),
    ]
    assert {i["Placement"]["AvailabilityZone"] for i in moto_ec2.live_instances(cluster, REGIONS)} == {"us-east-1b"}


def test_all_zones_of_a_region_fail_over_to_next_region(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(region="us-east-1", instance_type=GPU)
    moto_ec2.reset_stats()
    handle, attempts = launch(cluster, cloud, store, [EAST, WEST])
    zones = cloud.zones("us-east-1")
    assert handle.region == "us-west-2" and handle.zone == "us-west-2a"
    assert [a.zone for a in attempts] == [*zones, "us-west-2a"]
    assert moto_ec2.stats()["RunInstances"] == len(zones) + 1


def test_quota_blocks_the_region(cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str) -> None:  # noqa: F811
    moto_ec2.add_fault(region="us-east-1", code="VcpuLimitExceeded",
                       message="You have requested more vCPU capacity than your current vCPU limit of 0")  # fmt: skip
    handle, attempts = launch(cluster, cloud, store, [EAST, WEST])
    assert handle.region == "us-west-2"
    assert [(a.region, a.zone, type(a.error).__name__) for a in attempts] == [
        ("us-east-1", "us-east-1a", "QuotaError"),
        ("us-west-2", "us-west-2a", "NoneType"),
    ]


def test_spot_capacity_falls_back_to_on_demand(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(region="us-east-1", market="spot")
    spot = Placement("aws", "us-east-1", None, "g5.xlarge", use_spot=True, hourly_price=0.4)
    on_demand = Placement("aws", "us-east-1", None, "g5.xlarge", hourly_price=1.0)
    handle, attempts = launch(cluster, cloud, store, [spot, on_demand])
    assert handle.extra["use_spot"] is False and handle.zone == "us-east-1a"
    assert [a.use_spot for a in attempts] == [True] * len(cloud.zones("us-east-1")) + [False]


def test_credentials_error_blocks_the_cloud_and_fails_fast(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(action="RunInstances", code="UnauthorizedOperation",
                       message="You are not authorized to perform this operation.")  # fmt: skip
    moto_ec2.reset_stats()
    with pytest.raises(FailoverExhaustedError) as err:
        launch(cluster, cloud, store, [EAST, WEST])
    assert moto_ec2.stats()["RunInstances"] == 1
    text = str(err.value)
    assert f"aws/us-east-1/us-east-1a {GPU} -> CredentialsError: UnauthorizedOperation" in text
    assert "ec2:RunInstances" in text  # the fix names the missing permission

    # With a second cloud the broker moves there instead.
    other = FakeCloud("other")
    handle, attempts = launch_with_failover(cluster + "-x", 1, [EAST, WEST, Placement("other", "r1")],
                                            {"aws": cloud, "other": other}, store, backoff=FAST)  # fmt: skip
    assert handle.cloud == "other" and isinstance(attempts[0].error, CredentialsError)


def test_bad_credentials_fail_before_any_launch(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(action="*", code="AuthFailure", message="AWS was not able to validate the provided access credentials")
    moto_ec2.reset_stats()
    started = time.monotonic()
    with pytest.raises(FailoverExhaustedError, match="AuthFailure") as err:
        launch(cluster, cloud, store, [EAST, WEST])
    assert time.monotonic() - started < 10
    assert "RunInstances" not in moto_ec2.stats()
    assert "aws_access_key_id" in str(err.value)


def test_partial_launch_is_cleaned_up_and_next_zone_tried(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(region="us-east-1", az="us-east-1a", instance_type=GPU, fit=3)
    handle, attempts = launch(cluster, cloud, store, [EAST], num_nodes=4)
    assert handle.zone == "us-east-1b" and handle.num_nodes == 4
    assert "partial launch, 3 of 4" in attempts[0].error.message
    live = moto_ec2.live_instances(cluster, REGIONS)
    assert len(live) == 4 and {i["Placement"]["AvailabilityZone"] for i in live} == {"us-east-1b"}


def test_throttling_is_retried_in_the_same_zone(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(region="us-east-1", code="RequestLimitExceeded", message="Request limit exceeded.", times=2)
    handle, attempts = launch(cluster, cloud, store, [EAST])
    assert handle.zone == "us-east-1a"
    assert [a.outcome for a in attempts] == ["retry", "retry", "launched"]


def test_second_launch_adopts_the_running_cluster(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    first, _ = launch(cluster, cloud, store, [WEST], num_nodes=2)
    moto_ec2.reset_stats()
    again, attempts = launch(cluster, cloud, store, [EAST, WEST], num_nodes=2)
    assert again.node_ids == first.node_ids and [a.outcome for a in attempts] == ["adopted"]
    assert "RunInstances" not in moto_ec2.stats()
    assert len(moto_ec2.live_instances(cluster, REGIONS)) == 2


def test_retry_until_up_waits_for_capacity(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    zones = cloud.zones("us-east-1")
    moto_ec2.add_fault(region="us-east-1", instance_type=GPU, times=len(zones))  # every zone once
    handle, attempts = launch(cluster, cloud, store, [EAST], retry_until_up=True, total_timeout=60)
    assert handle.zone == "us-east-1a"
    assert [a.outcome for a in attempts] == ["failed"] * len(zones) + ["launched"]


def test_everything_exhausted_lists_attempts_and_leaves_nothing(
    cloud: AwsCloud, moto_ec2: MotoEc2, store: StateStore, cluster: str  # noqa: F811
) -> None:
    moto_ec2.add_fault(instance_type=GPU, fit=0)  # every zone accepts, then loses every node
    with pytest.raises(FailoverExhaustedError) as err:
        launch(cluster, cloud, store, [EAST, WEST], num_nodes=2, max_attempts=3)
    assert "max_attempts (3) reached; 3 failed attempt(s)" in str(err.value)
    assert str(err.value).count("partial launch, 0 of 2") == 3
    assert len(store.list_attempts(cluster)) == 3
