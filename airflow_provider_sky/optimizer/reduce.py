"""Exact reductions before solving: each removes candidates that some optimal plan does not need.

1. Region dominance (all tasks at once). Egress and transfer time depend on a region only through
   its (cloud, continent) price class and co-location. If region ``a`` is no more expensive than
   ``a2`` for every node, and available wherever ``a2`` is, moving every node from ``a2`` to ``a``
   never costs more: drop ``a2``. Regions with pair-specific prices are never dropped.
2. Per node, for the cost objective: a candidate costing more than the node's cheapest one plus the
   most its data edges could ever cost is never optimal.
3. A node without data edges keeps only its cheapest candidate.
"""

from __future__ import annotations

import numpy as np

from airflow_provider_sky.catalog.egress import max_price_per_gb, regions_with_pair_prices
from airflow_provider_sky.optimizer.problem import Problem


def drop_dominated_regions(problem: Problem) -> Problem:
    nodes = problem.nodes
    places = problem.places
    n_loc = len(places)
    if n_loc <= 1:
        return problem
    cost = np.full((len(nodes), n_loc), np.inf)
    for i, n in enumerate(nodes):
        cost[i, n.loc] = n.cost
    classes: dict[tuple[str, str], list[int]] = {}
    eg = problem.egress
    for p, (cloud, region) in enumerate(places):
        if region is None or cloud == "local":
            continue
        classes.setdefault((cloud, eg.continent[p]), []).append(p)
    removed = np.zeros(n_loc, dtype=bool)
    for (cloud, _), members in classes.items():
        if len(members) < 2:
            continue
        special = regions_with_pair_prices(cloud)
        # Cheapest-looking regions first, so ties keep a deterministic representative.
        members = sorted(members, key=lambda p: (np.nansum(np.where(np.isfinite(cost[:, p]), cost[:, p], 0)), p))
        for j, b in enumerate(members):
            if places[b][1] in special:
                continue
            col_b = cost[:, b]
            for k, a in enumerate(members):
                if k == j or removed[a]:
                    continue
                col_a = cost[:, a]
                if np.all(col_a <= col_b) and (k < j or np.any(col_a < col_b)):
                    removed[b] = True
                    break
    if not removed.any():
        return problem
    out = [n.take(~removed[n.loc]) for n in nodes]
    return problem.with_nodes(out)


def prune_by_egress_bound(problem: Problem, minimize: str) -> Problem:
    """Reductions 2 and 3 (2 only for the cost objective)."""
    bound = np.zeros(len(problem.nodes))
    has_data = np.zeros(len(problem.nodes), dtype=bool)
    pmax = max_price_per_gb()
    for e in problem.data_edges():
        for i in (e.src, e.dst):
            bound[i] += e.gb * pmax
            has_data[i] = True
    out = []
    for i, n in enumerate(problem.nodes):
        if len(n) <= 1:
            out.append(n)
            continue
        best = float(n.cost.min())
        if not has_data[i]:
            out.append(n.take(np.array([int(np.argmin(n.cost))])))
        elif minimize == "cost":
            out.append(n.take(n.cost <= best + bound[i] + 1e-12))
        else:
            out.append(n)
    return problem.with_nodes(out)


def reduce_problem(problem: Problem, minimize: str) -> Problem:
    return prune_by_egress_bound(drop_dominated_regions(problem), minimize)
