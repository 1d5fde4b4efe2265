"""Best-first placements of one task, for failover: after a failure, take the next one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.loader import load_catalog
from airflow_provider_sky.optimizer.build import task_hours, task_name
from airflow_provider_sky.optimizer.candidates import CandidateFinder
from airflow_provider_sky.optimizer.plan import TaskPlacement
from airflow_provider_sky.optimizer.requests import alternatives


def rank_placements(
    task: Any,
    catalog: Catalog | str | None = None,
    *,
    clouds: Iterable[str] | None = None,
    blocked: Iterable | None = None,
    limit: int = 20,
) -> list[TaskPlacement]:
    """The task's placements, best first: the cheapest offering per (cloud, region, zone).

    Honors pins (cloud/region/zone/instance type), ``any_of`` (cheapest of the union), ``ordered``
    (every placement of the first alternative before the second's, and so on), spot, ``num_nodes``
    and ``estimated_hours`` (``cost`` = hourly x hours x nodes). ``blocked`` holds
    ``(cloud, region, zone, instance_type)`` tuples, None = any; ``clouds`` the enabled clouds.
    Raises :class:`InfeasibleTaskError` (a ``ValueError``) when nothing is left.
    """
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    finder = CandidateFinder(cat, blocked, clouds)
    name = task_name(task, 0)
    resources = getattr(task, "resources", None)
    queries, ordered = alternatives(resources)
    rows_l, spot_l, pref_l = [], [], []
    for k, q in enumerate(queries):
        rows, _, _ = finder.rows_for(q)
        if len(rows):
            rows_l.append(rows)
            spot_l.append(np.full(len(rows), q.use_spot))
            pref_l.append(np.full(len(rows), k if ordered else 0))
    if not rows_l:
        finder.priced_rows(name, resources)  # raises InfeasibleTaskError with the reason
        return []
    rows, spot, pref = np.concatenate(rows_l), np.concatenate(spot_l), np.concatenate(pref_l)
    t = cat.table
    hourly = np.where(spot, t.spot_price[rows], t.price[rows])
    _, zone = np.unique(t.zone[rows], return_inverse=True)
    region = cat.row_region[rows]
    # cheapest (then lowest row: deterministic) per (preference, region, zone)
    order = np.lexsort((rows, hourly, zone, region, pref))
    key = np.stack([pref[order], region[order], zone[order]])
    first = np.flatnonzero(np.r_[True, np.any(key[:, 1:] != key[:, :-1], axis=0)])
    pick = order[first]
    pick = pick[np.lexsort((rows[pick], hourly[pick], pref[pick]))][: max(limit, 0)]
    scale = task_hours(task) * int(getattr(task, "num_nodes", 1) or 1)
    out = []
    for i in pick.tolist():
        o = cat.offering(int(rows[i]))
        out.append(TaskPlacement(
            cloud=o.cloud, region=o.region, zone=o.zone, instance_type=o.instance_type,
            accelerators=o.accelerators, use_spot=bool(spot[i]), hourly_price=float(hourly[i]),
            cost=float(hourly[i]) * scale,
        ))  # fmt: skip
    return out
