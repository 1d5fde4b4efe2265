"""GcpCloud through google-cloud-compute against the GCE protocol fake on 127.0.0.1 (never real GCP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_provider_sky.clouds import vm
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    QuotaError,
    Scope,
    TransientError,
)
from airflow_provider_sky.clouds.gcp import GcpCloud
from airflow_provider_sky.clouds.gcp_instances import instance_name, label_value, request_id
from tests.cloud_test_helpers import cloud_fixtures, purged_cluster
from tests.fake_gcp import PROJECT, FakeGce, fake_gce, fake_gce_server  # noqa: F401 - fixtures

REGIONS = ("us-central1", "us-east1")
N1 = "n1-standard-8"


@dataclass(frozen=True)
class Res:
    accelerators: dict = field(default_factory=dict)
    image_id: str | None = None
    disk_size: int = 100


def make_cloud(fake: FakeGce, key_dir: Path, **kw) -> GcpCloud:
    from google.auth.credentials import AnonymousCredentials

    kw.setdefault("regions", REGIONS)
    return GcpCloud(PROJECT, credentials=AnonymousCredentials(), api_endpoint=fake.endpoint, key_dir=key_dir,
                    poll_interval=0.01, launch_timeout=10, **kw)  # fmt: skip


shared_cloud, cloud = cloud_fixtures(make_cloud, server="fake_gce_server", fake="fake_gce")


@pytest.fixture
def cluster(fake_gce: FakeGce) -> Iterator[str]:  # noqa: F811
    """A fresh cluster name; after the test no instance of it may be left in the fake."""
    yield from purged_cluster(fake_gce, "instances", key="name")


def metadata(instance: dict) -> dict[str, str]:
    return {i["key"]: i["value"] for i in instance["metadata"]["items"]}


def test_launch_find_terminate_with_labels(cloud: GcpCloud, fake_gce: FakeGce, cluster: str) -> None:  # noqa: F811
    labels = {"sky-dag-id": "etl", "sky-run-id": "manual__2025-01-01T00:00:00+00:00", "sky-task-id": "Train"}
    handle = cloud.launch(cluster, 2, None, region="us-central1", zone="us-central1-b", instance_type=N1, labels=labels)
    assert (handle.cloud, handle.region, handle.zone, handle.instance_type) == ("gcp", "us-central1", "us-central1-b", N1)
    assert handle.node_ids == (f"{cluster}-0", f"{cluster}-1")
    assert all(handle.node_ips) and handle.extra["private_ips"][0].startswith("10.128.")
    assert handle.head_ip == handle.extra["public_ips"][0]

    live = {i["name"]: i for i in fake_gce.live(cluster)}
    assert set(live) == set(handle.node_ids)
    for rank, name in enumerate(handle.node_ids):
        inst = live[name]
        assert inst["labels"]["sky-cluster"] == cluster and inst["labels"]["sky-managed-by"] == "airflow-provider-sky"
        assert inst["labels"]["sky-dag-id"] == "etl" and inst["labels"]["sky-task-id"] == "train"
        assert inst["labels"]["sky-run-id"] == label_value(labels["sky-run-id"]) == "manual__2025-01-01t00-00-00-00-00"
        assert inst["labels"]["sky-node-rank"] == str(rank)
        assert json.loads(metadata(inst)["sky-labels"])["sky-run-id"] == labels["sky-run-id"]  # exact value kept
        assert metadata(inst)["ssh-keys"].startswith("sky:ssh-ed25519 ")
        assert inst["scheduling"].get("provisioningModel") != "SPOT"
        assert inst["disks"][0]["initializeParams"]["sourceImage"].endswith("ubuntu-2204-lts")

    found = cloud.find(cluster)
    assert found is not None and found.node_ids == handle.node_ids and found.node_ips == handle.node_ips
    assert cloud.status(cluster) == "UP" and cloud.find("t-no-such-cluster") is None
    [managed] = [m for m in cloud.list_managed() if m["name"] == cluster]
    assert managed["cloud"] == "gcp" and managed["region"] == "us-central1"
    assert managed["labels"]["sky-run-id"] == labels["sky-run-id"] and managed["created_at"] is not None

    cloud.terminate(handle)
    assert cloud.find(cluster) is None and fake_gce.live(cluster) == []
    cloud.terminate(handle)  # idempotent


def test_second_create_is_idempotent(
    cloud: GcpCloud, fake_gce: FakeGce, cluster: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    assert request_id(cluster, "z", "n", 7) == request_id(cluster, "z", "n", 7) != request_id(cluster, "z", "n", 8)
    first = cloud.launch(cluster, 2, None, region="us-central1", zone="us-central1-c", instance_type=N1, attempt=7)
    fake_gce.reset_stats()
    again = cloud.launch(cluster, 2, None, region="us-central1", instance_type=N1, attempt=8)  # found: adopted
    assert again.node_ids == first.node_ids and fake_gce.calls["insert"] == 0

    # A retry whose find() misses the cluster: the same requestIds return GCE's first operations.
    monkeypatch.setattr(cloud, "find", lambda name, region=None: None)
    retry = cloud.launch(cluster, 2, None, region="us-central1", zone="us-central1-c", instance_type=N1, attempt=7)
    monkeypatch.undo()
    assert retry.node_ids == first.node_ids
    assert fake_gce.calls["insert"] == 2 and fake_gce.created[cluster] == 0
    assert len(fake_gce.live(cluster)) == 2
    with pytest.raises(ConfigError, match="exists with 2 nodes"):
        cloud.launch(cluster, 3, None, region="us-central1", instance_type=N1)
    cloud.terminate(first)


def test_spot_launch(cloud: GcpCloud, fake_gce: FakeGce, cluster: str) -> None:  # noqa: F811
    handle = cloud.launch(cluster, 1, None, region="us-east1", zone="us-east1-c", instance_type="g2-standard-4", use_spot=True)
    [inst] = fake_gce.live(cluster)
    sched = inst["scheduling"]
    assert sched["provisioningModel"] == "SPOT" and sched["instanceTerminationAction"] == "DELETE"
    assert sched["onHostMaintenance"] == "TERMINATE" and sched["automaticRestart"] is False
    assert handle.extra["use_spot"] is True
    cloud.terminate(handle)


def test_gpus_and_images(cloud: GcpCloud, fake_gce: FakeGce, cluster: str) -> None:  # noqa: F811
    handle = cloud.launch(cluster, 1, Res({"T4": 2}), region="us-central1", zone="us-central1-a", instance_type=N1)
    [inst] = fake_gce.live(cluster)
    assert inst["guestAccelerators"] == [
        {"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 2}
    ]
    assert inst["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert "deeplearning-platform-release" in inst["disks"][0]["initializeParams"]["sourceImage"]
    assert inst["disks"][0]["initializeParams"]["diskSizeGb"] == "100"
    cloud.terminate(handle)

    # Accelerator-optimized types carry their GPUs: no guestAccelerators; an explicit image wins.
    handle = cloud.launch(cluster, 1, Res({"A100": 1}, image_id="projects/me/global/images/mine"),
                          region="us-central1", zone="us-central1-a", instance_type="a2-highgpu-1g")  # fmt: skip
    [inst] = fake_gce.live(cluster)
    assert "guestAccelerators" not in inst
    assert inst["disks"][0]["initializeParams"]["sourceImage"] == "projects/me/global/images/mine"
    cloud.terminate(handle)


@pytest.mark.parametrize(
    ("rule", "expected", "scope"),
    [
        ({"code": "ZONE_RESOURCE_POOL_EXHAUSTED"}, CapacityError, Scope.ZONE),
        ({"code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"}, CapacityError, Scope.ZONE),
        ({"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "spot": True}, CapacityError, Scope.ZONE),
        ({"code": "QUOTA_EXCEEDED", "metric": "GPUS_ALL_REGIONS"}, QuotaError, Scope.CLOUD),
        ({"code": "QUOTA_EXCEEDED", "metric": "NVIDIA_T4_GPUS"}, QuotaError, Scope.REGION),
        ({"code": "QUOTA_EXCEEDED", "metric": "CPUS"}, QuotaError, Scope.REGION),
        ({"code": "quotaExceeded"}, QuotaError, Scope.CLOUD),
        ({"code": "forbidden"}, CredentialsError, Scope.CLOUD),
        ({"code": "unauthorized"}, CredentialsError, Scope.CLOUD),
        ({"code": "accessNotConfigured"}, ConfigError, Scope.CLOUD),
        ({"code": "rateLimitExceeded"}, TransientError, Scope.NONE),
        ({"code": "backendError"}, TransientError, Scope.NONE),
        ({"code": "invalid", "message": "Invalid value for field 'resource.machineType': "
          "'zones/us-central1-f/machineTypes/n1-standard-8'. Machine type with name 'n1-standard-8' does not exist "
          "in zone 'us-central1-f'."}, CapacityError, Scope.ZONE),
    ],
)  # fmt: skip
def test_insert_errors_are_classified(
    cloud: GcpCloud, fake_gce: FakeGce, cluster: str, rule: dict, expected: type, scope: Scope  # noqa: F811
) -> None:
    fake_gce.add_fault(zone="us-central1-c", machine_type=N1, **rule)
    with pytest.raises(expected) as err:
        cloud.launch(cluster, 1, None, region="us-central1", zone="us-central1-c", instance_type=N1,
                     use_spot=bool(rule.get("spot")))  # fmt: skip
    assert type(err.value) is expected and err.value.scope is scope
    assert (err.value.cloud, err.value.region, err.value.zone) == ("gcp", "us-central1", "us-central1-c")
    if expected in (CredentialsError, ConfigError, QuotaError):
        assert err.value.fix
    if expected is QuotaError:
        assert err.value.global_quota is (scope is Scope.CLOUD)
    assert cloud.find(cluster) is None


def test_permission_error_on_every_call_fails_fast_with_the_fix(cloud: GcpCloud, fake_gce: FakeGce, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(method="*", code="forbidden",
                       message="Required 'compute.instances.list' permission for 'projects/sky-test-project'")  # fmt: skip
    with pytest.raises(CredentialsError, match=r"compute\.instances\.list") as err:
        cloud.launch(cluster, 1, None, region="us-central1", instance_type=N1)
    assert "roles/compute.instanceAdmin.v1" in (err.value.fix or "")
    assert fake_gce.calls["insert"] == 0


def test_missing_credentials_are_a_credentials_error(fake_gce: FakeGce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never probe the metadata server
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    cloud = GcpCloud(PROJECT, api_endpoint=fake_gce.endpoint, key_dir=tmp_path, regions=REGIONS)
    with pytest.raises(CredentialsError) as err:
        cloud.find("anything")
    assert "google_cloud_platform" in (err.value.fix or "") and err.value.scope is Scope.CLOUD


def test_partial_launch_deletes_every_node(cloud: GcpCloud, fake_gce: FakeGce, cluster: str) -> None:  # noqa: F811
    fake_gce.add_fault(zone="us-central1-a", machine_type=N1, fit=3)
    with pytest.raises(CapacityError, match="partial launch, 3 of 4") as err:
        cloud.launch(cluster, 4, None, region="us-central1", zone="us-central1-a", instance_type=N1)
    assert err.value.zone == "us-central1-a" and err.value.scope is Scope.ZONE
    assert fake_gce.live(cluster) == [] and fake_gce.calls["delete"] >= 3


def test_stop_and_start(cloud: GcpCloud, cluster: str) -> None:
    handle = cloud.launch(cluster, 2, None, region="us-central1", zone="us-central1-a", instance_type=N1)
    cloud.stop(handle)
    assert cloud.status(cluster) == "STOPPED"
    relaunched = cloud.launch(cluster, 2, None, region="us-central1", instance_type=N1)  # restarts it
    assert relaunched.node_ids == handle.node_ids and cloud.status(cluster) == "UP"
    cloud.terminate(relaunched)


def test_runners_are_ssh_runners(cloud: GcpCloud, cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = cloud.launch(cluster, 2, None, region="us-central1", zone="us-central1-a", instance_type=N1)
    try:
        runners = cloud.runners(handle)  # built lazily, no connection yet
        assert [r.host for r in runners] == list(handle.node_ips)
        assert all(r.port == 22 and r.host_key_mode == "accept-new" for r in runners)
        monkeypatch.setattr(vm, "SSH_RUNNER_MODULE", "airflow_provider_sky.execution.no_such_runner")
        with pytest.raises(ConfigError, match="no_such_runner"):
            cloud.runners(handle)
    finally:
        cloud.terminate(handle)


def test_zones_regions_and_names(cloud: GcpCloud) -> None:
    assert cloud.regions() == list(REGIONS)
    assert cloud.zones("us-east1") == ["us-east1-b", "us-east1-c", "us-east1-d"]
    assert instance_name("abc", 3) == "abc-3"
    long = instance_name("x" * 70 + "_Bad", 0)
    assert len(long) <= 63 and long.endswith("-0") and long == instance_name("x" * 70 + "_Bad", 0)


def test_from_connection_reads_the_google_cloud_platform_connection(fake_gce: FakeGce, tmp_path: Path) -> None:  # noqa: F811
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = {"type": "service_account", "project_id": "from-key", "private_key_id": "1", "private_key": pem.decode(),
           "client_email": "sky@from-key.iam.gserviceaccount.com", "client_id": "1",
           "token_uri": "https://oauth2.googleapis.com/token"}  # fmt: skip
    fields = {"extra": {"extra__google_cloud_platform__keyfile_dict": json.dumps(key), "api_endpoint": fake_gce.endpoint}}
    cloud = GcpCloud.from_connection(fields, key_dir=tmp_path, regions=REGIONS)
    assert cloud.project == "from-key" and cloud.api_endpoint == fake_gce.endpoint
    assert cloud._credentials.service_account_email == "sky@from-key.iam.gserviceaccount.com"
    assert GcpCloud.from_connection({"extra": {"project": "p2", "keyfile_dict": json.dumps(key)}}).project == "p2"
    with pytest.raises(CredentialsError, match="unusable"):
        GcpCloud.from_connection({"extra": {"key_path": str(tmp_path / "missing.json")}})
