"""Data-transfer (egress) prices per cloud, as published list prices.

Prices are USD per GB, list prices as of ``EGRESS_PRICES_DATE``. The source cloud is billed.
Modelled:

* same region: free (inter-zone charges inside a region are ignored);
* inter-region within one cloud: a per-GB rate by source and destination continent;
* to another cloud or the internet: the source cloud's internet rate with volume tiers.
  Tiers are applied to the volume of one transfer (monthly account totals are unknown here)
  and monthly free allowances are ignored, so estimates err on the high side;
* ``local`` (this machine): uploading to a cloud is free (ingress), downloading is internet egress.

A location whose region is ``None`` stands for "somewhere in that cloud" (a bucket given only by
its URI): transfers to the same cloud are then counted as free.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from airflow_provider_sky.catalog.regions import (
    AFRICA,
    ASIA,
    EUROPE,
    LOCAL,
    MIDDLE_EAST,
    NORTH_AMERICA,
    OCEANIA,
    SOUTH_AMERICA,
    continent_of,
)

EGRESS_PRICES_DATE = "2025-06-01"

Tiers = tuple[tuple[float, float], ...]
"""Volume tiers: ``(up_to_gb, usd_per_gb)``; the last tier has ``up_to_gb = inf``."""

_INF = float("inf")
_TB = 1024.0


def _tiers(*pairs: tuple[float, float]) -> Tiers:
    return tuple(pairs)


# Internet egress by source cloud and source continent.
_INTERNET: dict[str, dict[str, Tiers]] = {
    "aws": {
        NORTH_AMERICA: _tiers((10 * _TB, 0.09), (50 * _TB, 0.085), (150 * _TB, 0.07), (_INF, 0.05)),
        EUROPE: _tiers((10 * _TB, 0.09), (50 * _TB, 0.085), (150 * _TB, 0.07), (_INF, 0.05)),
        ASIA: _tiers((10 * _TB, 0.114), (50 * _TB, 0.089), (150 * _TB, 0.086), (_INF, 0.084)),
        OCEANIA: _tiers((10 * _TB, 0.114), (50 * _TB, 0.098), (150 * _TB, 0.094), (_INF, 0.092)),
        SOUTH_AMERICA: _tiers((10 * _TB, 0.15), (50 * _TB, 0.138), (150 * _TB, 0.126), (_INF, 0.114)),
        MIDDLE_EAST: _tiers((10 * _TB, 0.117), (50 * _TB, 0.1105), (150 * _TB, 0.1085), (_INF, 0.1065)),
        AFRICA: _tiers((10 * _TB, 0.154), (50 * _TB, 0.147), (150 * _TB, 0.145), (_INF, 0.143)),
    },
    "gcp": {
        # Premium tier, worldwide destinations excluding China and Australia.
        c: _tiers((1 * _TB, 0.12), (10 * _TB, 0.11), (_INF, 0.08))
        for c in (NORTH_AMERICA, EUROPE, ASIA, OCEANIA, SOUTH_AMERICA, MIDDLE_EAST, AFRICA)
    },
    "azure": {
        # Microsoft premium global network routing, by source zone.
        NORTH_AMERICA: _tiers((10 * _TB, 0.087), (50 * _TB, 0.083), (150 * _TB, 0.07), (_INF, 0.05)),
        EUROPE: _tiers((10 * _TB, 0.087), (50 * _TB, 0.083), (150 * _TB, 0.07), (_INF, 0.05)),
        ASIA: _tiers((10 * _TB, 0.12), (50 * _TB, 0.085), (150 * _TB, 0.082), (_INF, 0.08)),
        OCEANIA: _tiers((10 * _TB, 0.12), (50 * _TB, 0.085), (150 * _TB, 0.082), (_INF, 0.08)),
        MIDDLE_EAST: _tiers((10 * _TB, 0.12), (50 * _TB, 0.085), (150 * _TB, 0.082), (_INF, 0.08)),
        AFRICA: _tiers((10 * _TB, 0.12), (50 * _TB, 0.085), (150 * _TB, 0.082), (_INF, 0.08)),
        SOUTH_AMERICA: _tiers((10 * _TB, 0.181), (50 * _TB, 0.175), (150 * _TB, 0.17), (_INF, 0.16)),
    },
}

# Inter-region rate within AWS by source continent (destination does not matter on AWS).
_AWS_INTER_REGION = {
    NORTH_AMERICA: 0.02,
    EUROPE: 0.02,
    ASIA: 0.09,
    OCEANIA: 0.098,
    SOUTH_AMERICA: 0.138,
    MIDDLE_EAST: 0.1105,
    AFRICA: 0.147,
}
_AWS_PAIR_OVERRIDES = {frozenset({"us-east-1", "us-east-2"}): 0.01}

# GCP inter-region: within one continent, and between continents (by the pair).
_GCP_WITHIN = {
    NORTH_AMERICA: 0.02,
    EUROPE: 0.02,
    ASIA: 0.08,
    OCEANIA: 0.08,
    SOUTH_AMERICA: 0.14,
    MIDDLE_EAST: 0.11,
    AFRICA: 0.11,
}
# Azure inter-region: within one continent, and from a continent to another one.
_AZURE_WITHIN = {
    NORTH_AMERICA: 0.02,
    EUROPE: 0.02,
    ASIA: 0.08,
    OCEANIA: 0.08,
    SOUTH_AMERICA: 0.16,
    MIDDLE_EAST: 0.08,
    AFRICA: 0.16,
}
_AZURE_BETWEEN = {
    NORTH_AMERICA: 0.05,
    EUROPE: 0.05,
    ASIA: 0.08,
    OCEANIA: 0.08,
    MIDDLE_EAST: 0.08,
    SOUTH_AMERICA: 0.16,
    AFRICA: 0.16,
}


@dataclass(frozen=True)
class Location:
    """Where data sits for egress purposes: a cloud and (optionally) a region."""

    cloud: str
    region: str | None = None

    @property
    def continent(self) -> str:
        return continent_of(self.cloud, self.region)


def _gcp_between(src: str, dst: str) -> float:
    if {src, dst} <= {NORTH_AMERICA, EUROPE}:
        return 0.05
    if OCEANIA in (src, dst) or SOUTH_AMERICA in (src, dst):
        return 0.15
    return 0.08


def inter_region_price(cloud: str, src_region: str, dst_region: str) -> float:
    """USD/GB between two different regions of one cloud."""
    src_c, dst_c = continent_of(cloud, src_region), continent_of(cloud, dst_region)
    if cloud == "aws":
        override = _AWS_PAIR_OVERRIDES.get(frozenset({src_region, dst_region}))
        return override if override is not None else _AWS_INTER_REGION[src_c]
    if cloud == "gcp":
        return _GCP_WITHIN[src_c] if src_c == dst_c else _gcp_between(src_c, dst_c)
    if cloud == "azure":
        return _AZURE_WITHIN[src_c] if src_c == dst_c else _AZURE_BETWEEN[src_c]
    return internet_tiers(cloud, src_region)[0][1]


def internet_tiers(cloud: str, region: str | None) -> Tiers:
    """Volume tiers for traffic leaving ``cloud`` to the internet or another cloud."""
    if cloud == LOCAL:
        return ((_INF, 0.0),)
    table = _INTERNET.get(cloud)
    if table is None:  # unknown cloud: assume AWS-like rates rather than free
        table = _INTERNET["aws"]
    return table.get(continent_of(cloud, region), table[NORTH_AMERICA])


def tiered_cost(tiers: Tiers, gb: float) -> float:
    """Cost of moving ``gb`` through volume tiers."""
    cost, done = 0.0, 0.0
    for upto, price in tiers:
        if gb <= done:
            break
        step = min(gb, upto) - done
        cost += step * price
        done = min(gb, upto)
    return cost


@functools.lru_cache(maxsize=65536)
def egress_cost(src_cloud: str, src_region: str | None, dst_cloud: str, dst_region: str | None, gb: float) -> float:
    """USD to move ``gb`` from (src_cloud, src_region) to (dst_cloud, dst_region)."""
    if gb <= 0:
        return 0.0
    if src_cloud == dst_cloud:
        if src_cloud == LOCAL or src_region is None or dst_region is None or src_region == dst_region:
            return 0.0
        return gb * inter_region_price(src_cloud, src_region, dst_region)
    return tiered_cost(internet_tiers(src_cloud, src_region), gb)


def regions_with_pair_prices(cloud: str) -> frozenset[str]:
    """Regions whose inter-region price depends on the partner region, not only its continent."""
    if cloud != "aws":
        return frozenset()
    return frozenset(r for pair in _AWS_PAIR_OVERRIDES for r in pair)


def max_price_per_gb() -> float:
    """The highest per-GB rate in these tables (an upper bound for any transfer)."""
    internet = max(t[0][1] for table in _INTERNET.values() for t in table.values())
    within = max(*_AWS_INTER_REGION.values(), *_GCP_WITHIN.values(), *_AZURE_WITHIN.values(), *_AZURE_BETWEEN.values(), 0.15)
    return max(internet, within)


def egress_price_per_gb(src: Location, dst: Location, gb: float = 1.0) -> float:
    """Average USD/GB for a transfer of ``gb`` between two locations."""
    if gb <= 0:
        return 0.0
    return egress_cost(src.cloud, src.region, dst.cloud, dst.region, gb) / gb
