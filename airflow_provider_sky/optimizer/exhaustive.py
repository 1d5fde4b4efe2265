"""Brute force over every combination of candidates (tests and tiny problems only)."""

from __future__ import annotations

import itertools

from airflow_provider_sky.optimizer.problem import Problem, evaluate


def solve_exhaustive(problem: Problem, minimize: str = "cost", limit: int = 2_000_000) -> list[int]:
    """The optimal choice by enumeration; ``minimize='time'`` is makespan first, then cost."""
    sizes = [len(n) for n in problem.nodes]
    total = 1
    for s in sizes:
        total *= s
    if total > limit:
        raise ValueError(f"exhaustive search over {total} combinations exceeds the limit {limit}")
    best_key, best = None, None
    for combo in itertools.product(*(range(s) for s in sizes)):
        ev = evaluate(problem, list(combo))
        key = (ev.total_cost,) if minimize == "cost" else (round(ev.makespan_hours, 9), ev.total_cost)
        if best_key is None or key < best_key:
            best_key, best = key, list(combo)
    assert best is not None
    return best
