"""What failover has ruled out so far: clouds, regions, zones (per instance type and market).

An entry matches a location when every field it sets equals the location's (None = any), so
``BlockEntry("aws", "us-east-1")`` rules out the whole region and
``BlockEntry("aws", "us-east-1", "us-east-1a", "p4d.24xlarge", use_spot=True)`` only spot p4d there.
Capacity failures are kept that narrow (no p4d capacity in a zone says nothing about g5 there);
quota blocks the region (or the cloud for a global quota); config/credentials block the cloud.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.clouds.errors import (
    Blocked,
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    Scope,
)


@dataclass(frozen=True)
class BlockEntry:
    """A ruled-out slice of the search space; None fields match anything."""

    cloud: str
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    reason: str = field(default="", compare=False)
    error_class: str | None = field(default=None, compare=False)

    def covers(
        self,
        cloud: str,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool | None = None,
    ) -> bool:
        """Whether this entry rules out that location (a None in the query is a wildcard it must cover)."""
        pairs = (
            (self.cloud, cloud),
            (self.region, region),
            (self.zone, zone),
            (self.instance_type, instance_type),
            (self.use_spot, use_spot),
        )
        return all(mine is None or mine == theirs for mine, theirs in pairs)

    @property
    def permanent(self) -> bool:
        """Config / credentials problems do not go away by waiting."""
        return self.error_class in (ConfigError.__name__, CredentialsError.__name__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "reason": self.reason,
            "error_class": self.error_class,
        }


class Blocklist:
    """An ordered, de-duplicated set of `BlockEntry`; what the placement source must avoid."""

    def __init__(self, entries: list[BlockEntry] | None = None) -> None:
        self._entries: list[BlockEntry] = []
        for entry in entries or ():
            self.add(entry)

    def __iter__(self) -> Iterator[BlockEntry]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Blocklist({self._entries!r})"

    def add(self, entry: BlockEntry) -> BlockEntry:
        if entry not in self._entries:
            self._entries.append(entry)
        return entry

    def add_error(
        self,
        error: ProvisionError,
        *,
        cloud: str,
        region: str | None,
        zone: str | None,
        instance_type: str | None,
        use_spot: bool,
    ) -> BlockEntry | None:
        """Block what `error` rules out (its own location wins over the attempted one); None for retries."""
        scope = error.scope
        if scope is Scope.NONE:
            return None
        cloud = error.cloud or cloud
        region = error.region or region
        kind = type(error).__name__
        if scope is Scope.CLOUD:
            entry = BlockEntry(cloud, reason=error.message, error_class=kind)
        elif isinstance(error, CapacityError):
            zone = error.zone if error.zone is not None or error.region else zone
            entry = BlockEntry(
                cloud, region, zone, error.instance_type or instance_type, use_spot, error.message, kind
            )
        else:  # quota and unclassified failures: the region
            entry = BlockEntry(cloud, region, reason=error.message, error_class=kind)
        return self.add(entry)

    def blocks(
        self,
        cloud: str,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool | None = None,
    ) -> bool:
        return any(e.covers(cloud, region, zone, instance_type, use_spot) for e in self._entries)

    def blocks_placement(self, placement: Any, zone: str | None = None) -> bool:
        """Whether a placement (anything with cloud/region/zone/instance_type/use_spot) is ruled out."""
        return self.blocks(
            placement.cloud,
            placement.region,
            zone if zone is not None else placement.zone,
            placement.instance_type,
            bool(placement.use_spot),
        )

    def clear(self, keep: Callable[[BlockEntry], bool] | None = None) -> None:
        """Forget entries (all, or those for which `keep` is false)."""
        self._entries = [e for e in self._entries if keep is not None and keep(e)]

    def locations(self) -> list[Blocked]:
        """Entries that block a whole location regardless of instance type, as `clouds.errors.Blocked`."""
        return [
            Blocked(e.cloud, e.region, e.zone)
            for e in self._entries
            if e.instance_type is None and e.use_spot is None
        ]

    def to_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self._entries]
