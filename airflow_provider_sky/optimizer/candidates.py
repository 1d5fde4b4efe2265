"""Per task: the feasible catalog offerings, priced, reduced to the cheapest one per region."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.local import LOCAL_CLOUD
from airflow_provider_sky.catalog.query import OfferingQuery
from airflow_provider_sky.optimizer.errors import InfeasibleTaskError
from airflow_provider_sky.optimizer.requests import alternatives

Blocked = tuple[str | None, str | None, str | None, str | None]
"""(cloud, region, zone, instance_type) from failover; None = any."""


@dataclass(frozen=True)
class PricedRows:
    """Offerings of a task before placement: catalog rows, spot flags, per-instance hourly prices."""

    rows: np.ndarray
    use_spot: np.ndarray
    hourly: np.ndarray


def normalize_blocked(blocked: Iterable | None) -> tuple[Blocked, ...]:
    """Accept tuples (padded with None) or dicts with cloud/region/zone/instance_type keys."""
    out: list[Blocked] = []
    for b in blocked or ():
        if isinstance(b, dict):
            out.append((b.get("cloud"), b.get("region"), b.get("zone"), b.get("instance_type")))
        else:
            t = (*tuple(b), None, None, None, None)[:4]
            out.append(t)  # type: ignore[arg-type]
    return tuple(out)


def _unblocked(catalog: Catalog, rows: np.ndarray, blocked: tuple[Blocked, ...]) -> np.ndarray:
    if not blocked or not len(rows):
        return rows
    t = catalog.table
    keep = np.ones(len(rows), dtype=bool)
    for cloud, region, zone, itype in blocked:
        hit = np.ones(len(rows), dtype=bool)
        for col, val in ((t.cloud, cloud), (t.region, region), (t.zone, zone), (t.instance_type, itype)):
            if val is not None:
                hit &= col[rows] == val
        keep &= ~hit
    return rows[keep]


class CandidateFinder:
    """Finds and prices offerings per Resources, memoised (DAGs repeat the same resources)."""

    def __init__(self, catalog: Catalog, blocked: Iterable | None = None, clouds: Iterable[str] | None = None):
        self.catalog = catalog
        self.blocked = normalize_blocked(blocked)
        self.clouds = None if clouds is None else tuple(sorted({str(c).lower() for c in clouds}))
        self._cloud_mask = None if self.clouds is None else np.isin(catalog.cloud_names, self.clouds)
        self._cache: dict[object, PricedRows | tuple[str, OfferingQuery, bool]] = {}
        self._per_region: dict[int, tuple[np.ndarray, ...]] = {}

    def per_region(self, task_name: str, resources: object, scale: float) -> tuple[PricedRows, tuple[np.ndarray, ...]]:
        """``priced_rows`` plus :func:`cheapest_per_region` of them (memoised per distinct resources)."""
        priced = self.priced_rows(task_name, resources)
        hit = self._per_region.get(id(priced))
        if hit is None:
            hit = cheapest_per_region(self.catalog, priced, 1.0)
            self._per_region[id(priced)] = hit
        regions, hourly, rows, spot, _ = hit
        return priced, (regions, hourly * scale, rows, spot, hourly)

    def priced_rows(self, task_name: str, resources: object) -> PricedRows:
        """All unblocked offerings for ``resources`` (any_of = union, ordered = first feasible)."""
        try:
            key: object = resources
            hash(key)
        except TypeError:
            key = id(resources)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._compute(resources)
            self._cache[key] = hit
        if isinstance(hit, tuple):
            problem, query, blocked_all = hit
            raise InfeasibleTaskError(task_name, self._message(task_name, problem, query, blocked_all))
        return hit

    def rows_for(self, q: OfferingQuery) -> tuple[np.ndarray, bool, bool]:
        """(usable rows, any match in the catalog, any match in the enabled clouds) for one query.

        The free ``local`` backend is a candidate when the task pins ``cloud: local``, or when it
        is the only enabled cloud (otherwise it would take every unpinned task).
        """
        found = self.catalog.find(q)
        if self.clouds == (LOCAL_CLOUD,) and q.cloud is None:
            # only this machine is enabled: an unpinned task runs on the local backend if it can
            found = np.concatenate([found, self.catalog.find(replace(q, cloud=LOCAL_CLOUD))])
        matched = bool(len(found))
        if self._cloud_mask is not None and len(found):
            found = found[self._cloud_mask[self.catalog.row_cloud[found]]]
        return _unblocked(self.catalog, found, self.blocked), matched, bool(len(found))

    def _compute(self, resources: object) -> PricedRows | tuple[str, OfferingQuery, bool]:
        queries, ordered = alternatives(resources)
        parts: list[tuple[np.ndarray, bool]] = []
        any_matched = any_enabled = False
        for q in queries:
            rows, matched, enabled = self.rows_for(q)
            any_matched |= matched
            any_enabled |= enabled
            if len(rows):
                parts.append((rows, q.use_spot))
                if ordered:
                    break
        if not parts:
            why = "blocked" if any_enabled else ("clouds" if any_matched else "")
            return (why, queries[0], any_enabled)
        rows = np.concatenate([r for r, _ in parts])
        spot = np.concatenate([np.full(len(r), s) for r, s in parts])
        hourly = np.where(spot, self.catalog.table.spot_price[rows], self.catalog.table.price[rows])
        return PricedRows(rows, spot, hourly)

    def _message(self, task_name: str, why: str, q: OfferingQuery, blocked_all: bool) -> str:
        head = f"no offering satisfies task '{task_name}': {q.describe()}"
        if why == "blocked" or blocked_all:
            blocked = ", ".join("/".join(p or "*" for p in b) for b in self.blocked)
            return f"{head}; every matching offering is blocked after failures ({blocked})"
        if why == "clouds":
            enabled = ", ".join(self.clouds or ()) or "none"
            return f"{head}; it is only offered on clouds that are not enabled (enabled: {enabled}); enable one in the sky connection"
        return f"{head}; {self.catalog.explain_missing(q)}"


def cheapest_per_region(catalog: Catalog, priced: PricedRows, scale: float) -> tuple[np.ndarray, ...]:
    """(region ids, cost, row, use_spot, hourly) keeping the cheapest offering per region.

    ``scale`` = hours x nodes. Ties go to the lower row index (deterministic plans).
    """
    region = catalog.row_region[priced.rows]
    order = np.lexsort((priced.rows, priced.hourly, region))
    region_sorted = region[order]
    first = np.flatnonzero(np.r_[True, region_sorted[1:] != region_sorted[:-1]])
    pick = order[first]
    hourly = priced.hourly[pick]
    return region[pick], hourly * scale, priced.rows[pick], priced.use_spot[pick], hourly
