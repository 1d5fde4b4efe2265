"""Turn spec ``Resources`` into catalog queries (one per concrete alternative)."""

from __future__ import annotations

from typing import Any

from airflow_provider_sky.catalog.query import OfferingQuery

# SkyPilot's default VM when nothing is asked: 8+ vCPUs with 4 GiB per vCPU.
DEFAULT_CPUS = 8.0
DEFAULT_MEMORY_GIB = 32.0


def _quantity(q: Any) -> tuple[float | None, bool]:
    if q is None:
        return None, True
    if isinstance(q, int | float):
        return float(q), False
    return float(q.value), bool(q.at_least)


def query_for(res: Any) -> OfferingQuery:
    """Catalog query for one concrete Resources (at most one accelerator entry)."""
    acc_name: str | None = None
    acc_count: float | None = None
    accs = getattr(res, "accelerators", None)
    if accs:
        ((acc_name, count),) = list(accs.items())[:1]
        acc_count = float(count if count is not None else 1)
    cpus, cpus_at_least = _quantity(getattr(res, "cpus", None))
    mem, mem_at_least = _quantity(getattr(res, "memory", None))
    instance_type = getattr(res, "instance_type", None)
    cloud = getattr(res, "cloud", None)
    if acc_name is None and instance_type is None and cpus is None and mem is None and cloud != "local":
        cpus, cpus_at_least, mem, mem_at_least = DEFAULT_CPUS, True, DEFAULT_MEMORY_GIB, True
    return OfferingQuery(
        accelerator=acc_name,
        accelerator_count=acc_count,
        cpus=cpus,
        cpus_at_least=cpus_at_least,
        memory_gib=mem,
        memory_at_least=mem_at_least,
        cloud=cloud,
        region=getattr(res, "region", None),
        zone=getattr(res, "zone", None),
        instance_type=instance_type,
        use_spot=bool(getattr(res, "use_spot", False)),
    )


def alternatives(res: Any) -> tuple[list[OfferingQuery], bool]:
    """(queries in the user's order, ordered?) for a possibly any_of/ordered Resources."""
    if res is None:
        return [query_for(None)], False
    cands = res.candidates() if hasattr(res, "candidates") else [res]
    ordered = bool(getattr(res, "is_ordered", False))
    return [query_for(c) for c in cands], ordered
