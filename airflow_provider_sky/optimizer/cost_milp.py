"""Cost-objective MILP for general DAGs with data on their edges (HiGHS through ``highspy``).

Egress on an edge depends only on where its two ends run, and prices follow the hierarchy
cloud > (cloud, continent) > place. For an edge ``u -> v`` with cost matrix ``C[a, b]`` each source
place ``a`` gets values ``V_d(a)``, the cheapest price when ``v`` shares ``d`` levels with ``a``
(0 = other cloud .. 3 = same place), made non-increasing in ``d``. Then

    C[a, b] = V_0(a) - sum_{d <= depth(a, b)} R_d(a) + E[a, b],     R_d = V_{d-1} - V_d >= 0

``V_0`` goes into ``u``'s objective. A refund ``R [u in g][v in h]`` (``h`` = the level-d group of
the sources ``g``) is ``-R X_u(g) + R y`` with ``y >= X_u(g) - X_v(h)``, or, when several source
groups share ``h``, ``z_g <= X_u(g)`` and ``sum_g z_g <= X_v(h)``: the transport relaxation over
the group. Because refunds never exceed ``V_0``, the relaxation never sees negative egress, and
for these price tables its optimum is usually integral (the 1,000-task benchmark DAGs: always).
Prices above the hierarchy's (``E > 0``: pair-specific rates) are penalties
``w >= X_u(g) + X_v(h) - 1``. A refund whose target set equals the next shallower level's moves
there, so an edge costs one variable per distinct (price class, place) it can share.

Reductions first (exact): edges touching a one-candidate node (a bucket, a pinned task) become
costs of the other end; candidates never better than another of the same node whatever the
neighbours do are dropped; identical parallel tasks ("twins") become one weighted node.

Solve: a local-search incumbent; the LP relaxation (integral -> optimal, done); otherwise its
rounding polished by local search, then HiGHS branch and bound warm-started with the incumbent.
The time limit counts building the model; the gap reported is (plan - best bound) / plan.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from airflow_provider_sky.optimizer.problem import Problem

_EPS = 1e-9


@dataclass
class CostMilpResult:
    choice: dict[int, int]
    optimal: bool
    gap: float | None
    bound: float | None
    objective: float
    seconds: float
    variables: int = 0
    constraints: int = 0
    heuristic_objective: float | None = None


@dataclass
class _Term:
    """``coef * [u in g][v in h]`` (g, h: candidate indices of the edge's two nodes)."""

    coef: float
    g: tuple[int, ...]
    h: tuple[int, ...]
    level: int  # 1..3 refunds (joined per target group), 0 exceptions


class _Pairwise:
    """Per data edge (merged per node pair) its dense cost matrix over the candidates of both ends."""

    def __init__(self) -> None:
        self.mats: dict[tuple[int, int], np.ndarray] = {}

    def add(self, i: int, j: int, m: np.ndarray) -> None:
        key = (i, j)
        if key in self.mats:
            self.mats[key] = self.mats[key] + m
        else:
            self.mats[key] = m


def _level_keys(problem: Problem) -> np.ndarray:
    """``keys[d - 1, place]``: integer group of each place at levels cloud, (cloud, continent), place."""
    eg = problem.egress
    cached = getattr(eg, "_cost_level_keys", None)
    if cached is None:
        clouds = [c for c, _ in eg.places]
        classes = [f"{c}/{k}" for c, k in zip(clouds, eg.continent, strict=True)]
        cached = np.stack([
            np.unique(clouds, return_inverse=True)[1].reshape(-1),
            np.unique(classes, return_inverse=True)[1].reshape(-1),
            np.arange(len(clouds)),
        ]) if clouds else np.zeros((3, 0), dtype=np.int64)  # fmt: skip
        eg._cost_level_keys = cached  # type: ignore[attr-defined]
    return cached


def decompose(c: np.ndarray, la: np.ndarray, lb: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, list[_Term]]:
    """``C`` as source prices (returned) plus product terms; exact for every (a, b)."""
    na, nb = c.shape
    eq = np.empty((3, na, nb), dtype=bool)
    acc_eq = np.ones((na, nb), dtype=bool)
    for d in range(3):
        acc_eq = acc_eq & (keys[d][la][:, None] == keys[d][lb][None, :])
        eq[d] = acc_eq
    depth = eq.sum(axis=0)
    # V_d = the cheapest price at depth d, never above V_{d-1}: refunds are then >= 0 and sum to at
    # most V_0 for every source, so the relaxation never sees a negative egress; prices above V_d
    # become (rare) penalty terms.
    v = np.empty((na, 4))
    prev = c.max(axis=1)
    for d in range(4):
        at = np.where(depth == d, c, np.inf).min(axis=1)
        prev = np.minimum(prev, at)
        v[:, d] = prev
    v0 = v[:, 0].copy()
    refund = v[:, :3] - v[:, 1:]  # [a, d]: refund when v shares level d+1 with a
    # a refund moves up to the shallowest level with the same target set (the same product), or
    # into the source price when that set is every target
    same_up = np.ones((na, 3), dtype=bool)
    same_up[:, 0] = False
    same_up[:, 1:] = np.all(eq[1:] == eq[:-1], axis=2).T
    nonempty = eq.any(axis=2).T
    full = eq.all(axis=2).T
    acc = np.zeros((na, 3))
    for d in range(3):
        top = np.full(na, d)
        for t in range(d, 0, -1):
            move = (top == t) & same_up[:, t]
            top[move] = t - 1
        r = np.where(nonempty[:, d], refund[:, d], 0.0)
        np.add.at(acc, (np.arange(na), top), r)
    terms: list[_Term] = []
    groups: dict[tuple[int, int, float], list[int]] = defaultdict(list)
    for a_, d in zip(*np.nonzero(np.abs(acc) > _EPS), strict=True):
        if full[a_, d]:
            v0[a_] -= acc[a_, d]
        else:
            groups[(int(d), int(keys[d][la[a_]]), round(float(acc[a_, d]), 9))].append(int(a_))
    for (d, gkey, r), members in groups.items():
        h = tuple(np.flatnonzero(keys[d][lb] == gkey).tolist())
        terms.append(_Term(-r, tuple(members), h, d + 1))
    delta = c - v[np.arange(na)[:, None], depth]
    bad = np.abs(delta) > _EPS
    if bad.any():
        rows: dict[tuple[tuple[int, ...], float], list[int]] = defaultdict(list)
        for a_ in np.flatnonzero(bad.any(axis=1)).tolist():
            by_val: dict[float, list[int]] = defaultdict(list)
            for b_ in np.flatnonzero(bad[a_]).tolist():
                by_val[round(float(delta[a_, b_]), 9)].append(b_)
            for val, bs in by_val.items():
                rows[(tuple(bs), val)].append(a_)
        for (h, val), g in rows.items():
            terms.append(_Term(val, tuple(g), h, 0))
    return v0, terms


@dataclass
class _Template:
    """An edge's model rows with local column ids: 0..na-1 = x_u, na.. = x_v, then auxiliaries."""

    xu_cost: np.ndarray
    aux_cost: np.ndarray
    row_hi: np.ndarray
    nz_row: np.ndarray
    nz_col: np.ndarray
    nz_val: np.ndarray


def compile_template(v0: np.ndarray, terms: list[_Term], nb: int) -> _Template:
    """Linearise the product terms (see the module docstring) into rows over local columns."""
    na = len(v0)
    xu_cost = v0.copy()
    aux_cost: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    hi: list[float] = []

    def aux(cost: float) -> int:
        aux_cost.append(cost)
        return na + nb + len(aux_cost) - 1

    def row(cs: list[int], vs: list[float], upper: float) -> None:
        rows.extend([len(hi)] * len(cs))
        cols.extend(cs)
        vals.extend(vs)
        hi.append(upper)

    joined: dict[tuple[int, tuple[int, ...]], list[_Term]] = defaultdict(list)
    for t in terms:
        g = list(t.g)
        h = [na + b for b in t.h]
        if t.coef > 0:  # penalty: z >= X_u(g) + X_v(h) - 1
            row([*g, *h, aux(t.coef)], [1.0] * (len(g) + len(h)) + [-1.0], 1.0)
        elif t.level:
            joined[(t.level, t.h)].append(t)
        else:  # exception refund: z <= X_u(g), z <= X_v(h)
            z = aux(t.coef)
            row([z, *g], [1.0] + [-1.0] * len(g), 0.0)
            row([z, *h], [1.0] + [-1.0] * len(h), 0.0)
    for (_, hs), ts in joined.items():
        h = [na + b for b in hs]
        if len(ts) == 1:  # refund R on [u in g][v in h] = -R X_u(g) + R y with y >= X_u(g) - X_v(h)
            (t,) = ts
            g = list(t.g)
            xu_cost[g] += t.coef
            row([*g, *h, aux(-t.coef)], [1.0] * len(g) + [-1.0] * len(h) + [-1.0], 0.0)
            continue
        zs = []
        for t in ts:  # z_g <= X_u(g) and sum_g z_g <= X_v(h)
            z = aux(t.coef)
            row([z, *t.g], [1.0] + [-1.0] * len(t.g), 0.0)
            zs.append(z)
        row([*zs, *h], [1.0] * len(zs) + [-1.0] * len(h), 0.0)
    return _Template(
        xu_cost, np.asarray(aux_cost), np.asarray(hi), np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64), np.asarray(vals),
    )  # fmt: skip


class _Instance:
    """The reduced instance: unary costs per node, merged pairwise matrices, a constant.

    Reductions (all exact): edges to a node with one candidate become costs of the other end;
    dominated candidates are dropped; "twins" (same costs, same neighbours with the same matrices,
    e.g. the parallel tasks of a diamond) are merged into one node of weight k, since some optimal
    plan gives all twins the same placement (they do not touch each other).
    """

    def __init__(self, problem: Problem, members: list[int]):
        self.problem = problem
        member = set(members)
        self.unary = {i: problem.nodes[i].cost.astype(float).copy() for i in members}
        self.const = 0.0
        self.twin_of: dict[int, int] = {}
        pw = _Pairwise()
        eg = problem.egress
        cache: dict[tuple, np.ndarray] = {}
        for e in problem.edges:
            if e.gb <= 0 or e.src not in member or e.dst not in member:
                continue
            lu, lv = problem.nodes[e.src].loc, problem.nodes[e.dst].loc
            key = (lu.tobytes(), lv.tobytes(), e.gb)
            m = cache.get(key)
            if m is None:
                m = cache[key] = eg.cost_matrix(lu, lv, e.gb)
            if len(lu) == 1 and len(lv) == 1:
                self.const += float(m[0, 0])
            elif len(lu) == 1:
                self.unary[e.dst] = self.unary[e.dst] + m[0]
            elif len(lv) == 1:
                self.unary[e.src] = self.unary[e.src] + m[:, 0]
            else:
                pw.add(e.src, e.dst, m)
        self.pairs = {k: m for k, m in pw.mats.items() if m.max() > _EPS}
        self.keys_of: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for k in self.pairs:
            self.keys_of[k[0]].add(k)
            self.keys_of[k[1]].add(k)
        self.keep = {i: np.arange(len(self.unary[i])) for i in members}
        self._prune()
        self._merge_twins()
        self.adj: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for (i, j), m in self.pairs.items():
            self.adj[i].append((j, m))
            self.adj[j].append((i, m.T))

    def _oriented(self, i: int) -> list[tuple[int, np.ndarray]]:
        """(neighbour, matrix with i's candidates as rows) for every pair of ``i``."""
        return [(b, self.pairs[(a, b)]) if a == i else (a, self.pairs[(a, b)].T) for a, b in self.keys_of.get(i, ())]

    def _prune(self, rounds: int = 1) -> None:
        """Drop candidate k of a node when some k' is never worse, whatever the neighbours do."""
        todo = [i for i, u in self.unary.items() if len(u) > 1]
        for _ in range(rounds):
            changed: set[int] = set()
            for i in todo:
                u = self.unary[i]
                if len(u) <= 1:
                    continue
                lo = u[:, None] - u[None, :]  # lo[k, k'] = least that k costs more than k'
                for _, m in self._oriented(i):
                    lo = lo + (m[:, None, :] - m[None, :, :]).min(axis=2)
                dom = lo >= -_EPS
                np.fill_diagonal(dom, False)
                idx = np.arange(len(u))
                dom &= ~(dom & dom.T) | (idx[:, None] > idx[None, :])  # of exact ties keep the first
                drop = dom.any(axis=1)
                if drop.any():
                    changed.update(j for j, _ in self._oriented(i))
                    self._restrict(i, np.flatnonzero(~drop))
            todo = [i for i in changed if i in self.unary]
            if not todo:
                break

    def _restrict(self, i: int, keep: np.ndarray) -> None:
        self.unary[i] = self.unary[i][keep]
        self.keep[i] = self.keep[i][keep]
        for key in list(self.keys_of.get(i, ())):
            a, b = key
            self.pairs[key] = self.pairs[key][keep] if a == i else self.pairs[key][:, keep]
            if len(keep) == 1:  # fold the edge of a now-fixed node into its neighbour
                m = self.pairs.pop(key)
                other = b if a == i else a
                self.unary[other] = self.unary[other] + (m[0] if a == i else m[:, 0])
                self.keys_of[other].discard(key)
                self.keys_of[i].discard(key)

    def _merge_twins(self) -> None:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, u in self.unary.items():
            nb = sorted((j, a == i, self.pairs[(a, b)].tobytes()) for (a, b) in self.keys_of.get(i, ()) for j in (b if a == i else a,))
            if nb:
                groups[(u.tobytes(), self.keep[i].tobytes(), tuple(nb))].append(i)
        for twins in groups.values():
            if len(twins) < 2:
                continue
            rep, k = twins[0], float(len(twins))
            self.unary[rep] = self.unary[rep] * k
            for key in self.keys_of[rep]:
                self.pairs[key] = self.pairs[key] * k
            for t in twins[1:]:
                self.twin_of[t] = rep
                del self.unary[t]
                for key in self.keys_of.pop(t, set()):
                    a, b = key
                    self.pairs.pop(key, None)
                    self.keys_of[b if a == t else a].discard(key)

    def expand(self, sel: dict[int, int]) -> dict[int, int]:
        """Candidate index (into the problem's node options) for every member, twins included."""
        out = {i: int(self.keep[i][k]) for i, k in sel.items()}
        for t, rep in self.twin_of.items():
            out[t] = out[rep]
        return out

    def energy(self, sel: dict[int, int]) -> float:
        total = self.const + sum(float(self.unary[i][k]) for i, k in sel.items())
        for (i, j), m in self.pairs.items():
            total += float(m[sel[i], sel[j]])
        return total

    def local_search(self, sel: dict[int, int], order: list[int], deadline: float, sweeps: int = 100) -> dict[int, int]:
        """Single-node moves (each node to its best candidate given its neighbours) until none helps."""
        sel = dict(sel)
        active = [i for i in order if len(self.unary[i]) > 1]
        for _ in range(sweeps):
            moved = False
            for i in active:
                local = self.unary[i].copy()
                for j, m in self.adj.get(i, ()):
                    local += m[:, sel[j]]
                k = int(np.argmin(local))
                if local[k] < local[sel[i]] - _EPS:
                    sel[i] = k
                    moved = True
            if not moved or time.perf_counter() > deadline:
                break
        return sel

    def incumbent(self, order: list[int], deadline: float, starts: int = 8) -> tuple[dict[int, int], float]:
        """Best local optimum from the per-node minimum and from co-located starts."""
        base = {i: int(np.argmin(u)) for i, u in self.unary.items()}
        best = self.local_search(base, order, deadline)
        best_e = self.energy(best)
        loc = {i: self.problem.nodes[i].loc[self.keep[i]] for i in self.unary}
        score: dict[int, float] = defaultdict(float)
        for i, u in self.unary.items():
            for k, p in enumerate(loc[i].tolist()):
                score[p] += float(u.min() - u[k]) - 1.0  # prefer places many nodes have, cheaply
        for p in sorted(score, key=lambda q: -score[q])[:starts]:
            if time.perf_counter() > deadline:
                break
            start = {i: (int(np.flatnonzero(loc[i] == p)[0]) if np.any(loc[i] == p) else base[i]) for i in self.unary}
            cand = self.local_search(start, order, deadline)
            e = self.energy(cand)
            if e < best_e - _EPS:
                best, best_e = cand, e
        return best, best_e


class _Model:
    """One HiGHS model as arrays: x columns first (binary), then auxiliaries in [0, 1]."""

    def __init__(self, cost: np.ndarray, integer: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray, a) -> None:
        self.cost, self.integer, self.row_lo, self.row_hi, self.a = cost, integer, row_lo, row_hi, a


def _build(inst: _Instance, keys: np.ndarray, free: set[int]) -> tuple[_Model, dict[int, list[int]]]:
    from scipy.sparse import csc_matrix

    problem = inst.problem
    x: dict[int, list[int]] = {}
    base: dict[int, int] = {}
    n_x = 0
    for i in inst.unary:
        if i in free:
            base[i] = n_x
            x[i] = list(range(n_x, n_x + len(inst.unary[i])))
            n_x += len(inst.unary[i])
    x_cost = np.concatenate([inst.unary[i] for i in x]) if x else np.zeros(0)
    # one "choose exactly one" row per node
    r_parts = [np.repeat(np.arange(len(x)), [len(c) for c in x.values()])]
    c_parts = [np.arange(n_x)]
    v_parts = [np.ones(n_x)]
    lo_parts = [np.ones(len(x))]
    hi_parts = [np.ones(len(x))]
    aux_parts: list[np.ndarray] = []
    n_rows, n_cols = len(x), n_x
    templates: dict[tuple, _Template] = {}
    for (i, j), c in inst.pairs.items():
        la = problem.nodes[i].loc[inst.keep[i]]
        lb = problem.nodes[j].loc[inst.keep[j]]
        tkey = (la.tobytes(), lb.tobytes(), c.tobytes())
        t = templates.get(tkey)
        if t is None:
            t = templates[tkey] = compile_template(*decompose(c, la, lb, keys), len(lb))
        na = len(la)
        bu, bv = base[i], base[j]
        x_cost[bu : bu + na] += t.xu_cost
        col = t.nz_col
        mapped = np.where(col < na, bu + col, np.where(col < na + len(lb), bv + col - na, n_cols + col - na - len(lb)))
        r_parts.append(n_rows + t.nz_row)
        c_parts.append(mapped)
        v_parts.append(t.nz_val)
        lo_parts.append(np.full(len(t.row_hi), -np.inf))
        hi_parts.append(t.row_hi)
        aux_parts.append(t.aux_cost)
        n_rows += len(t.row_hi)
        n_cols += len(t.aux_cost)
    cost = np.concatenate([x_cost, *aux_parts])
    integer = np.zeros(n_cols, dtype=bool)
    integer[:n_x] = True
    a = csc_matrix((np.concatenate(v_parts), (np.concatenate(r_parts), np.concatenate(c_parts))), shape=(n_rows, n_cols))
    return _Model(cost, integer, np.concatenate(lo_parts), np.concatenate(hi_parts), a), x


def _highs():
    """A quiet HiGHS instance (the public wrapper prints a banner on stdout when constructed)."""
    import highspy

    core = getattr(highspy, "_core", None)
    h = core._Highs() if core is not None and hasattr(core, "_Highs") else highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def _run_highs(
    m: _Model, x: dict[int, list[int]], start: dict[int, int] | None, offset: float, time_limit: float, gap: float,
    relax: bool = False,
):  # fmt: skip
    """Solve the model (its LP relaxation if ``relax``) with HiGHS, warm-started from ``start``."""
    import highspy

    h = _highs()
    h.setOptionValue("time_limit", max(time_limit, 0.01))
    h.setOptionValue("mip_rel_gap", gap)
    h.setOptionValue("random_seed", 0)
    n, r = len(m.cost), len(m.row_lo)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, r
    lp.col_cost_ = m.cost
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_ = m.row_lo
    lp.row_upper_ = m.row_hi
    lp.offset_ = offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = m.a.indptr
    lp.a_matrix_.index_ = m.a.indices
    lp.a_matrix_.value_ = m.a.data
    kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
    if not relax:
        lp.integrality_ = [kinds[k] for k in m.integer.tolist()]
    h.passModel(lp)
    if start is None or relax:
        if relax:  # presolve costs more than it saves on these LPs
            h.setOptionValue("presolve", "off")
        h.run()
        return h
    # the incumbent's x values; HiGHS completes the continuous auxiliaries itself
    idx = np.array([c for cols in x.values() for c in cols], dtype=np.int32)
    val = np.array([1.0 if k == start[i] else 0.0 for i, cols in x.items() for k in range(len(cols))])
    h.setSolution(len(idx), idx, val)
    h.run()
    return h


def solve_cost_milp(problem: Problem, members: list[int], time_limit: float = 10.0, gap: float = 1e-6) -> CostMilpResult:
    """Min compute + egress over ``members`` (closed under data edges); exact unless the limit hits.

    Order: reductions and a local-search incumbent; the LP relaxation (for these price tables it
    is usually integral, which proves optimality at once); otherwise the rounded LP point polished by
    local search, then branch and bound with HiGHS for the remaining time. The bound is the best of
    the LP value and HiGHS's dual bound; ``gap`` = (plan - bound) / plan.
    """
    import highspy

    t0 = time.perf_counter()
    deadline = t0 + time_limit
    inst = _Instance(problem, members)
    order = [i for i in problem.topo_order if i in inst.unary]
    sel, heur = inst.incumbent(order, t0 + 0.1 * time_limit)
    obj = heur
    free = {i for (a, b) in inst.pairs for i in (a, b)}
    if not free:
        return CostMilpResult(inst.expand(sel), True, 0.0, heur, heur, time.perf_counter() - t0, 0, 0, heur)
    # a bound that costs nothing: every term at its own minimum (used if the LP does not finish)
    trivial = inst.const + sum(float(u.min()) for u in inst.unary.values()) + sum(float(m.min()) for m in inst.pairs.values())

    def early() -> CostMilpResult:
        rel = max(0.0, (obj - trivial) / max(abs(obj), 1e-9))
        return CostMilpResult(inst.expand(sel), rel <= gap, rel, trivial, obj, time.perf_counter() - t0, 0, 0, heur)

    if time.perf_counter() >= deadline:  # no time left for the LP: the local-search plan
        return early()
    model, x = _build(inst, _level_keys(problem), free)
    # nodes outside every pair sit at their best unary value: a constant for the solver
    offset = inst.const + sum(float(inst.unary[i][sel[i]]) for i in inst.unary if i not in free)

    def take(h) -> bool:
        """Adopt the solver's point if it is a better plan; True if it was integral."""
        nonlocal sel, obj
        sol = h.getSolution()
        if not sol.value_valid:
            return False
        vals = np.asarray(sol.col_value)
        cand = {**sel, **{i: int(np.argmax(vals[cols])) for i, cols in x.items()}}
        integral = bool(np.all(np.abs(vals[: len(model.integer)][model.integer] - np.round(vals[: len(model.integer)][model.integer])) < 1e-6))
        if not integral:
            cand = inst.local_search(cand, order, deadline)
        e = inst.energy(cand)
        if e < obj - _EPS:
            sel, obj = cand, e
        return integral

    bound: float | None = trivial
    lp = _run_highs(model, x, None, offset, deadline - time.perf_counter(), gap, relax=True)
    if lp.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        bound = max(trivial, float(lp.getInfo().objective_function_value))
        take(lp)
    optimal = bound is not None and obj - bound <= gap * max(abs(obj), 1e-9) + _EPS
    if not optimal and deadline - time.perf_counter() > 0.05:
        h = _run_highs(model, x, sel, offset, deadline - time.perf_counter(), gap)
        take(h)
        dual = float(h.getInfo().mip_dual_bound)
        if np.isfinite(dual):
            bound = dual if bound is None else max(bound, dual)
        optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    rel = None
    if bound is not None:
        rel = max(0.0, (obj - bound) / max(abs(obj), 1e-9))
        optimal = optimal or rel <= gap
    return CostMilpResult(
        inst.expand(sel), optimal, 0.0 if optimal else rel, bound, obj, time.perf_counter() - t0,
        len(model.cost), len(model.row_lo), heur,
    )  # fmt: skip
