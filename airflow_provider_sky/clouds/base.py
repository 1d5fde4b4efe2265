"""The interface every backend implements, and the handle that names a launched cluster."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_sky.clouds.errors import ProvisionError

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner
    from airflow_provider_sky.spec.resources import Resources


@dataclass(frozen=True)
class ClusterHandle:
    """Everything needed to reach a launched cluster again; stored as JSON in the state store."""

    cloud: str
    cluster_name: str
    region: str | None
    zone: str | None
    instance_type: str | None
    num_nodes: int
    node_ips: tuple[str, ...] = ()
    node_ids: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def head_ip(self) -> str | None:
        return self.node_ips[0] if self.node_ips else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_ips"] = list(self.node_ips)
        data["node_ids"] = list(self.node_ids)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterHandle:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["node_ips"] = tuple(known.get("node_ips") or ())
        known["node_ids"] = tuple(known.get("node_ids") or ())
        known["extra"] = dict(known.get("extra") or {})
        return cls(**known)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> ClusterHandle:
        """Parse `to_json()` output (a dict from a JSON column is accepted too); unknown keys are ignored."""
        return cls.from_dict(text if isinstance(text, Mapping) else json.loads(text))


class Cloud(ABC):
    """A place that can run clusters: launch, find, stop/start, terminate, and reach their nodes.

    Implementations raise (or let `classify_error` turn their own exceptions into) the classes of
    `clouds.errors`, so the provisioner can fail over without knowing the cloud.
    """

    name: ClassVar[str]

    @abstractmethod
    def regions(self) -> list[str]:
        """Regions this cloud can launch in."""

    @abstractmethod
    def zones(self, region: str) -> list[str]:
        """Zones of `region` (empty when the cloud has no zones)."""

    @abstractmethod
    def launch(
        self,
        cluster_name: str,
        num_nodes: int,
        resources: Resources | None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> ClusterHandle:
        """Create the cluster, or return it when it already exists (idempotent)."""

    @abstractmethod
    def find(self, cluster_name: str) -> ClusterHandle | None:
        """The live (up or stopped) cluster of that name, or None."""

    @abstractmethod
    def terminate(self, handle: ClusterHandle) -> None:
        """Delete the cluster and everything running on it (idempotent)."""

    @abstractmethod
    def stop(self, handle: ClusterHandle) -> None:
        """Stop the nodes (jobs die, disks stay)."""

    @abstractmethod
    def start(self, handle: ClusterHandle) -> ClusterHandle:
        """Restart stopped nodes; the returned handle has the current IPs."""

    @abstractmethod
    def runners(self, handle: ClusterHandle) -> list[CommandRunner]:
        """One command runner per node, head node first."""

    def classify_error(self, exc: BaseException) -> ProvisionError:
        """Map an exception from this cloud into the common taxonomy (default: unclassified)."""
        if isinstance(exc, ProvisionError):
            return exc
        return ProvisionError(f"{type(exc).__name__}: {exc}", cloud=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
