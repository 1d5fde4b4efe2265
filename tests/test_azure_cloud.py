"""AzureCloud through the Azure SDKs against the ARM protocol fake on 127.0.0.1 (never real Azure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_provider_sky.clouds import vm
from airflow_provider_sky.clouds.azure import AzureCloud
from airflow_provider_sky.clouds.azure_resources import StaticTokenCredential, vm_name
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    QuotaError,
    Scope,
    TransientError,
)
from tests.cloud_test_helpers import cloud_fixtures, purged_cluster
from tests.fake_azure import SUBSCRIPTION, FakeArm, fake_arm, fake_arm_server  # noqa: F401 - fixtures

REGIONS = ("eastus", "westus2")
D4 = "Standard_D4s_v5"
A100 = "Standard_NC24ads_A100_v4"


@dataclass(frozen=True)
class Res:
    accelerators: dict = field(default_factory=dict)
    image_id: str | None = None
    disk_size: int = 128


def make_cloud(fake: FakeArm, key_dir: Path, **kw) -> AzureCloud:
    kw.setdefault("regions", REGIONS)
    return AzureCloud(SUBSCRIPTION, credential=StaticTokenCredential("fake-token"), base_url=fake.endpoint,
                      connection_verify=str(fake.ca_file), key_dir=key_dir, poll_interval=0.01, api_retries=0,
                      launch_timeout=20, **kw)  # fmt: skip


shared_cloud, cloud = cloud_fixtures(make_cloud, server="fake_arm_server", fake="fake_arm")


@pytest.fixture
def cluster(fake_arm: FakeArm) -> Iterator[str]:  # noqa: F811
    """A fresh cluster name; after the test no VM, NIC or public IP of it may be left in the fake."""
    yield from purged_cluster(fake_arm, "resources", key="id")


def test_launch_find_terminate_with_tags(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    labels = {"sky-dag-id": "etl", "sky-run-id": "manual__2025-01-01T00:00:00+00:00", "sky-task-id": "train"}
    handle = cloud.launch(cluster, 2, None, region="eastus", zone="eastus-2", instance_type=D4, labels=labels)
    assert (handle.cloud, handle.region, handle.zone, handle.instance_type) == ("azure", "eastus", "eastus-2", D4)
    assert handle.node_ids == (f"{cluster}-0", f"{cluster}-1") and handle.extra["resource_group"] == "sky-airflow-eastus"
    assert all(handle.node_ips) and handle.extra["private_ips"][0].startswith("10.100.")
    assert handle.head_ip == handle.extra["public_ips"][0]

    vms = {vm["name"]: vm for vm in fake_arm.vms(cluster)}
    assert set(vms) == set(handle.node_ids)
    for rank, name in enumerate(handle.node_ids):
        vm = vms[name]
        assert {k: vm["tags"][k] for k in labels} == labels  # Azure tags keep the exact values
        assert vm["tags"]["sky-cluster"] == cluster and vm["tags"]["sky-managed-by"] == "airflow-provider-sky"
        assert vm["tags"]["sky-node-rank"] == str(rank) and vm["zones"] == ["2"]
        props = vm["properties"]
        assert props["storageProfile"]["imageReference"]["offer"] == "0001-com-ubuntu-server-jammy"
        assert props["osProfile"]["adminUsername"] == "azureuser" and "priority" not in props
        assert props["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] == "Delete"
    assert len(fake_arm.live(cluster)) == 6  # 2 VMs, 2 NICs, 2 public IPs

    found = cloud.find(cluster)
    assert found is not None and found.node_ids == handle.node_ids and found.node_ips == handle.node_ips
    assert cloud.status(cluster) == "UP" and cloud.find("t-no-such-cluster") is None
    [managed] = [m for m in cloud.list_managed() if m["name"] == cluster]
    assert managed["cloud"] == "azure" and managed["region"] == "eastus"
    assert managed["labels"]["sky-run-id"] == labels["sky-run-id"]

    cloud.terminate(handle)
    assert cloud.find(cluster) is None and fake_arm.live(cluster) == []
    cloud.terminate(handle)  # idempotent


def test_second_create_is_idempotent(
    cloud: AzureCloud, fake_arm: FakeArm, cluster: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    first = cloud.launch(cluster, 2, None, region="eastus", zone="eastus-1", instance_type=D4, attempt=1)
    fake_arm.reset_stats()
    again = cloud.launch(cluster, 2, None, region="eastus", instance_type=D4, attempt=2)  # found: adopted
    assert again.node_ids == first.node_ids and fake_arm.calls["virtualMachines.PUT"] == 0

    # A retry whose adoption lookup misses the cluster: same names, so ARM's idempotent PUTs update in place.
    real_find = cloud.find
    blind = [True]

    def find_once_blind(name: str, region: str | None = None):
        if blind.pop() if blind else False:
            return None
        return real_find(name, region)

    monkeypatch.setattr(cloud, "find", find_once_blind)
    retry = cloud.launch(cluster, 2, None, region="eastus", zone="eastus-1", instance_type=D4, attempt=1)
    monkeypatch.undo()
    assert retry.node_ids == first.node_ids and fake_arm.calls["virtualMachines.PUT"] == 2
    assert len(fake_arm.vms(cluster)) == 2 and len(fake_arm.live(cluster)) == 6
    with pytest.raises(ConfigError, match="exists with 2 nodes"):
        cloud.launch(cluster, 3, None, region="eastus", instance_type=D4)
    cloud.terminate(first)


def test_spot_launch(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    handle = cloud.launch(cluster, 1, None, region="westus2", zone="westus2-1", instance_type=D4, use_spot=True)
    [vm] = fake_arm.vms(cluster)
    props = vm["properties"]
    assert props["priority"] == "Spot" and props["evictionPolicy"] == "Delete"
    assert props["billingProfile"] == {"maxPrice": -1}
    assert handle.extra["use_spot"] is True
    with pytest.raises(ConfigError, match="cannot be stopped"):
        cloud.stop(handle)
    cloud.terminate(handle)


def test_gpu_size_uses_the_gpu_image(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    handle = cloud.launch(cluster, 1, Res({"A100": 1}), region="eastus", zone="eastus-1", instance_type=A100)
    [vm] = fake_arm.vms(cluster)
    assert vm["properties"]["hardwareProfile"]["vmSize"] == A100
    assert vm["properties"]["storageProfile"]["imageReference"]["publisher"] == "microsoft-dsvm"
    assert vm["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] == 128
    cloud.terminate(handle)


@pytest.mark.parametrize(
    ("code", "expected", "scope", "zone"),
    [
        ("SkuNotAvailable", CapacityError, Scope.ZONE, None),  # zone unknown: blocks the region
        ("AllocationFailed", CapacityError, Scope.ZONE, None),
        ("ZonalAllocationFailed", CapacityError, Scope.ZONE, "eastus-3"),
        ("OverconstrainedZonalAllocationRequest", CapacityError, Scope.ZONE, "eastus-3"),
        ("OperationNotAllowed", QuotaError, Scope.REGION, "eastus-3"),
        ("QuotaExceeded", QuotaError, Scope.REGION, "eastus-3"),
        ("AuthorizationFailed", CredentialsError, Scope.CLOUD, "eastus-3"),
        ("ExpiredAuthenticationToken", CredentialsError, Scope.CLOUD, "eastus-3"),
        ("MissingSubscriptionRegistration", ConfigError, Scope.CLOUD, "eastus-3"),
        ("TooManyRequests", TransientError, Scope.NONE, "eastus-3"),
        ("InternalServerError", TransientError, Scope.NONE, "eastus-3"),
    ],
)
def test_create_errors_are_classified(
    cloud: AzureCloud, fake_arm: FakeArm, cluster: str, code: str, expected: type, scope: Scope, zone: str | None  # noqa: F811
) -> None:
    fake_arm.add_fault(code=code, location="eastus", size=D4)
    with pytest.raises(expected) as err:
        cloud.launch(cluster, 1, None, region="eastus", zone="eastus-3", instance_type=D4)
    assert type(err.value) is expected and err.value.scope is scope and code in err.value.message
    assert (err.value.cloud, err.value.region, err.value.zone) == ("azure", "eastus", zone)
    if expected is CapacityError and zone is None:
        assert err.value.blocked().region == "eastus" and err.value.blocked().zone is None
    if expected in (CredentialsError, ConfigError, QuotaError):
        assert err.value.fix
    assert cloud.find(cluster) is None


def test_allocation_failure_leaves_no_failed_vm(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="AllocationFailed")
    with pytest.raises(CapacityError):
        cloud.launch(cluster, 1, None, region="eastus", zone="eastus-1", instance_type=D4)
    assert fake_arm.calls["virtualMachines.DELETE"] >= 1  # Azure keeps the Failed VM: it had to be deleted
    assert fake_arm.live(cluster) == []


def test_authorization_failure_on_every_call_fails_fast(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(method="*", kind="*", code="AuthorizationFailed")
    with pytest.raises(CredentialsError, match="AuthorizationFailed") as err:
        cloud.launch(cluster, 1, None, region="westus2", instance_type=D4)
    assert "Virtual Machine Contributor" in (err.value.fix or "")
    assert fake_arm.calls["virtualMachines.PUT"] == 0


def test_partial_launch_deletes_every_node(cloud: AzureCloud, fake_arm: FakeArm, cluster: str) -> None:  # noqa: F811
    fake_arm.add_fault(code="ZonalAllocationFailed", zone="1", fit=3)
    with pytest.raises(CapacityError, match="partial launch, 3 of 4") as err:
        cloud.launch(cluster, 4, None, region="eastus", zone="eastus-1", instance_type=D4)
    assert err.value.zone == "eastus-1" and err.value.scope is Scope.ZONE
    assert fake_arm.live(cluster) == []


def test_stop_and_start(cloud: AzureCloud, cluster: str) -> None:
    handle = cloud.launch(cluster, 2, None, region="eastus", zone="eastus-1", instance_type=D4)
    cloud.stop(handle)
    assert cloud.status(cluster) == "STOPPED"
    relaunched = cloud.launch(cluster, 2, None, region="eastus", instance_type=D4)  # restarts it
    assert relaunched.node_ids == handle.node_ids and cloud.status(cluster) == "UP"
    cloud.terminate(relaunched)


def test_runners_are_ssh_runners(cloud: AzureCloud, cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = cloud.launch(cluster, 1, None, region="eastus", zone="eastus-1", instance_type=D4)
    try:
        [runner] = cloud.runners(handle)
        assert runner.host == handle.head_ip and runner.port == 22 and runner.host_key_mode == "accept-new"
        monkeypatch.setattr(vm, "SSH_RUNNER_MODULE", "airflow_provider_sky.execution.no_such_runner")
        with pytest.raises(ConfigError, match="no_such_runner"):
            cloud.runners(handle)
    finally:
        cloud.terminate(handle)


def test_zones_and_names(cloud: AzureCloud, fake_arm_server: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    assert cloud.regions() == list(REGIONS) and cloud.zones("eastus") == ["eastus-1", "eastus-2", "eastus-3"]
    other = make_cloud(fake_arm_server, tmp_path, zones={"westus2": []})
    assert other.zones("westus2") == [] and other.zones("eastus") == ["eastus-1", "eastus-2", "eastus-3"]
    assert vm_name("abc", 2) == "abc-2"
    assert len(vm_name("A_" * 40, 0)) <= 64


def test_credentials_that_cannot_get_a_token_fail_fast(fake_arm: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    from azure.core.exceptions import ClientAuthenticationError

    class NoToken:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    cloud = AzureCloud(SUBSCRIPTION, credential=NoToken(), base_url=fake_arm.endpoint,
                       connection_verify=str(fake_arm.ca_file), key_dir=tmp_path, api_retries=0)  # fmt: skip
    with pytest.raises(CredentialsError, match="failed to retrieve a token") as err:
        cloud.find("anything")
    assert "subscriptionId" in (err.value.fix or "") and err.value.scope is Scope.CLOUD


def test_from_connection_reads_the_azure_connection(fake_arm: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    from azure.identity import ClientSecretCredential

    sp = AzureCloud.from_connection({"login": "app-id", "password": "secret",
                                     "extra": {"extra__azure__tenantId": "t", "subscriptionId": SUBSCRIPTION}})  # fmt: skip
    assert sp.subscription_id == SUBSCRIPTION and isinstance(sp._credential, ClientSecretCredential)
    with pytest.raises(ConfigError, match="subscription"):
        AzureCloud.from_connection({"login": "app-id", "password": "secret", "extra": {"tenantId": "t"}})
    fields = {"extra": {"subscriptionId": SUBSCRIPTION, "token": "static", "base_url": fake_arm.endpoint,
                        "ca_bundle": str(fake_arm.ca_file)}}  # fmt: skip
    cloud = AzureCloud.from_connection(fields, key_dir=tmp_path, api_retries=0)
    assert cloud.find("t-nothing-here") is None and fake_arm.calls["virtualMachines.listAll"] == 1
