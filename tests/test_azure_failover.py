"""Failover scenarios on AzureCloud against the ARM protocol fake (127.0.0.1 only).

After every test no VM, NIC or public IP of the cluster may be left in the fake.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_sky.clouds.azure import AzureCloud
from airflow_provider_sky.clouds.errors import CredentialsError
from airflow_provider_sky.provision.failover import FailoverExhaustedError, launch_with_failover
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.state import StateStore
from tests.cloud_test_helpers import FAST, cloud_fixtures, launch, store, terminated_cluster  # noqa: F401 - fixtures
from tests.fake_azure import FakeArm, fake_arm, fake_arm_server  # noqa: F401 - fixtures
from tests.test_azure_cloud import make_cloud
from tests.test_failover_unit import FakeCloud

SIZE = "Standard_NC24ads_A100_v4"
EAST = Placement("azure", "eastus", None, SIZE, hourly_price=3.67)
WEST = Placement("azure", "westus2", None, SIZE, hourly_price=3.67)

shared_cloud, cloud = cloud_fixtures(make_cloud, server="fake_arm_server", fake="fake_arm")


@pytest.fixture
def cluster(fake_arm: FakeArm, cloud: AzureCloud) -> Iterator[str]:  # noqa: F811
    yield from terminated_cluster(cloud, fake_arm.clear_faults, fake_arm.live, "resources of {name} left in the fake")


def test_zonal_allocation_failure_lands_in_next_zone(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="ZonalAllocationFailed", location="eastus", zone="1", size=SIZE)
    handle, attempts = launch(cluster, cloud, store, [EAST])
    assert (handle.region, handle.zone) == ("eastus", "eastus-2")
    assert [(a.zone, a.outcome, type(a.error).__name__) for a in attempts] == [
        ("eastus-1", "failed", "CapacityError"),
        ("eastus-2", "launched", "NoneType"),
    ]
    assert {vm["zones"][0] for vm in fake_arm.vms(cluster)} == {"2"}


@pytest.mark.parametrize("code", ["SkuNotAvailable", "AllocationFailed"])
def test_sku_or_allocation_failure_moves_to_the_next_region(
    cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str, code: str  # noqa: F811
) -> None:
    fake_arm.add_fault(code=code, location="eastus", size=SIZE)
    handle, attempts = launch(cluster, cloud, store, [EAST, WEST])
    assert handle.region == "westus2" and handle.zone == "westus2-1"
    assert [(a.region, a.zone, type(a.error).__name__) for a in attempts] == [
        ("eastus", "eastus-1", "CapacityError"),  # the other eastus zones are not tried
        ("westus2", "westus2-1", "NoneType"),
    ]


def test_quota_moves_to_the_next_region(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="OperationNotAllowed", location="eastus")
    handle, attempts = launch(cluster, cloud, store, [EAST, WEST])
    assert handle.region == "westus2"
    assert [type(a.error).__name__ for a in attempts] == ["QuotaError", "NoneType"]
    assert "exceeding approved" in attempts[0].error.message and attempts[0].error.fix


def test_authorization_failure_fails_fast_with_the_fix(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="AuthorizationFailed")
    with pytest.raises(FailoverExhaustedError) as err:
        launch(cluster, cloud, store, [EAST, WEST])
    assert fake_arm.calls["virtualMachines.PUT"] == 1
    text = str(err.value)
    assert f"azure/eastus/eastus-1 {SIZE} -> CredentialsError: AuthorizationFailed" in text
    assert "Virtual Machine Contributor" in text

    # With a second cloud in the placement list the broker moves there instead.
    other = FakeCloud("other")
    handle, attempts = launch_with_failover(cluster + "-x", 1, [EAST, WEST, Placement("other", "r1")],
                                            {"azure": cloud, "other": other}, store, backoff=FAST)  # fmt: skip
    assert handle.cloud == "other" and isinstance(attempts[0].error, CredentialsError)
    assert fake_arm.live(cluster + "-x") == []


def test_partial_launch_is_cleaned_up_and_next_zone_tried(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="ZonalAllocationFailed", zone="1", fit=2, times=1)
    handle, attempts = launch(cluster, cloud, store, [EAST], num_nodes=3)
    assert handle.zone == "eastus-2" and handle.num_nodes == 3
    assert "partial launch, 2 of 3" in attempts[0].error.message
    vms = fake_arm.vms(cluster)
    assert len(vms) == 3 and {vm["zones"][0] for vm in vms} == {"2"}
    assert len(fake_arm.live(cluster)) == 9  # nothing of the failed zone-1 attempt remains


def test_throttling_is_retried_in_the_same_zone(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="TooManyRequests", times=2)
    handle, attempts = launch(cluster, cloud, store, [EAST])
    assert handle.zone == "eastus-1" and [a.outcome for a in attempts] == ["retry", "retry", "launched"]


def test_second_launch_adopts_the_running_cluster(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    first, _ = launch(cluster, cloud, store, [WEST], num_nodes=2)
    fake_arm.reset_stats()
    again, attempts = launch(cluster, cloud, store, [EAST, WEST], num_nodes=2)
    assert again.node_ids == first.node_ids and [a.outcome for a in attempts] == ["adopted"]
    assert fake_arm.calls["virtualMachines.PUT"] == 0 and len(fake_arm.vms(cluster)) == 2


def test_everything_exhausted_leaves_nothing(cloud: AzureCloud, fake_arm: FakeArm, store: StateStore, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="ZonalAllocationFailed")
    with pytest.raises(FailoverExhaustedError) as err:
        launch(cluster, cloud, store, [EAST, WEST], num_nodes=2)
    assert str(err.value).count("ZonalAllocationFailed") >= 6  # 3 zones x 2 regions
    assert fake_arm.live(cluster) == []
