"""Exact dynamic programming: trees of data edges (cost), chains (time, then cost)."""

from __future__ import annotations

import itertools

import numpy as np

from airflow_provider_sky.optimizer.problem import DataEdge, Problem


def solve_tree(problem: Problem, nodes: list[int], edges: list[DataEdge]) -> dict[int, int]:
    """Min compute + egress cost over one tree-shaped component (edges = its data edges)."""
    adj: dict[int, list[DataEdge]] = {v: [] for v in nodes}
    for e in edges:
        adj[e.src].append(e)
        adj[e.dst].append(e)
    root = nodes[0]
    parent: dict[int, tuple[int, DataEdge] | None] = {root: None}
    order = [root]
    for v in order:  # BFS; the list grows while iterating
        for e in adj[v]:
            w = e.dst if e.src == v else e.src
            if w not in parent:
                parent[w] = (v, e)
                order.append(w)
    opts = problem.nodes
    f = {v: opts[v].cost.astype(float).copy() for v in nodes}
    arg: dict[int, np.ndarray] = {}
    eg = problem.egress
    for v in reversed(order[1:]):
        p, e = parent[v]  # type: ignore[misc]
        if e.src == p:
            m = eg.cost_matrix(opts[p].loc, opts[v].loc, e.gb)
        else:
            m = eg.cost_matrix(opts[v].loc, opts[p].loc, e.gb).T
        total = m + f[v][None, :]
        arg[v] = np.argmin(total, axis=1)
        f[p] += total[np.arange(len(total)), arg[v]]
    choice = {root: int(np.argmin(f[root]))}
    for v in order[1:]:
        p, _ = parent[v]  # type: ignore[misc]
        choice[v] = int(arg[v][choice[p]])
    return choice


def is_chain(problem: Problem) -> bool:
    """Every node has at most one predecessor and one successor, and the graph is connected."""
    n = len(problem.nodes)
    indeg, outdeg = [0] * n, [0] * n
    for e in problem.edges:
        outdeg[e.src] += 1
        indeg[e.dst] += 1
    return max(indeg, default=0) <= 1 and max(outdeg, default=0) <= 1 and len(problem.edges) == n - 1


def solve_chain_time(problem: Problem) -> list[int]:
    """Min makespan, then min cost, along a chain (the order is ``problem.topo_order``)."""
    opts, eg = problem.nodes, problem.egress
    order = problem.topo_order
    gb_into = {e.dst: e.gb for e in problem.edges}
    first = opts[order[0]]
    t = np.full(len(first), first.runtime_hours)
    c = first.cost.astype(float).copy()
    back: list[np.ndarray] = []
    for prev, v in itertools.pairwise(order):
        gb = gb_into.get(v, 0.0)
        a, b = opts[prev], opts[v]
        cross = ~eg.same_place[np.ix_(a.loc, b.loc)]
        tt = t[:, None] + cross * problem.transfer_hours(gb) + b.runtime_hours
        cc = c[:, None] + eg.cost_matrix(a.loc, b.loc, gb) + b.cost[None, :]
        tmin = tt.min(axis=0)
        masked = np.where(tt <= tmin[None, :] + 1e-9, cc, np.inf)
        pick = np.argmin(masked, axis=0)
        back.append(pick)
        cols = np.arange(len(b))
        t, c = tt[pick, cols], cc[pick, cols]
    best_t = t.min()
    last = int(np.argmin(np.where(t <= best_t + 1e-9, c, np.inf)))
    choice = [0] * len(opts)
    choice[order[-1]] = last
    for k in range(len(order) - 1, 0, -1):
        last = int(back[k - 1][last])
        choice[order[k - 1]] = last
    return choice
