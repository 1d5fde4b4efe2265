"""AzureCloud ports rules and no-leak termination (disks, NSG rules, empty region groups) against the ARM fake."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_sky.clouds import azure_resources as ar
from airflow_provider_sky.clouds.azure import AzureCloud
from airflow_provider_sky.clouds.errors import ConfigError, CredentialsError
from tests.fake_azure import FakeArm, fake_arm, fake_arm_server  # noqa: F401 - fixtures
from tests.test_azure_cloud import D4, make_cloud

REGION = "westus2"


@dataclass(frozen=True)
class Res:
    ports: tuple[str, ...] = ()
    disk_size: int = 64


@pytest.fixture
def prefix(fake_arm: FakeArm) -> str:  # noqa: F811
    """A resource group prefix of this test alone, so the leak check sees only its own groups."""
    return f"skyt{uuid.uuid4().hex[:8]}"


def cloud_for(fake: FakeArm, tmp_path: Path, prefix: str, **kw) -> AzureCloud:
    return make_cloud(fake, tmp_path / "keys", resource_group_prefix=prefix, **kw)


def nsg_rules(fake: FakeArm, group: str) -> dict[str, dict]:
    nsg = fake.resources[f"/subscriptions/{fake.subscription}/resourcegroups/{group}/providers/microsoft.network/networksecuritygroups/{ar.NSG}".lower()]
    return {r["name"]: r["properties"] for r in nsg["properties"].get("securityRules") or ()}


def test_ports_rule_disks_and_group_are_gone_after_terminate(fake_arm: FakeArm, tmp_path: Path, prefix: str) -> None:  # noqa: F811
    cloud = cloud_for(fake_arm, tmp_path, prefix, ports_cidrs=("198.51.100.0/24",))
    group = cloud.resource_group(REGION)
    handle = cloud.launch("web", 2, Res(ports=("8080", "9000-9010")), region=REGION, instance_type=D4)
    rule = nsg_rules(fake_arm, group)[ar.ports_rule_name("web")]
    assert rule["direction"] == "Inbound" and rule["access"] == "Allow" and rule["protocol"] == "Tcp"
    assert rule["destinationPortRanges"] == ["8080", "9000-9010"]
    assert rule["sourceAddressPrefixes"] == ["198.51.100.0/24"]
    assert sorted(rule["destinationAddressPrefixes"]) == sorted(handle.extra["private_ips"])
    assert rule["priority"] != nsg_rules(fake_arm, group)["sky-ssh"]["priority"]
    assert sorted(fake_arm.disks(group)) == ["web-0-osdisk", "web-1-osdisk"]

    cloud.terminate(handle)
    assert fake_arm.in_groups(prefix) == {}  # nothing of ours: no VM, NIC, IP, disk, vnet, NSG or group
    assert fake_arm.calls["resourceGroups.DELETE"] == 1
    cloud.terminate(handle)  # idempotent: the group is gone already

    # The same process launches into the region again: the group is prepared anew.
    again = cloud.launch("web", 1, None, region=REGION, instance_type=D4)
    assert group in fake_arm.in_groups(prefix)
    cloud.terminate(again)
    assert fake_arm.in_groups(prefix) == {}


def test_group_with_another_cluster_is_kept(fake_arm: FakeArm, tmp_path: Path, prefix: str) -> None:  # noqa: F811
    first = cloud_for(fake_arm, tmp_path, prefix)
    group = first.resource_group(REGION)
    a = first.launch("a", 1, Res(ports=("8080",)), region=REGION, instance_type=D4)
    # Another process (fresh cloud object) prepares the region again: the NSG keeps a's ports rule.
    second = cloud_for(fake_arm, tmp_path, prefix)
    b = second.launch("b", 1, Res(ports=("8080",)), region=REGION, instance_type=D4)
    rules = nsg_rules(fake_arm, group)
    assert {ar.ports_rule_name("a"), ar.ports_rule_name("b"), "sky-ssh"} == set(rules)
    assert rules[ar.ports_rule_name("a")]["priority"] != rules[ar.ports_rule_name("b")]["priority"]

    first.terminate(a)
    left = fake_arm.in_groups(prefix)[group]
    assert any(i.endswith("/virtualMachines/b-0") for i in left) and not any("/a-0" in i for i in left)
    assert set(nsg_rules(fake_arm, group)) == {ar.ports_rule_name("b"), "sky-ssh"}
    second.terminate(b)
    assert fake_arm.in_groups(prefix) == {}


def test_groups_not_ours_or_with_cleanup_off_are_kept(fake_arm: FakeArm, tmp_path: Path, prefix: str) -> None:  # noqa: F811
    cloud = cloud_for(fake_arm, tmp_path, prefix)
    cloud.configure_from_extras({"azure_cleanup_empty_groups": "false", "azure_ports_cidrs": "10.0.0.0/8"})
    assert cloud.cleanup_empty_groups is False and cloud.ports_cidrs == ("10.0.0.0/8",)
    group = cloud.resource_group(REGION)
    handle = cloud.launch("keep", 1, Res(ports=("80",)), region=REGION, instance_type=D4)
    cloud.terminate(handle)
    kept = fake_arm.in_groups(prefix)[group]
    assert sorted(i.rsplit("/", 2)[-2] for i in kept) == ["networkSecurityGroups", "virtualNetworks"]
    assert set(nsg_rules(fake_arm, group)) == {"sky-ssh"}  # the cluster's ports rule went with it

    fake_arm.groups[group.lower()]["tags"] = {}  # no longer tagged as ours: never deleted
    assert cloud.cleanup_group(group) is False and group in fake_arm.in_groups(prefix)
    fake_arm.groups[group.lower()]["tags"] = {ar.MANAGED_BY_KEY: ar.MANAGED_BY}
    assert cloud.cleanup_group("someone-elses-group") is False
    assert cloud.cleanup_group(group) is True and fake_arm.in_groups(prefix) == {}
    with pytest.raises(ConfigError, match="azure_ssh_cidrs"):
        cloud.configure_from_extras({"azure_ssh_cidrs": ","})


def test_taken_priority_moves_on_and_stale_cache_recovers(fake_arm: FakeArm, tmp_path: Path, prefix: str) -> None:  # noqa: F811
    cloud = cloud_for(fake_arm, tmp_path, prefix)
    group = cloud.resource_group(REGION)
    warm = cloud.launch("warm", 1, None, region=REGION, instance_type=D4)
    # A user's rule sits on the priority the cluster's name hashes to, added after our NSG read.
    wanted = ar.ports_priority("busy", set())
    nsg_key = next(k for k in fake_arm.resources if k.endswith(f"/networksecuritygroups/{ar.NSG}") and group.lower() in k)
    fake_arm.resources[nsg_key]["properties"]["securityRules"].append(
        {"name": "user-rule", "properties": {"priority": wanted, "direction": "Inbound", "access": "Deny",
                                             "protocol": "*", "sourcePortRange": "*", "destinationPortRange": "*",
                                             "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}})  # fmt: skip
    busy = cloud.launch("busy", 1, Res(ports=("8443",)), region=REGION, instance_type=D4)
    assert nsg_rules(fake_arm, group)[ar.ports_rule_name("busy")]["priority"] != wanted
    cloud.terminate(busy)
    assert group in fake_arm.in_groups(prefix)  # warm and the user's rule keep the group
    cloud.terminate(warm)
    assert group in fake_arm.in_groups(prefix)  # the user's rule in the NSG keeps it too
    assert set(nsg_rules(fake_arm, group)) == {"sky-ssh", "user-rule"}

    # Another process deletes the group while this one has it cached: the launch prepares it again.
    other = cloud_for(fake_arm, tmp_path, prefix)
    fake_arm.resources[nsg_key]["properties"]["securityRules"] = [
        r for r in fake_arm.resources[nsg_key]["properties"]["securityRules"] if r["name"] == "sky-ssh"]
    assert other.cleanup_group(group) is True
    handle = cloud.launch("again", 1, None, region=REGION, instance_type=D4)
    assert handle.num_nodes == 1 and group in fake_arm.in_groups(prefix)
    cloud.terminate(handle)
    assert fake_arm.in_groups(prefix) == {}


def test_ports_rule_permission_error_is_classified_and_leaves_nothing(
    fake_arm: FakeArm, tmp_path: Path, prefix: str  # noqa: F811
) -> None:
    cloud = cloud_for(fake_arm, tmp_path, prefix)
    fake_arm.add_fault(method="PUT", kind="securityRules", code="AuthorizationFailed")
    with pytest.raises(CredentialsError, match="AuthorizationFailed") as err:
        cloud.launch("denied", 1, Res(ports=("8080",)), region=REGION, instance_type=D4)
    assert err.value.cloud == "azure" and err.value.fix
    assert fake_arm.calls["virtualMachines.PUT"] == 0
    assert not fake_arm.live("denied") and cloud.find("denied") is None
    assert fake_arm.in_groups(prefix) == {}  # the failed attempt took its region group with it
