"""Failover scenarios on GcpCloud against the GCE protocol fake (127.0.0.1 only).

After every test no instance of the cluster may be left in the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_sky.clouds.errors import CredentialsError, QuotaError
from airflow_provider_sky.clouds.gcp import GcpCloud
from airflow_provider_sky.provision.failover import FailoverExhaustedError, launch_with_failover
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.state import StateStore
from tests.cloud_test_helpers import FAST, cloud_fixtures, launch, store, terminated_cluster  # noqa: F401 - fixtures
from tests.fake_gcp import FakeGce, fake_gce, fake_gce_server  # noqa: F401 - fixtures
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures
from tests.test_gcp_cloud import make_cloud

T4_HOST = "n1-standard-8"
CENTRAL = Placement("gcp", "us-central1", None, T4_HOST, hourly_price=0.73)
EAST = Placement("gcp", "us-east1", None, T4_HOST, hourly_price=0.73)

shared_cloud, cloud = cloud_fixtures(make_cloud, server="fake_gce_server", fake="fake_gce")


@pytest.fixture
def cluster(fake_gce: FakeGce, cloud: GcpCloud) -> Iterator[str]:  # noqa: F811
    yield from terminated_cluster(cloud, fake_gce.clear_faults, fake_gce.live, "instances of {name} left in the fake")


def test_stockout_in_zone_a_lands_in_zone_b(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(zone="us-central1-a", machine_type=T4_HOST, code="ZONE_RESOURCE_POOL_EXHAUSTED")
    handle, attempts = launch(cluster, cloud, store, [CENTRAL])
    assert (handle.region, handle.zone) == ("us-central1", "us-central1-b")
    assert [(a.zone, a.outcome, type(a.error).__name__) for a in attempts] == [
        ("us-central1-a", "failed", "CapacityError"),
        ("us-central1-b", "launched", "NoneType"),
    ]
    assert {i["zone"].rsplit("/", 1)[-1] for i in fake_gce.live(cluster)} == {"us-central1-b"}


def test_regional_quota_moves_to_the_next_region(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(region="us-central1", code="QUOTA_EXCEEDED", metric="NVIDIA_T4_GPUS")
    handle, attempts = launch(cluster, cloud, store, [CENTRAL, EAST])
    assert handle.region == "us-east1" and handle.zone == "us-east1-b"
    assert [(a.region, type(a.error).__name__) for a in attempts] == [("us-central1", "QuotaError"), ("us-east1", "NoneType")]


def test_global_gpu_quota_blocks_gcp_and_the_next_cloud_is_tried(
    cloud: GcpCloud, fake_gce: FakeGce, moto_ec2: MotoEc2, store: StateStore, cluster: str, tmp_path: Path  # noqa: F811
) -> None:
    fake_gce.add_fault(code="QUOTA_EXCEEDED", metric="GPUS_ALL_REGIONS")
    aws = moto_ec2.cloud(tmp_path / "aws-keys", regions=("us-east-1",), security_group_name="sky-gcp-fo")
    aws_placement = Placement("aws", "us-east-1", None, "g4dn.xlarge", hourly_price=0.53)
    handle, attempts = launch_with_failover(
        cluster, 1, [CENTRAL, EAST, aws_placement], {"gcp": cloud, "aws": aws}, store, backoff=FAST
    )
    try:
        assert handle.cloud == "aws" and handle.region == "us-east-1"
        assert [(a.cloud, a.outcome) for a in attempts] == [("gcp", "failed"), ("aws", "launched")]
        error = attempts[0].error
        assert isinstance(error, QuotaError) and error.global_quota and "GPUS_ALL_REGIONS" in error.message
        assert fake_gce.calls["insert"] == 1  # us-east1 was never tried
    finally:
        aws.terminate(handle)
    assert moto_ec2.live_instances(cluster, ("us-east-1",)) == []


def test_permission_denied_fails_fast_with_the_fix(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(code="forbidden")
    with pytest.raises(FailoverExhaustedError) as err:
        launch(cluster, cloud, store, [CENTRAL, EAST])
    assert fake_gce.calls["insert"] == 1
    text = str(err.value)
    assert f"gcp/us-central1/us-central1-a {T4_HOST} -> CredentialsError: forbidden" in text
    assert "roles/compute.instanceAdmin.v1" in text


def test_bad_credentials_fail_before_any_insert(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(method="*", code="unauthorized")
    with pytest.raises(FailoverExhaustedError, match="CredentialsError") as err:
        launch(cluster, cloud, store, [CENTRAL, EAST])
    assert fake_gce.calls["insert"] == 0
    assert isinstance(err.value.attempts[0].error, CredentialsError)


def test_partial_launch_is_cleaned_up_and_next_zone_tried(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(zone="us-central1-a", machine_type=T4_HOST, fit=2, times=2)
    handle, attempts = launch(cluster, cloud, store, [CENTRAL], num_nodes=3)
    assert handle.zone == "us-central1-b" and handle.num_nodes == 3
    assert "partial launch, 2 of 3" in attempts[0].error.message
    live = fake_gce.live(cluster)
    assert len(live) == 3 and {i["zone"].rsplit("/", 1)[-1] for i in live} == {"us-central1-b"}


def test_rate_limit_is_retried_in_the_same_zone(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(code="rateLimitExceeded", times=2)
    handle, attempts = launch(cluster, cloud, store, [CENTRAL])
    assert handle.zone == "us-central1-a" and [a.outcome for a in attempts] == ["retry", "retry", "launched"]
    assert fake_gce.created[cluster] == 1


def test_spot_stockout_falls_back_to_on_demand(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(region="us-central1", spot=True)
    spot = Placement("gcp", "us-central1", None, T4_HOST, use_spot=True, hourly_price=0.2)
    handle, attempts = launch(cluster, cloud, store, [spot, CENTRAL])
    assert handle.extra["use_spot"] is False and handle.zone == "us-central1-a"
    assert [a.use_spot for a in attempts] == [True, True, True, False]


def test_second_launch_adopts_the_running_cluster(cloud: GcpCloud, fake_gce: FakeGce, store: StateStore, cluster: str) -> None:  # noqa: F811
    first, _ = launch(cluster, cloud, store, [EAST], num_nodes=2)
    fake_gce.reset_stats()
    again, attempts = launch(cluster, cloud, store, [CENTRAL, EAST], num_nodes=2)
    assert again.node_ids == first.node_ids and [a.outcome for a in attempts] == ["adopted"]
    assert fake_gce.calls["insert"] == 0 and len(fake_gce.live(cluster)) == 2
