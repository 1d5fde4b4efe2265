"""launch_with_failover, Blocklist and placement sources against an in-memory fake cloud."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    QuotaError,
    TransientError,
)
from airflow_provider_sky.optimizer.plan import TaskPlacement
from airflow_provider_sky.provision.blocklist import BlockEntry, Blocklist
from airflow_provider_sky.provision.failover import (
    Attempt,
    Backoff,
    FailoverExhaustedError,
    launch_with_failover,
)
from airflow_provider_sky.provision.placement import Placement, ordered_source, placements_from_resources
from airflow_provider_sky.state import StateStore


class FakeCloud(Cloud):
    """Regions r1, r2 with zones <region>a/b/c; `faults[(region, zone)]` is a list of errors to raise."""

    def __init__(self, name: str = "fake", regions: tuple[str, ...] = ("r1", "r2")) -> None:
        self.name = name  # type: ignore[misc]
        self._regions = regions
        self.faults: dict[tuple[str | None, str | None], list[Exception]] = {}
        self.always: dict[tuple[str | None, str | None], Exception] = {}
        self.clusters: dict[str, ClusterHandle] = {}
        self.launches: list[dict[str, Any]] = []
        self.partial: set[str] = set()
        self.find_error: Exception | None = None

    def regions(self) -> list[str]:
        return list(self._regions)

    def zones(self, region: str) -> list[str]:
        return [f"{region}{z}" for z in "abc"]

    def launch(self, cluster_name, num_nodes, resources, region=None, zone=None, instance_type=None,
               use_spot=False, labels=None, *, attempt=None) -> ClusterHandle:  # fmt: skip
        self.launches.append({"region": region, "zone": zone, "type": instance_type, "attempt": attempt})
        if cluster_name in self.clusters:
            return self.clusters[cluster_name]
        for key in ((region, zone), (region, None), (None, None)):
            if key in self.always:
                raise self.always[key]
            if self.faults.get(key):
                if key in {(region, zone)} and (region, zone) in self.partial:
                    self.clusters[cluster_name] = self._handle(cluster_name, region, zone, instance_type, 1)
                raise self.faults[key].pop(0)
        handle = self._handle(cluster_name, region, zone, instance_type, num_nodes)
        self.clusters[cluster_name] = handle
        return handle

    def _handle(self, name: str, region: str | None, zone: str | None, itype: str | None, n: int) -> ClusterHandle:
        return ClusterHandle(self.name, name, region, zone, itype, n, tuple(f"10.0.0.{i}" for i in range(n)))

    def find(self, cluster_name: str) -> ClusterHandle | None:
        if self.find_error is not None:
            raise self.find_error
        return self.clusters.get(cluster_name)

    def terminate(self, handle: ClusterHandle) -> None:
        self.clusters.pop(handle.cluster_name, None)

    def stop(self, handle: ClusterHandle) -> None:
        pass

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        return handle

    def runners(self, handle: ClusterHandle) -> list:
        return []


def cap(region: str, zone: str) -> CapacityError:
    return CapacityError("InsufficientInstanceCapacity: none left", cloud="fake", region=region, zone=zone)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
def fake() -> FakeCloud:
    return FakeCloud()


def run(fake_clouds: Mapping[str, Cloud] | Cloud, store: StateStore, placements: Any, **kw: Any):
    clouds = fake_clouds if isinstance(fake_clouds, Mapping) else {fake_clouds.name: fake_clouds}
    sleeps: list[float] = []
    kw.setdefault("sleep", sleeps.append)
    handle, attempts = launch_with_failover("c1", 2, placements, clouds, store, **kw)
    return handle, attempts, sleeps


def test_zone_capacity_moves_to_next_zone(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", "r1a")] = [cap("r1", "r1a")]
    handle, attempts, _ = run(fake, store, [Placement("fake", "r1", None, "gpu.x", hourly_price=3.0)])
    assert (handle.region, handle.zone) == ("r1", "r1b")
    assert handle.extra["hourly_price"] == 3.0
    assert [(a.zone, a.outcome) for a in attempts] == [("r1a", "failed"), ("r1b", "launched")]
    rows = store.list_attempts("c1")
    assert [(r.zone, r.outcome, r.error_class) for r in rows] == [
        ("r1a", "failed", "CapacityError"),
        ("r1b", "launched", None),
    ]


def test_all_zones_of_region_then_next_region(fake: FakeCloud, store: StateStore) -> None:
    for z in "abc":
        fake.faults[("r1", f"r1{z}")] = [cap("r1", f"r1{z}")]
    placements = [Placement("fake", "r1", None, "gpu.x"), Placement("fake", "r2", None, "gpu.x")]
    handle, attempts, _ = run(fake, store, placements)
    assert (handle.region, handle.zone) == ("r2", "r2a")
    assert [a.zone for a in attempts] == ["r1a", "r1b", "r1c", "r2a"]


def test_quota_blocks_the_region(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", None)] = [QuotaError("VcpuLimitExceeded", cloud="fake", region="r1", fix="raise it")]
    placements = [Placement("fake", "r1", None, "gpu.x"), Placement("fake", "r2", "r2b", "gpu.x")]
    handle, attempts, _ = run(fake, store, placements)
    assert handle.zone == "r2b"
    assert [(a.zone, type(a.error).__name__) for a in attempts] == [("r1a", "QuotaError"), ("r2b", "NoneType")]


def test_credentials_block_the_cloud_and_fail_fast_with_the_fix(store: StateStore) -> None:
    bad, good = FakeCloud("bad"), FakeCloud("good")
    bad.always[(None, None)] = CredentialsError("AuthFailure: bad keys", cloud="bad", fix="set valid keys")
    placements = [
        Placement("bad", "r1", None, "gpu.x"),
        Placement("bad", "r2", None, "gpu.x"),
        Placement("good", "r1", None, "gpu.y"),
    ]
    handle, _, _ = run({"bad": bad, "good": good}, store, placements)
    assert handle.cloud == "good" and len(bad.launches) == 1
    with pytest.raises(FailoverExhaustedError) as err:
        launch_with_failover("c2", 1, placements[:2], {"bad": bad}, store, sleep=lambda s: None)
    assert len(bad.launches) == 2  # one attempt, then the whole cloud is blocked
    text = str(err.value)
    assert "bad/r1/r1a gpu.x -> CredentialsError: AuthFailure: bad keys" in text
    assert "fix: set valid keys" in text and err.value.fix.startswith("set valid keys")


def test_credentials_failure_on_find_blocks_the_cloud_before_launching(store: StateStore) -> None:
    bad, good = FakeCloud("bad"), FakeCloud("good")
    bad.find_error = CredentialsError("expired token", cloud="bad", fix="renew")
    handle, attempts, _ = run({"bad": bad, "good": good}, store, [Placement("bad", "r1"), Placement("good", "r1")])
    assert handle.cloud == "good" and bad.launches == []
    assert attempts[0].outcome == "failed" and isinstance(attempts[0].error, CredentialsError)


def test_transient_errors_retry_same_zone_with_backoff_and_same_token(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", "r1a")] = [TransientError("RequestLimitExceeded"), TransientError("InternalError")]
    backoff = Backoff(initial=1.0, factor=2.0, maximum=3.0, jitter=0.0)
    handle, attempts, sleeps = run(fake, store, [Placement("fake", "r1", "r1a", "gpu.x")], backoff=backoff)
    assert handle.zone == "r1a" and sleeps == [1.0, 2.0]
    assert [a.outcome for a in attempts] == ["retry", "retry", "launched"]
    assert len({launch["attempt"] for launch in fake.launches}) == 1  # one idempotency token


def test_transient_exhaustion_moves_on(fake: FakeCloud, store: StateStore) -> None:
    fake.always[("r1", "r1a")] = TransientError("Unavailable")
    handle, attempts, sleeps = run(fake, store, [Placement("fake", "r1", None, "gpu.x")], transient_retries=2,
                                   backoff=Backoff(0.5, 2, 10, 0))  # fmt: skip
    assert handle.zone == "r1b" and sleeps == [0.5, 1.0]
    assert [a.outcome for a in attempts] == ["retry", "retry", "failed", "launched"]


def test_existing_cluster_is_adopted(fake: FakeCloud, store: StateStore) -> None:
    fake.clusters["c1"] = fake._handle("c1", "r2", "r2c", "gpu.x", 2)
    handle, attempts, _ = run(fake, store, [Placement("fake", "r1", None, "gpu.x")])
    assert handle.zone == "r2c" and fake.launches == []
    assert [a.outcome for a in attempts] == ["adopted"]
    assert store.list_attempts("c1")[0].outcome == "adopted"


def test_partial_leftovers_are_cleaned_before_moving_on(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", "r1a")] = [cap("r1", "r1a")]
    fake.partial.add(("r1", "r1a"))  # the fake leaves one node behind when it fails
    handle, _, _ = run(fake, store, [Placement("fake", "r1", None, "gpu.x")])
    assert handle.zone == "r1b" and handle.num_nodes == 2


def test_exhausted_lists_every_attempt(fake: FakeCloud, store: StateStore) -> None:
    fake.always[(None, None)] = cap("r1", None)
    fake.always[("r1", "r1a")] = cap("r1", "r1a")
    fake.always[("r1", "r1b")] = QuotaError("InstanceLimitExceeded", cloud="fake", region="r1", fix="ask AWS")
    fake.always[("r2", "r2a")] = ConfigError("bad image", cloud="fake", region="r2", fix="set image_id")
    placements = [Placement("fake", "r1", None, "gpu.x"), Placement("fake", "r2", None, "gpu.x")]
    with pytest.raises(FailoverExhaustedError) as err:
        run(fake, store, placements)
    text = str(err.value)
    assert "no placement left to try; 3 failed attempt(s)" in text
    assert "1. fake/r1/r1a gpu.x -> CapacityError" in text
    assert "2. fake/r1/r1b gpu.x -> QuotaError: InstanceLimitExceeded" in text
    assert "3. fake/r2/r2a gpu.x -> ConfigError: bad image" in text
    assert "fix: ask AWS; set image_id; allow more regions" in text
    assert [r.outcome for r in store.list_attempts("c1")] == ["failed"] * 3
    assert [a["outcome"] for a in (x.to_dict() for x in err.value.attempts)] == ["failed"] * 3


def test_max_attempts_and_total_timeout(fake: FakeCloud, store: StateStore) -> None:
    fake.always[(None, None)] = TransientError("throttled")
    with pytest.raises(FailoverExhaustedError, match=r"max_attempts \(3\) reached"):
        run(fake, store, [Placement("fake", "r1", "r1a")], max_attempts=3, transient_retries=10)
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(FailoverExhaustedError, match=r"total_timeout \(10s\) reached"):
        launch_with_failover("c3", 1, [Placement("fake", "r1", "r1a")], {"fake": fake}, store, total_timeout=10,
                             transient_retries=100, backoff=Backoff(4, 1, 4, 0), sleep=sleep, clock=lambda: now[0])  # fmt: skip
    assert now[0] == 10.0  # the last sleep is cut to the deadline


def test_retry_until_up_clears_blocks_after_backoff(fake: FakeCloud, store: StateStore) -> None:
    for z in "abc":
        fake.faults[("r1", f"r1{z}")] = [cap("r1", f"r1{z}")]
    handle, attempts, sleeps = run(fake, store, [Placement("fake", "r1", None, "gpu.x")], retry_until_up=True,
                                   backoff=Backoff(5, 2, 60, 0))  # fmt: skip
    assert handle.zone == "r1a" and sleeps == [5.0]
    assert [a.outcome for a in attempts] == ["failed"] * 3 + ["launched"]


def test_retry_until_up_does_not_wait_for_permanent_errors(store: StateStore) -> None:
    bad = FakeCloud("bad")
    bad.always[(None, None)] = CredentialsError("AuthFailure", cloud="bad")
    sleeps: list[float] = []
    with pytest.raises(FailoverExhaustedError):
        launch_with_failover("c4", 1, [Placement("bad", "r1")], {"bad": bad}, store, retry_until_up=True,
                             sleep=sleeps.append)  # fmt: skip
    assert len(bad.launches) == 1 and len(sleeps) == 1


def test_callable_source_sees_the_blocklist_and_callback_sees_attempts(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", "r1a")] = [QuotaError("quota", cloud="fake", region="r1")]
    seen: list[int] = []

    def next_placement(blocklist: Blocklist) -> Placement | None:
        seen.append(len(blocklist))
        for region in ("r1", "r2"):
            if not blocklist.blocks("fake", region, None, "gpu.x", False):
                return Placement("fake", region, None, "gpu.x")
        return None

    reported: list[Attempt] = []
    handle, _, _ = run(fake, store, next_placement, on_attempt=reported.append)
    assert handle.region == "r2" and seen == [0, 1]
    assert [a.outcome for a in reported] == ["failed", "launched"]


def test_unknown_cloud_is_blocked(fake: FakeCloud, store: StateStore) -> None:
    handle, attempts, _ = run(fake, store, [Placement("gcp", "us-central1"), Placement("fake", "r1", "r1c")])
    assert handle.zone == "r1c" and isinstance(attempts[0].error, ConfigError)


def test_region_less_placement_is_tried_once(fake: FakeCloud, store: StateStore) -> None:
    fake.always[(None, None)] = cap("r1", None)
    with pytest.raises(FailoverExhaustedError, match="1 failed attempt"):
        run(fake, store, [Placement("fake", None, None, "gpu.x")])


def test_idempotency_token_sequence_continues_across_calls(fake: FakeCloud, store: StateStore) -> None:
    fake.faults[("r1", "r1a")] = [cap("r1", "r1a")]
    run(fake, store, [Placement("fake", "r1", None, "gpu.x")])
    fake.clusters.clear()
    run(fake, store, [Placement("fake", "r1", None, "gpu.x")])
    assert [launch["attempt"] for launch in fake.launches] == [0, 1, 2]


def test_placement_coercion() -> None:
    tp = TaskPlacement("aws", "us-east-1", None, "p4d.24xlarge", {"A100": 8}, True, 12.5, 25.0)
    p = Placement.coerce(tp)
    assert p == Placement("aws", "us-east-1", None, "p4d.24xlarge", True, 12.5)
    assert Placement.coerce(p.to_dict()) == p
    assert Placement.coerce(("aws", "us-east-1", "us-east-1a", "g5.xlarge", False, 1.0)).zone == "us-east-1a"
    assert p.where() == "aws/us-east-1 p4d.24xlarge [spot]"

    class Res:
        cloud, region, zone, instance_type, use_spot = None, "r1", None, "m5.large", False

    [q] = placements_from_resources([Res()], "aws", price=lambda r: 0.1)
    assert (q.cloud, q.region, q.hourly_price) == ("aws", "r1", 0.1) and isinstance(q.resources, Res)


def test_blocklist_semantics() -> None:
    bl = Blocklist()
    spot_zone = bl.add_error(cap("r1", "r1a"), cloud="fake", region="r1", zone="r1a", instance_type="gpu.x",
                             use_spot=True)  # fmt: skip
    assert spot_zone == BlockEntry("fake", "r1", "r1a", "gpu.x", True)
    assert bl.blocks("fake", "r1", "r1a", "gpu.x", True)
    assert not bl.blocks("fake", "r1", "r1a", "gpu.x", False)  # on-demand capacity is separate
    assert not bl.blocks("fake", "r1", "r1a", "gpu.y", True)
    assert not bl.blocks("fake", "r1", None, "gpu.x", True)  # the rest of the region is still open
    assert bl.add_error(TransientError("x"), cloud="fake", region="r1", zone="r1a", instance_type=None,
                        use_spot=False) is None  # fmt: skip
    quota = QuotaError("q", cloud="fake", region="r2")
    assert bl.add_error(quota, cloud="fake", region="r2", zone="r2a", instance_type="gpu.x", use_spot=False) == \
        BlockEntry("fake", "r2")  # fmt: skip
    glob = QuotaError("GPUS_ALL_REGIONS", cloud="gcp", global_quota=True)
    bl.add_error(glob, cloud="gcp", region="us-central1", zone=None, instance_type=None, use_spot=False)
    assert bl.blocks("gcp", "europe-west4", "europe-west4-a", "a2", False)
    creds = CredentialsError("no", cloud="azure")
    bl.add_error(creds, cloud="azure", region="eastus", zone=None, instance_type=None, use_spot=False)
    assert bl.locations()[-1].cloud == "azure" and len(bl) == 4
    bl.clear(keep=lambda e: e.permanent)
    assert [e.cloud for e in bl] == ["azure"] and bl.to_list()[0]["error_class"] == "CredentialsError"


def test_ordered_source_skips_blocked() -> None:
    source = ordered_source([Placement("a", "r1"), Placement("b", "r1")])
    bl = Blocklist()
    assert source(bl).cloud == "a"
    bl.add(BlockEntry("a"))
    assert source(bl).cloud == "b"
    bl.add(BlockEntry("b", "r1"))
    assert source(bl) is None
