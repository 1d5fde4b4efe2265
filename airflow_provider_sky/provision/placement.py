"""Placements (where one launch attempt goes) and placement sources (what to try next).

A placement source is any callable ``next_placement(blocklist) -> Placement | None``: the optimizer
plugs in by re-planning with the blocklist; `ordered_source` walks a fixed, best-first list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_sky.provision.blocklist import Blocklist


@dataclass(frozen=True)
class Placement:
    """Cloud, region, zone (None: any zone of the region), instance type, market and price per node-hour."""

    cloud: str
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool = False
    hourly_price: float | None = None
    resources: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def coerce(cls, value: Any) -> Placement:
        """Accept a Placement, a mapping, a (cloud, region, zone, type, spot, price) tuple, or any object
        with those attributes (e.g. the optimizer's ``TaskPlacement``)."""
        if isinstance(value, Placement):
            return value
        if isinstance(value, Mapping):
            return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})
        if isinstance(value, tuple):
            return cls(*value)
        return cls(
            cloud=value.cloud,
            region=getattr(value, "region", None),
            zone=getattr(value, "zone", None),
            instance_type=getattr(value, "instance_type", None),
            use_spot=bool(getattr(value, "use_spot", False)),
            hourly_price=getattr(value, "hourly_price", None),
            resources=getattr(value, "resources", None),
        )

    def where(self, zone: str | None = None) -> str:
        text = "/".join(p for p in (self.cloud, self.region, zone or self.zone) if p)
        if self.instance_type:
            text += f" {self.instance_type}"
        return text + (" [spot]" if self.use_spot else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "hourly_price": self.hourly_price,
        }


PlacementSource = Callable[["Blocklist"], Placement | None]


def ordered_source(placements: Iterable[Any]) -> PlacementSource:
    """The first placement of a best-first list that the blocklist does not rule out."""
    items = [Placement.coerce(p) for p in placements]

    def next_placement(blocklist: Blocklist) -> Placement | None:
        return next((p for p in items if not blocklist.blocks_placement(p)), None)

    return next_placement


def as_source(candidates: PlacementSource | Iterable[Any]) -> PlacementSource:
    """A placement source from a callable (used as is) or an iterable of placements (ordered)."""
    if callable(candidates):
        return candidates
    return ordered_source(candidates)


def placements_from_resources(
    candidates: Iterable[Any],
    default_cloud: str,
    price: Callable[[Any], float | None] | None = None,
) -> list[Placement]:
    """Placements for `Resources.candidates()` (no optimizer): pinned cloud/region/zone/type as given."""
    out = []
    for res in candidates:
        out.append(
            Placement(
                cloud=getattr(res, "cloud", None) or default_cloud,
                region=getattr(res, "region", None),
                zone=getattr(res, "zone", None),
                instance_type=getattr(res, "instance_type", None),
                use_spot=bool(getattr(res, "use_spot", False)),
                hourly_price=price(res) if price else None,
                resources=res,
            )
        )
    return out
