"""MILP for general DAGs (HiGHS through ``scipy.optimize.milp``).

Variables: ``x[node, candidate]`` binary (exactly one per node). Egress on a data edge u -> v is
written as a price at the source minus refunds, following the price hierarchy
cloud > (cloud, continent) > place:

    cost(a, b) = V0(a) - sum_{d=1..3, v shares the level-d group of a} (V_{d-1}(a) - V_d(a)) + exception(a, b)

Each refund is a continuous ``z <= sum x_u[group]`` and ``z <= sum x_v[group]`` (the solver pushes z
up, so z is the AND of the two choices). Prices that the hierarchy does not predict (pair-specific
rates, buckets) become pair exceptions. The model stays small: per edge about one variable per
shared price group rather than one per pair of regions.

Time objective: start times ``s`` with ``s_v >= s_u + runtime_u + T_e * (1 - same_place_e)``,
makespan ``M``; first minimise ``M``, then cost subject to ``M <= M*``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from airflow_provider_sky.optimizer.problem import DataEdge, Problem


@dataclass
class MilpResult:
    choice: dict[int, int]
    optimal: bool
    gap: float | None
    bound: float | None
    seconds: float
    variables: int
    constraints: int


class _Model:
    def __init__(self) -> None:
        self.c: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.r_idx: list[int] = []
        self.c_idx: list[int] = []
        self.vals: list[float] = []
        self.row_lb: list[float] = []
        self.row_ub: list[float] = []

    def add_vars(self, costs: np.ndarray | list[float], lb: float = 0.0, ub: float = 1.0, integer: bool = False) -> np.ndarray:
        start = len(self.c)
        self.c.extend(float(x) for x in costs)
        n = len(self.c) - start
        self.lb.extend([lb] * n)
        self.ub.extend([ub] * n)
        self.integer.extend([1 if integer else 0] * n)
        return np.arange(start, start + n)

    def add_row(self, cols: list[int] | np.ndarray, vals: list[float] | np.ndarray, lo: float, hi: float) -> None:
        r = len(self.row_lb)
        self.r_idx.extend([r] * len(cols))
        self.c_idx.extend(int(c) for c in cols)
        self.vals.extend(float(v) for v in vals)
        self.row_lb.append(lo)
        self.row_ub.append(hi)

    def solve(self, objective: np.ndarray, time_limit: float, gap: float):
        n = len(self.c)
        a = csr_matrix((self.vals, (self.r_idx, self.c_idx)), shape=(len(self.row_lb), n))
        cons = [LinearConstraint(a, np.array(self.row_lb), np.array(self.row_ub))] if self.row_lb else []
        return milp(
            objective,
            integrality=np.array(self.integer),
            bounds=Bounds(np.array(self.lb), np.array(self.ub)),
            constraints=cons,
            options={"time_limit": max(time_limit, 0.05), "mip_rel_gap": gap, "disp": False},
        )


def _level_keys(problem: Problem) -> list[np.ndarray]:
    """Per place: integer group ids at the levels cloud, (cloud, continent), place."""
    eg = problem.egress
    cached = getattr(eg, "_milp_level_keys", None)
    if cached is None:
        clouds = [c for c, _ in eg.places]
        classes = [f"{c}/{k}" for c, k in zip(clouds, eg.continent, strict=True)]
        cached = [np.unique(clouds, return_inverse=True)[1], np.unique(classes, return_inverse=True)[1], np.arange(len(clouds))]
        eg._milp_level_keys = cached  # type: ignore[attr-defined]
    return cached


def _egress_terms(m: _Model, problem: Problem, e: DataEdge, x: dict[int, np.ndarray]) -> None:
    """Add edge ``e``'s egress: source prices on x_u, refunds and exceptions as new variables."""
    eg, opts = problem.egress, problem.nodes
    lu, lv = opts[e.src].loc, opts[e.dst].loc
    p = eg.cost_matrix(lu, lv, e.gb)
    if not np.any(p > 0):
        return
    keys = _level_keys(problem)
    depth = np.zeros(p.shape, dtype=np.int64)
    for k in keys:
        depth += k[lu][:, None] == k[lv][None, :]
    v = np.zeros((len(lu), 4))
    rowmax = p.max(axis=1)
    for d in range(4):
        masked = np.where(depth == d, p, -np.inf).max(axis=1)
        prev = rowmax if d == 0 else v[:, d - 1]
        v[:, d] = np.minimum(np.where(np.isfinite(masked), masked, prev), prev)
    xu, xv = x[e.src], x[e.dst]
    for j, val in zip(xu.tolist(), v[:, 0].tolist(), strict=True):
        m.c[j] += val
    for d in (1, 2, 3):
        refund = v[:, d - 1] - v[:, d]
        key = keys[d - 1]
        groups: dict[tuple, list[int]] = {}
        for a in np.flatnonzero(refund > 1e-12):
            groups.setdefault((key[lu[a]], round(float(refund[a]), 12)), []).append(int(a))
        for (gkey, r), members in groups.items():
            targets = np.flatnonzero(key[lv] == gkey)
            if not len(targets):
                continue
            (z,) = m.add_vars([-r])
            m.add_row([z, *xu[members]], [1.0] + [-1.0] * len(members), -np.inf, 0.0)
            m.add_row([z, *xv[targets]], [1.0] + [-1.0] * len(targets), -np.inf, 0.0)
    pred = v[np.arange(len(lu))[:, None], depth]
    delta = p - pred
    for a, b in zip(*np.nonzero(np.abs(delta) > 1e-9), strict=True):
        dval = float(delta[a, b])
        (w,) = m.add_vars([dval])
        if dval < 0:
            m.add_row([w, xu[a]], [1.0, -1.0], -np.inf, 0.0)
            m.add_row([w, xv[b]], [1.0, -1.0], -np.inf, 0.0)
        else:
            m.add_row([xu[a], xv[b], w], [1.0, 1.0, -1.0], -np.inf, 1.0)


def _same_place_terms(m: _Model, problem: Problem, e: DataEdge, x: dict[int, np.ndarray]) -> list[int]:
    """Variables whose sum is 1 exactly when both ends of ``e`` are in the same place (at most 1)."""
    eg, opts = problem.egress, problem.nodes
    lu, lv = opts[e.src].loc, opts[e.dst].loc
    xu, xv = x[e.src], x[e.dst]
    qs: list[int] = []
    for place in np.intersect1d(lu, lv):
        (q,) = m.add_vars([0.0])
        ia, ib = np.flatnonzero(lu == place), np.flatnonzero(lv == place)
        m.add_row([q, *xu[ia]], [1.0] + [-1.0] * len(ia), -np.inf, 0.0)
        m.add_row([q, *xv[ib]], [1.0] + [-1.0] * len(ib), -np.inf, 0.0)
        qs.append(int(q))
    same = eg.same_place[np.ix_(lu, lv)] & (lu[:, None] != lv[None, :])
    for a, b in zip(*np.nonzero(same), strict=True):
        (q,) = m.add_vars([0.0])
        m.add_row([q, xu[a]], [1.0, -1.0], -np.inf, 0.0)
        m.add_row([q, xv[b]], [1.0, -1.0], -np.inf, 0.0)
        qs.append(int(q))
    if qs:
        m.add_row(qs, [1.0] * len(qs), -np.inf, 1.0)
    return qs


def solve_milp(
    problem: Problem,
    nodes: list[int],
    minimize: str = "cost",
    time_limit: float = 10.0,
    gap: float = 1e-6,
) -> MilpResult:
    """Optimal (or best found within ``time_limit``) choice for ``nodes`` (a closed component)."""
    t0 = time.perf_counter()
    member = set(nodes)
    m = _Model()
    x: dict[int, np.ndarray] = {}
    for i in nodes:
        x[i] = m.add_vars(problem.nodes[i].cost, integer=True)
        m.add_row(x[i], np.ones(len(x[i])), 1.0, 1.0)
    edges = [e for e in problem.edges if e.src in member and e.dst in member]
    for e in edges:
        if e.gb > 0:
            _egress_terms(m, problem, e, x)
    cost_obj = np.asarray(m.c)
    makespan_var = None
    if minimize == "time":
        s = {i: int(m.add_vars([0.0], 0.0, np.inf)[0]) for i in nodes}
        (makespan_var,) = m.add_vars([0.0], 0.0, np.inf)
        for e in edges:
            rt = problem.nodes[e.src].runtime_hours
            tt = problem.transfer_hours(e.gb)
            qs = _same_place_terms(m, problem, e, x) if tt > 0 else []
            m.add_row([s[e.dst], s[e.src], *qs], [1.0, -1.0] + [tt] * len(qs), rt + tt, np.inf)
        for i in nodes:
            m.add_row([makespan_var, s[i]], [1.0, -1.0], problem.nodes[i].runtime_hours, np.inf)
        cost_obj = np.asarray(m.c)
    n_vars = len(m.c)
    if minimize == "time":
        obj = np.zeros(n_vars)
        obj[makespan_var] = 1.0
        first = m.solve(obj, time_limit, gap)
        if first.x is not None:
            m.add_row([makespan_var], [1.0], -np.inf, float(first.x[makespan_var]) + 1e-7)
    res = m.solve(np.pad(cost_obj, (0, n_vars - len(cost_obj))), time_limit - (time.perf_counter() - t0), gap)
    if res.x is None:  # time limit before any feasible point: fall back to each node's cheapest
        choice = {i: int(np.argmin(problem.nodes[i].cost)) for i in nodes}
        return MilpResult(choice, False, None, None, time.perf_counter() - t0, n_vars, len(m.row_lb))
    choice = {i: int(np.argmax(res.x[x[i]])) for i in nodes}
    optimal = res.status == 0
    mip_gap = getattr(res, "mip_gap", None)
    bound = getattr(res, "mip_dual_bound", None)
    return MilpResult(
        choice, optimal, None if mip_gap is None else float(mip_gap), None if bound is None else float(bound),
        time.perf_counter() - t0, n_vars, len(m.row_lb),
    )  # fmt: skip
