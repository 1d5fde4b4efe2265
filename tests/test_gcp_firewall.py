"""GCE firewall rules of GcpCloud (shared SSH rule, per-cluster ports rule) against the GCE protocol fake."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_sky.clouds import gcp_firewall as fw
from airflow_provider_sky.clouds.errors import ConfigError, CredentialsError, QuotaError, Scope
from airflow_provider_sky.clouds.gcp import GcpCloud
from tests.fake_gcp import FakeGce, fake_gce, fake_gce_server  # noqa: F401 - fixtures
from tests.test_gcp_cloud import N1, make_cloud

SSH_RULE = fw.ssh_rule_name("global/networks/default")


@dataclass(frozen=True)
class Res:
    ports: tuple[str, ...] = ()
    disk_size: int = 50


@pytest.fixture
def cluster(fake_gce: FakeGce) -> Iterator[str]:  # noqa: F811
    """A fresh cluster name; afterwards neither its instances nor its ports rule may be left."""
    name = f"fw-{uuid.uuid4().hex[:10]}"
    yield name
    fake_gce.clear_faults()
    left, rule = fake_gce.live(name), fake_gce.firewall(fw.ports_rule_name(name))
    fake_gce.purge(name)
    fake_gce.firewalls.pop(fw.ports_rule_name(name), None)
    assert not left and rule is None, f"left behind: {[i['name'] for i in left]}, rule {rule and rule['name']}"


def fresh_cloud(fake: FakeGce, tmp_path: Path, **kw) -> GcpCloud:
    return make_cloud(fake, tmp_path / "keys", **kw)


def test_ssh_rule_is_created_once_and_reused(fake_gce: FakeGce, tmp_path: Path, cluster: str) -> None:  # noqa: F811
    fake_gce.firewalls.pop(SSH_RULE, None)
    cloud = fresh_cloud(fake_gce, tmp_path, ssh_cidrs=("203.0.113.0/24",))
    first = cloud.launch(cluster, 1, None, region="us-central1", instance_type=N1)
    rule = fake_gce.firewall(SSH_RULE)
    assert rule is not None and rule["direction"] == "INGRESS"
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert rule["sourceRanges"] == ["203.0.113.0/24"] and rule["targetTags"] == ["sky-ssh"]
    assert rule["network"].endswith("/global/networks/default")
    [instance] = fake_gce.live(cluster)
    assert set(instance["tags"]["items"]) == {"sky-ssh", fw.cluster_tag(cluster)}
    assert fake_gce.calls["firewalls.insert"] == 1
    assert fake_gce.firewall(fw.ports_rule_name(cluster)) is None  # no resources.ports: no ports rule

    # Same process: no more firewall calls at all. Another process: one get, no insert.
    cloud.terminate(first)
    fake_gce.reset_stats()
    again = cloud.launch(cluster, 1, None, region="us-central1", instance_type=N1)
    assert fake_gce.calls["firewalls.get"] == fake_gce.calls["firewalls.insert"] == 0
    other = fresh_cloud(fake_gce, tmp_path)
    other.ensure_ssh_rule()
    assert (fake_gce.calls["firewalls.get"], fake_gce.calls["firewalls.insert"]) == (1, 0)
    assert fake_gce.firewall(SSH_RULE)["id"] == rule["id"]
    cloud.terminate(again)
    assert fake_gce.firewall(SSH_RULE) is not None  # shared: never deleted with a cluster


def test_ports_rule_is_per_cluster_and_removed_at_terminate(
    fake_gce: FakeGce, tmp_path: Path, cluster: str  # noqa: F811
) -> None:
    cloud = fresh_cloud(fake_gce, tmp_path, ports_cidrs=("198.51.100.0/24", "10.0.0.0/8"))
    handle = cloud.launch(cluster, 2, Res(ports=("8080", "10000-10010")), region="us-east1", instance_type=N1)
    rule = fake_gce.firewall(fw.ports_rule_name(cluster))
    assert rule is not None and rule["targetTags"] == [fw.cluster_tag(cluster)]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["8080", "10000-10010"]}]
    assert rule["sourceRanges"] == ["198.51.100.0/24", "10.0.0.0/8"]
    assert all(fw.cluster_tag(cluster) in i["tags"]["items"] for i in fake_gce.live(cluster))
    # Another cluster's nodes do not carry this cluster's tag, so the rule does not reach them.
    assert fw.cluster_tag(cluster) != fw.cluster_tag(cluster + "x")

    fake_gce.reset_stats()
    cloud.terminate(handle)
    assert fake_gce.calls["firewalls.delete"] == 1
    assert fake_gce.firewall(fw.ports_rule_name(cluster)) is None and not fake_gce.live(cluster)
    cloud.terminate(handle)  # idempotent: the missing rule is fine


def test_stale_ports_rule_is_replaced(fake_gce: FakeGce, tmp_path: Path, cluster: str) -> None:  # noqa: F811
    cloud = fresh_cloud(fake_gce, tmp_path)
    cloud.ensure_ports_rule(cluster, ["9000"])
    handle = cloud.launch(cluster, 1, Res(ports=("8888",)), region="us-central1", instance_type=N1)
    assert fake_gce.firewall(fw.ports_rule_name(cluster))["allowed"][0]["ports"] == ["8888"]
    cloud.terminate(handle)


@pytest.mark.parametrize(
    ("fault", "expected", "scope"),
    [
        ({"code": "forbidden"}, CredentialsError, Scope.CLOUD),
        ({"code": "quotaExceeded", "metric": "FIREWALLS"}, QuotaError, Scope.CLOUD),
    ],
)
def test_rule_creation_errors_are_classified_and_leave_nothing(
    fake_gce: FakeGce, tmp_path: Path, cluster: str, fault: dict, expected: type, scope: Scope  # noqa: F811
) -> None:
    cloud = fresh_cloud(fake_gce, tmp_path)
    cloud.ensure_ssh_rule()  # the shared rule exists; the cluster's ports rule is refused
    fake_gce.add_fault(method="firewalls.insert", **fault)
    with pytest.raises(expected) as err:
        cloud.launch(cluster, 1, Res(ports=("8080",)), region="us-central1", instance_type=N1)
    assert type(err.value) is expected and err.value.scope is scope and err.value.cloud == "gcp"
    if expected is CredentialsError:
        assert "compute.firewalls.create" in err.value.message and "gcp_manage_firewall" in (err.value.fix or "")
    assert fake_gce.calls["insert"] == 0 and cloud.find(cluster) is None


def test_ssh_rule_permission_error_is_classified(fake_gce: FakeGce, tmp_path: Path, cluster: str) -> None:  # noqa: F811
    fake_gce.firewalls.pop(SSH_RULE, None)
    fake_gce.add_fault(method="firewalls.insert", code="forbidden")
    cloud = fresh_cloud(fake_gce, tmp_path)
    with pytest.raises(CredentialsError, match=r"compute\.firewalls\.create") as err:
        cloud.launch(cluster, 1, None, region="us-central1", instance_type=N1)
    assert "roles/compute.securityAdmin" in (err.value.fix or "")
    fake_gce.clear_faults()
    # Without firewall management nothing is asked of the firewall API.
    fake_gce.reset_stats()
    cloud.configure_from_extras({"gcp_manage_firewall": "false"})
    handle = cloud.launch(cluster, 1, Res(ports=("8080",)), region="us-central1", instance_type=N1)
    assert sum(v for k, v in fake_gce.calls.items() if k.startswith("firewalls.")) == 0
    assert fake_gce.firewall(SSH_RULE) is None
    cloud.terminate(handle)


def test_settings_and_names(fake_gce: FakeGce, tmp_path: Path) -> None:  # noqa: F811
    cloud = fresh_cloud(fake_gce, tmp_path)
    cloud.configure_from_extras({"gcp_ssh_cidrs": "203.0.113.7/32, 10.0.0.0/8", "gcp_ports_cidrs": "10.1.0.0/16"})
    assert cloud.ssh_cidrs == ("203.0.113.7/32", "10.0.0.0/8") and cloud.ports_cidrs == ("10.1.0.0/16",)
    with pytest.raises(ConfigError, match="gcp_ssh_cidrs"):
        cloud.configure_from_extras({"gcp_ssh_cidrs": " , "})
    long = "My_Cluster." + "x" * 80
    for name in (fw.cluster_tag(long), fw.ports_rule_name(long), fw.ssh_rule_name("projects/p/global/networks/Net_1")):
        assert len(name) <= 63 and fw._NAME_RE.match(name), name
    assert fw.ports_rule_name(long) != fw.ports_rule_name(long + "y")
