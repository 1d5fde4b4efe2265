"""The indexed catalog: candidate lookup by accelerator, cpus and memory without scanning the table.

Rows are grouped by (accelerator, count) (CPU-only rows form the group ``("", 0)``); each group is
sorted by vCPUs, so a cpus request is a ``np.searchsorted`` range and only the rows in that range are
checked (vectorised) for memory, location and price. Instance types have their own index. Location
columns are integer-coded, so pins are integer comparisons.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from airflow_provider_sky.catalog.local import LOCAL_CLOUD, local_offering
from airflow_provider_sky.catalog.offerings import Offering, OfferingTable
from airflow_provider_sky.catalog.query import OfferingQuery

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class _Group:
    rows: np.ndarray  # row indices sorted by vcpus
    vcpus: np.ndarray  # vcpus of those rows, ascending (NaN last)


class Catalog:
    """Offerings of one or more clouds plus indexes. Build with :func:`load_catalog` or directly."""

    def __init__(self, table: OfferingTable, *, source: str = "", date: str | None = None, include_local: bool = True):
        if include_local and not np.any(table.cloud == LOCAL_CLOUD):
            table = OfferingTable.concat([table, OfferingTable.from_offerings([local_offering()])])
        self.table = table
        self.source = source
        self.date = date
        t = table
        self.cloud_names, self.row_cloud = np.unique(t.cloud, return_inverse=True)
        keys = np.char.add(np.char.add(t.cloud, "/"), t.region)
        region_keys, self.row_region = np.unique(keys, return_inverse=True)
        self.region_names: list[tuple[str, str]] = [tuple(k.split("/", 1)) for k in region_keys.tolist()]
        self._region_code = {rc: i for i, rc in enumerate(self.region_names)}
        self._cloud_code = {str(c): i for i, c in enumerate(self.cloud_names.tolist())}
        self.local_rows = np.flatnonzero(t.cloud == LOCAL_CLOUD)
        cloud_rows = np.flatnonzero(t.cloud != LOCAL_CLOUD)

        acc_lower = np.char.lower(t.accelerator)
        self._accelerators = {a.lower(): a for a in np.unique(t.accelerator[cloud_rows]).tolist() if a}
        self._groups: dict[tuple[str, float], _Group] = {}
        order = cloud_rows[np.lexsort((t.vcpus[cloud_rows], t.accelerator_count[cloud_rows], acc_lower[cloud_rows]))]
        if len(order):
            ka, kc = acc_lower[order], t.accelerator_count[order]
            change = np.flatnonzero((ka[1:] != ka[:-1]) | (kc[1:] != kc[:-1])) + 1
            for chunk in np.split(order, change):
                key = (str(acc_lower[chunk[0]]), float(t.accelerator_count[chunk[0]]))
                self._groups[key] = _Group(chunk, t.vcpus[chunk])
        self._by_type: dict[str, np.ndarray] = {}
        by_type = cloud_rows[np.argsort(t.instance_type[cloud_rows], kind="stable")]
        if len(by_type):
            names = t.instance_type[by_type]
            change = np.flatnonzero(names[1:] != names[:-1]) + 1
            for chunk in np.split(by_type, change):
                self._by_type[str(t.instance_type[chunk[0]])] = chunk

    # -- facts ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    @property
    def clouds(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.cloud_names)

    def accelerator_names(self) -> list[str]:
        """Canonical accelerator names offered (excluding the local machine)."""
        return sorted(self._accelerators.values())

    def canonical_accelerator(self, name: str) -> str | None:
        """The catalog's spelling of ``name`` (case-insensitive), or None."""
        return self._accelerators.get(name.lower())

    def accelerator_counts(self, name: str) -> list[float]:
        """Counts offered for an accelerator."""
        low = name.lower()
        return sorted(c for (a, c) in self._groups if a == low)

    def region_id(self, cloud: str, region: str) -> int | None:
        return self._region_code.get((cloud, region))

    def offering(self, row: int) -> Offering:
        return self.table.row(row)

    def hourly(self, rows: np.ndarray, use_spot: bool) -> np.ndarray:
        return (self.table.spot_price if use_spot else self.table.price)[rows]

    # -- lookup ---------------------------------------------------------------------------------
    def find(self, q: OfferingQuery) -> np.ndarray:
        """Row indices of offerings satisfying ``q`` that have a price for its spot setting."""
        t = self.table
        if q.cloud == LOCAL_CLOUD:
            rows = self.local_rows
            if q.accelerator or (q.instance_type and q.instance_type != LOCAL_CLOUD):
                return _EMPTY
            return self._filter_location(rows, q)
        if q.cloud is not None and q.cloud not in self._cloud_code:
            return _EMPTY
        if q.instance_type:
            rows = self._by_type.get(q.instance_type, _EMPTY)
            if q.accelerator:
                rows = rows[np.char.lower(t.accelerator[rows]) == q.accelerator.lower()]
                if q.accelerator_count is not None:
                    rows = rows[t.accelerator_count[rows] == q.accelerator_count]
            rows = rows[self._cpu_mask(t.vcpus[rows], q.cpus, q.cpus_at_least)]
        else:
            if q.accelerator:
                count = 1.0 if q.accelerator_count is None else float(q.accelerator_count)
                group = self._groups.get((q.accelerator.lower(), count))
            else:
                group = self._groups.get(("", 0.0))
            if group is None:
                return _EMPTY
            rows = group.rows
            if q.cpus is not None:
                lo = np.searchsorted(group.vcpus, q.cpus, side="left")
                hi = len(rows) if q.cpus_at_least else np.searchsorted(group.vcpus, q.cpus, side="right")
                rows = rows[lo:hi]
        if q.memory_gib is not None and len(rows):
            mem = t.memory_gib[rows]
            rows = rows[mem >= q.memory_gib] if q.memory_at_least else rows[mem == q.memory_gib]
        rows = self._filter_location(rows, q)
        if len(rows):
            rows = rows[np.isfinite(self.hourly(rows, q.use_spot))]
        return rows

    @staticmethod
    def _cpu_mask(vcpus: np.ndarray, cpus: float | None, at_least: bool) -> np.ndarray:
        if cpus is None:
            return np.ones(len(vcpus), dtype=bool)
        return vcpus >= cpus if at_least else vcpus == cpus

    def _filter_location(self, rows: np.ndarray, q: OfferingQuery) -> np.ndarray:
        if not len(rows):
            return rows
        if q.cloud is not None and q.region is not None:
            code = self._region_code.get((q.cloud, q.region))
            if code is None:
                return _EMPTY
            rows = rows[self.row_region[rows] == code]
        else:
            if q.cloud is not None:
                rows = rows[self.row_cloud[rows] == self._cloud_code[q.cloud]]
            if q.region is not None:
                rows = rows[self.table.region[rows] == q.region]
        if q.zone is not None and len(rows):
            rows = rows[self.table.zone[rows] == q.zone]
        return rows

    # -- explanations ---------------------------------------------------------------------------
    def nearest(self, q: OfferingQuery, limit: int = 3) -> list[Offering]:
        """Offerings closest to ``q`` when ``find(q)`` is empty: relax location, then spot, then the
        counts and sizes; cheapest first."""
        relaxations: Iterable[dict] = (
            {"zone": None},
            {"zone": None, "region": None},
            {"zone": None, "region": None, "cloud": None},
            {"zone": None, "region": None, "cloud": None, "use_spot": False},
            {"zone": None, "region": None, "cloud": None, "use_spot": False, "accelerator_count": None},
            {"zone": None, "region": None, "cloud": None, "use_spot": False, "accelerator_count": None,
             "cpus": None, "memory_gib": None, "instance_type": None},
        )  # fmt: skip
        for change in relaxations:
            r = replace(q, **change)
            if r.accelerator_count is None and r.accelerator:
                rows = np.concatenate([self.find(replace(r, accelerator_count=c)) for c in self.accelerator_counts(r.accelerator)] or [_EMPTY])
            else:
                rows = self.find(r)
            if len(rows):
                return self._cheapest_distinct(rows, r.use_spot, limit)
        return []

    def _cheapest_distinct(self, rows: np.ndarray, use_spot: bool, limit: int) -> list[Offering]:
        prices = self.hourly(rows, use_spot)
        out: list[Offering] = []
        seen: set[tuple[str, str]] = set()
        for i in rows[np.argsort(prices, kind="stable")]:
            key = (str(self.table.instance_type[i]), str(self.table.region[i]))
            if key in seen:
                continue
            seen.add(key)
            out.append(self.table.row(i))
            if len(out) >= limit:
                break
        return out

    def explain_missing(self, q: OfferingQuery) -> str:
        """Why nothing matches ``q`` and what comes closest (for error messages)."""
        if q.accelerator and self.canonical_accelerator(q.accelerator) is None and q.cloud != LOCAL_CLOUD:
            close = difflib.get_close_matches(q.accelerator, self.accelerator_names(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"offered: {', '.join(self.accelerator_names())}"
            return f"accelerator {q.accelerator!r} is not in the catalog; {hint}"
        if q.cloud is not None and q.cloud not in self._cloud_code:
            return f"cloud {q.cloud!r} is not in the catalog (clouds: {', '.join(self.clouds)})"
        near = self.nearest(q)
        if not near:
            return "nothing in the catalog comes close"
        price = "spot " if q.use_spot else ""
        return f"the nearest offerings ({price}price) are: " + "; ".join(o.describe() for o in near)

