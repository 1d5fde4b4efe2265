"""Fixtures and helpers shared by the tests of the VM clouds against their fakes (moto, fake_gcp, fake_azure).

What differs per cloud (how a cloud is made, what counts as left behind and how it is named in a
failure) is passed in; the steps themselves are the same for every cloud.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from airflow_provider_sky.clouds.base import Cloud
from airflow_provider_sky.provision.failover import Backoff, launch_with_failover
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.state import StateStore

FAST = Backoff(initial=0.01, factor=2, maximum=0.05, jitter=0)

C = TypeVar("C", bound=Cloud)


def cloud_fixtures(make: Callable[[Any, Path], C], server: str, fake: str) -> tuple[Any, Any]:
    """The fixtures ``shared_cloud``, ``cloud`` of a test module; assign them to those names there.

    ``shared_cloud``: one cloud for the module, ``make(<the session fixture `server`>, key_dir)``
    (clients, key pair and network set-up are made once). ``cloud``: that cloud, once the per-test
    fixture `fake` (clean faults and stats, the loopback guard) is set up.
    """

    @pytest.fixture(scope="module")
    def shared_cloud(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> C:
        return make(request.getfixturevalue(server), tmp_path_factory.mktemp("keys"))

    @pytest.fixture
    def cloud(shared_cloud: C, request: pytest.FixtureRequest) -> C:
        request.getfixturevalue(fake)
        return shared_cloud

    return shared_cloud, cloud


class _ClusterFake(Protocol):
    def clear_faults(self) -> None: ...

    def live(self, cluster_name: str) -> list[dict[str, Any]]: ...

    def purge(self, cluster_name: str) -> None: ...


def purged_cluster(fake: _ClusterFake, what: str, key: str) -> Iterator[str]:
    """Body of a ``cluster`` fixture: a fresh name; after the test nothing of it may be live in `fake`
    (what is, is purged so it cannot leak into other tests, and reported as `what`, by `key`)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    fake.clear_faults()
    left = fake.live(name)
    fake.purge(name)
    assert not left, f"{what} of {name} left: {[r[key] for r in left]}"


def terminated_cluster(cloud: Cloud, clear_faults: Callable[[], None], live: Callable[[str], list[Any]],
                       leftover: str) -> Iterator[str]:  # fmt: skip
    """Body of a failover test's ``cluster`` fixture: a fresh name; afterwards the cluster is terminated
    through `cloud` if it is up, and `live(name)` must be empty (else `leftover`, formatted with name)."""
    name = f"fo-{uuid.uuid4().hex[:10]}"
    yield name
    clear_faults()
    handle = cloud.find(name)
    if handle is not None:  # the test's own teardown: tear down what it launched
        cloud.terminate(handle)
    assert live(name) == [], leftover.format(name=name)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def launch(cluster: str, cloud: Cloud, store: StateStore, placements: list[Placement], num_nodes: int = 1, **kw: Any):
    """`launch_with_failover` over `cloud` alone, with the FAST backoff unless `kw` has another."""
    kw.setdefault("backoff", FAST)
    return launch_with_failover(cluster, num_nodes, placements, {cloud.name: cloud}, store, **kw)
