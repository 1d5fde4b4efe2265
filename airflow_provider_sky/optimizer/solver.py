"""``optimize``: tasks + catalog -> :class:`Plan` (cheapest or fastest DAG-wide placement)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.loader import load_catalog
from airflow_provider_sky.optimizer.build import build_problem
from airflow_provider_sky.optimizer.cost_milp import solve_cost_milp
from airflow_provider_sky.optimizer.dp import is_chain, solve_chain_time, solve_tree
from airflow_provider_sky.optimizer.errors import OptimizerError
from airflow_provider_sky.optimizer.exhaustive import solve_exhaustive
from airflow_provider_sky.optimizer.milp import solve_milp
from airflow_provider_sky.optimizer.plan import Alternative, EgressFlow, Plan, TaskPlacement
from airflow_provider_sky.optimizer.problem import DataEdge, Problem, evaluate
from airflow_provider_sky.optimizer.reduce import reduce_problem

OBJECTIVES = ("cost", "time")


def _components(n: int, edges: list[DataEdge]) -> list[tuple[list[int], list[DataEdge]]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in edges:
        parent[find(e.src)] = find(e.dst)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    by_root: dict[int, list[DataEdge]] = {}
    for e in edges:
        by_root.setdefault(find(e.src), []).append(e)
    return [(members, by_root.get(root, [])) for root, members in groups.items()]


class _Outcome:
    def __init__(self) -> None:
        self.solvers: set[str] = set()
        self.optimal = True
        self.gap: float | None = None
        self.bound: float | None = None

    def milp(self, optimal: bool, gap: float | None) -> None:
        self.solvers.add("milp")
        self.optimal &= optimal
        if gap is not None and not optimal:
            self.gap = max(self.gap or 0.0, gap)


def solve(problem: Problem, minimize: str, time_limit: float, method: str = "auto") -> tuple[list[int], _Outcome]:
    """Candidate index per node of ``problem`` (already reduced)."""
    out = _Outcome()
    if method == "exhaustive":
        out.solvers.add("exhaustive")
        return solve_exhaustive(problem, minimize), out
    n = len(problem.nodes)
    choice = [int(np.argmin(nd.cost)) if len(nd) else 0 for nd in problem.nodes]
    data = problem.data_edges()
    deadline = time.perf_counter() + time_limit
    if minimize == "time":
        if not data:
            out.solvers.add("independent")
        elif is_chain(problem) and method != "milp":
            out.solvers.add("dp")
            choice = solve_chain_time(problem)
        else:
            res = solve_milp(problem, list(range(n)), "time", time_limit)
            out.milp(res.optimal, res.gap)
            for i, c in res.choice.items():
                choice[i] = c
        return choice, out
    general: list[int] = []
    for members, edges in _components(n, data):
        if not edges or all(len(problem.nodes[i]) == 1 for i in members):
            out.solvers.add("independent")
            continue
        if len(edges) == len(members) - 1 and method != "milp":
            out.solvers.add("dp")
            for i, c in solve_tree(problem, members, edges).items():
                choice[i] = c
        else:
            general.extend(members)
    if general:  # every non-tree component in one model: one solver call, one time budget
        res = solve_cost_milp(problem, general, max(deadline - time.perf_counter(), 0.1))
        out.milp(res.optimal, res.gap)
        out.bound = res.bound
        for i, c in res.choice.items():
            choice[i] = c
    return choice, out


def optimize(
    tasks: Sequence[Any],
    catalog: Catalog | str | None = None,
    *,
    minimize: str = "cost",
    blocked: Iterable | None = None,
    bandwidth_gbps: float = 1.0,
    time_limit: float = 10.0,
    edges: Iterable[tuple[str, str]] | None = None,
    alternatives: int = 5,
    method: str = "auto",
    clouds: Iterable[str] | None = None,
) -> Plan:
    """Place every task of a DAG.

    ``tasks`` are spec Tasks (name, resources, num_nodes, estimated_hours, inputs, outputs,
    depends_on). ``blocked`` lists (cloud, region, zone, instance_type) tuples to avoid (None = any).
    ``minimize`` is ``"cost"`` (compute + egress) or ``"time"`` (critical path incl. transfers at
    ``bandwidth_gbps`` between regions, then cost). ``method``: auto | milp | exhaustive.
    ``clouds`` restricts candidates to the enabled clouds, e.g. ``("local", "aws")`` (None = all).
    ``time_limit`` (s) bounds the general-DAG solve, model building included; when it hits, the
    plan is the best found and ``plan.gap`` its proven distance to the optimum.
    """
    if minimize not in OBJECTIVES:
        raise OptimizerError(f"minimize must be one of {OBJECTIVES}, got {minimize!r}")
    if not tasks:
        raise OptimizerError("no tasks to plan")
    t0 = time.perf_counter()
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    full = build_problem(tasks, cat, blocked=blocked, bandwidth_gbps=bandwidth_gbps, edges=edges, clouds=clouds)
    problem = reduce_problem(full, minimize)
    choice, outcome = solve(problem, minimize, time_limit, method)
    plan = make_plan(cat, full, problem, choice, minimize, alternatives, n_tasks=len(tasks))
    plan.solver = "+".join(sorted(outcome.solvers))
    plan.optimal, plan.gap = outcome.optimal, outcome.gap
    plan.solve_seconds = time.perf_counter() - t0
    return plan


def make_plan(
    cat: Catalog, full: Problem, problem: Problem, choice: list[int], minimize: str, alternatives: int, n_tasks: int
) -> Plan:
    ev = evaluate(problem, choice)
    names = [n.name for n in problem.nodes]
    placements: dict[str, TaskPlacement] = {}
    for i in range(n_tasks):
        node, c = problem.nodes[i], choice[i]
        o = cat.offering(int(node.row[c]))
        placements[node.name] = TaskPlacement(
            cloud=o.cloud, region=o.region, zone=o.zone, instance_type=o.instance_type,
            accelerators=o.accelerators, use_spot=bool(node.use_spot[c]),
            hourly_price=float(node.hourly[c]), cost=float(node.cost[c]),
        )  # fmt: skip
    flows = []
    for e, cost in ev.flows:
        (sc, sr), (dc, dr) = problem.places[problem.nodes[e.src].loc[choice[e.src]]], problem.places[problem.nodes[e.dst].loc[choice[e.dst]]]
        flows.append(EgressFlow(names[e.src], names[e.dst], e.gb, sc, sr, dc, dr, cost))
    alts: dict[str, list[Alternative]] = {}
    for node in full.nodes[:n_tasks]:
        order = np.argsort(node.cost, kind="stable")[:alternatives]
        alts[node.name] = [
            Alternative("/".join(x for x in full.places[node.loc[k]] if x), cat.offering(int(node.row[k])).instance_type,
                        bool(node.use_spot[k]), float(node.hourly[k]), float(node.cost[k]))
            for k in order
        ]  # fmt: skip
    return Plan(
        tasks=placements, egress=flows, total_cost=ev.total_cost, total_hours=ev.makespan_hours,
        minimize=minimize, alternatives=alts, catalog=cat.source,
    )  # fmt: skip
