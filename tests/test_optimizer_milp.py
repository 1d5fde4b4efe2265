"""The class-based cost MILP: exact decomposition of egress matrices, optimality vs brute force."""

from __future__ import annotations

import random

import numpy as np
import pytest

from airflow_provider_sky.optimizer import optimize
from airflow_provider_sky.optimizer.build import build_problem
from airflow_provider_sky.optimizer.cost_milp import _Instance, _level_keys, decompose, solve_cost_milp
from airflow_provider_sky.optimizer.egress_model import EgressModel
from airflow_provider_sky.optimizer.exhaustive import solve_exhaustive
from airflow_provider_sky.optimizer.problem import evaluate
from airflow_provider_sky.optimizer.reduce import reduce_problem
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.task import Task
from tests.test_optimizer_exhaustive import RESOURCES, random_catalog

PLACES = [
    ("aws", "us-east-1"), ("aws", "us-east-2"), ("aws", "us-west-2"), ("aws", "eu-west-1"), ("aws", "ap-southeast-2"),
    ("aws", "sa-east-1"), ("gcp", "us-central1"), ("gcp", "us-east1"), ("gcp", "europe-west4"),
    ("gcp", "australia-southeast1"), ("gcp", "asia-east1"), ("azure", "eastus"), ("azure", "westeurope"),
    ("azure", "brazilsouth"), ("local", "local"),
]  # fmt: skip


def _rebuild(v0: np.ndarray, terms, nb: int) -> np.ndarray:
    out = np.repeat(v0[:, None], nb, axis=1)
    for t in terms:
        out[np.ix_(list(t.g), list(t.h))] += t.coef
    return out


class _P:  # the bits of a Problem that _level_keys reads
    def __init__(self, eg: EgressModel):
        self.egress = eg


@pytest.mark.parametrize("gb", [0.5, 37.0, 12_000.0, 200_000.0])
def test_decompose_is_exact_on_real_egress_prices(gb: float) -> None:
    eg = EgressModel(PLACES)
    keys = _level_keys(_P(eg))
    rng = np.random.default_rng(int(gb))
    for _ in range(20):
        la = np.sort(rng.choice(len(PLACES), size=rng.integers(2, len(PLACES)), replace=False))
        lb = np.sort(rng.choice(len(PLACES), size=rng.integers(2, len(PLACES)), replace=False))
        c = eg.cost_matrix(la, lb, gb)
        v0, terms = decompose(c, la, lb, keys)
        np.testing.assert_allclose(_rebuild(v0, terms, len(lb)), c, atol=1e-6)
        # refunds never exceed the source price: the relaxation cannot see negative egress
        assert all(t.coef > 0 or t.level == 0 or -t.coef <= v0[list(t.g)].max() + 1e-9 for t in terms)


def test_decompose_is_exact_on_arbitrary_matrices() -> None:
    eg = EgressModel(PLACES)
    keys = _level_keys(_P(eg))
    rng = np.random.default_rng(1)
    for _ in range(30):
        la = rng.choice(len(PLACES), size=6, replace=False)
        lb = rng.choice(len(PLACES), size=5, replace=False)
        c = rng.choice([0.0, 1.0, 2.5, 7.0], size=(6, 5))
        v0, terms = decompose(c, la, lb, keys)
        np.testing.assert_allclose(_rebuild(v0, terms, 5), c, atol=1e-9)


def _dag(rng: random.Random, shape: str, n: int) -> list[Task]:
    tasks = []
    for i in range(n):
        if shape == "diamond":
            deps = [] if i == 0 else (["t0"] if i < n - 1 else [f"t{j}" for j in range(1, n - 1)])
        else:  # dense random DAG, up to 3 parents
            deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(1, 3))}) if i else []
        gb = rng.choice([0, 3, 40, 300, 9000])
        tasks.append(Task(name=f"t{i}", resources=Resources.from_dict(rng.choice(RESOURCES)), depends_on=deps,
                          num_nodes=rng.choice([1, 2]), outputs={"o": gb} if gb else {}))  # fmt: skip
    return tasks


@pytest.mark.parametrize("seed", range(18))
def test_general_dags_match_exhaustive(seed: int) -> None:
    rng = random.Random(1000 + seed)
    catalog = random_catalog(rng)
    tasks = _dag(rng, "diamond" if seed % 3 == 0 else "random", 5 if seed % 3 == 0 else 4)
    try:
        problem = build_problem(tasks, catalog)
    except ValueError:
        pytest.skip(reason="random catalog has no offering for a task")
    brute = evaluate(problem, solve_exhaustive(problem)).total_cost
    plan = optimize(tasks, catalog, method="milp")
    assert plan.optimal and plan.gap in (None, 0.0)
    assert plan.total_cost == pytest.approx(brute, rel=1e-7, abs=1e-6)
    res = solve_cost_milp(problem, list(range(len(problem.nodes))))
    assert res.bound is None or res.bound <= brute + 1e-6
    assert evaluate(problem, [res.choice[i] for i in range(len(problem.nodes))]).total_cost == pytest.approx(brute, abs=1e-6)


def test_twins_are_merged_and_still_optimal() -> None:
    """Identical parallel tasks of a diamond share one decision; the plan equals brute force."""
    rng = random.Random(5)
    catalog = random_catalog(rng)
    res = Resources.from_dict({"cpus": "4+"})
    tasks = [Task(name="src", resources=Resources.from_dict({"cpus": 16}), outputs={"o": 200})]
    tasks += [Task(name=f"m{i}", resources=res, depends_on=["src"], outputs={"o": 50}) for i in range(3)]
    tasks.append(Task(name="sink", resources=Resources.from_dict({"cpus": 16}), depends_on=[f"m{i}" for i in range(3)]))
    problem = build_problem(tasks, catalog)
    reduced = reduce_problem(problem, "cost")
    assert len(_Instance(reduced, list(range(len(reduced.nodes)))).twin_of) == 2
    brute = evaluate(problem, solve_exhaustive(problem)).total_cost
    plan = optimize(tasks, catalog, method="milp")
    assert plan.optimal and plan.total_cost == pytest.approx(brute, abs=1e-6)


def test_time_limit_reports_a_plan_and_an_honest_gap() -> None:
    rng = random.Random(11)
    catalog = random_catalog(rng)
    tasks = _dag(rng, "random", 60)
    plan = optimize(tasks, catalog, time_limit=0.001)
    assert len(plan.tasks) == 60
    assert plan.optimal or plan.gap is None or plan.gap >= 0
    exact = optimize(tasks, catalog, time_limit=30)
    assert exact.optimal
    assert plan.total_cost >= exact.total_cost - 1e-6
