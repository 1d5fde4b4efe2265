"""The optimizer (reductions + DP + MILP) matches brute force on small random DAGs with egress."""

from __future__ import annotations

import random

import numpy as np
import pytest

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.offerings import Offering, OfferingTable
from airflow_provider_sky.optimizer import optimize
from airflow_provider_sky.optimizer.build import build_problem
from airflow_provider_sky.optimizer.exhaustive import solve_exhaustive
from airflow_provider_sky.optimizer.problem import evaluate
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.task import Task

REGIONS = [
    ("aws", "us-east-1"), ("aws", "us-east-2"), ("aws", "eu-west-1"),
    ("gcp", "us-central1"), ("gcp", "europe-west4"),
    ("azure", "eastus"), ("azure", "westeurope"),
]  # fmt: skip
TYPES = [("small", 4.0, 16.0, None, 0.0), ("big", 16.0, 64.0, None, 0.0), ("gpu", 8.0, 61.0, "V100", 1.0)]
RESOURCES = [{"cpus": "4+"}, {"cpus": 16}, {"accelerators": "V100:1"}, {"accelerators": "V100:1", "use_spot": True}]


def random_catalog(rng: random.Random) -> Catalog:
    rows = []
    for cloud, region in REGIONS:
        for name, cpus, mem, acc, count in TYPES:
            if rng.random() < 0.2:
                continue  # not offered here
            base = {"small": 0.2, "big": 0.8, "gpu": 3.0}[name]
            for zone in ("a", "b"):
                price = round(base * rng.uniform(0.8, 1.3), 3)
                spot = round(price * rng.uniform(0.2, 0.5), 3) if rng.random() < 0.8 else float("nan")
                rows.append(Offering(cloud, region, f"{region}-{zone}", f"{cloud}-{name}", cpus, mem, acc, count, 16.0, price, spot))
    return Catalog(OfferingTable.from_offerings(rows), include_local=False)


def random_dag(rng: random.Random, n: int, *, p_edge: float = 0.5) -> list[Task]:
    tasks = []
    for i in range(n):
        deps = [f"t{j}" for j in range(i) if rng.random() < p_edge]
        gb = rng.choice([0, 5, 50, 400, 12000])
        tasks.append(
            Task(
                name=f"t{i}",
                resources=Resources.from_dict(rng.choice(RESOURCES)),
                num_nodes=rng.choice([1, 1, 2]),
                estimated_hours=rng.choice([None, 0.5, 3.0]),
                outputs={f"out{i}": gb} if gb else {},
                depends_on=deps,
            )
        )
    return tasks


def _check(seed: int, n: int, minimize: str) -> None:
    rng = random.Random(seed)
    catalog = random_catalog(rng)
    tasks = random_dag(rng, n)
    try:
        problem = build_problem(tasks, catalog)
    except ValueError:
        pytest.skip(reason="random catalog has no offering for a task")
    brute = evaluate(problem, solve_exhaustive(problem, minimize))
    for method in ("auto", "milp"):
        plan = optimize(tasks, catalog, minimize=minimize, method=method)
        assert plan.optimal
        if minimize == "time":
            assert plan.total_hours == pytest.approx(brute.makespan_hours, abs=1e-6)
        assert plan.total_cost == pytest.approx(brute.total_cost, rel=1e-7, abs=1e-6), (seed, method)


@pytest.mark.parametrize("seed", range(40))
def test_cost_matches_exhaustive(seed: int) -> None:
    _check(seed, 4 if seed % 4 else 5, "cost")


@pytest.mark.parametrize("seed", range(100, 120))
def test_time_matches_exhaustive(seed: int) -> None:
    _check(seed, 4, "time")


def test_tree_and_chain_use_dp() -> None:
    rng = random.Random(7)
    catalog = random_catalog(rng)
    chain = [Task(name=f"c{i}", resources=Resources.from_dict({"cpus": "4+"}), outputs={"o": 100},
                  depends_on=[f"c{i - 1}"] if i else []) for i in range(4)]  # fmt: skip
    plan = optimize(chain, catalog)
    assert plan.solver == "dp"
    brute = evaluate(build_problem(chain, catalog), solve_exhaustive(build_problem(chain, catalog)))
    assert plan.total_cost == pytest.approx(brute.total_cost)
    assert optimize(chain, catalog, minimize="time").solver == "dp"


def test_cross_cloud_egress_pulls_tasks_together() -> None:
    rows = [
        Offering("aws", "us-east-1", "use1-az1", "gpu", 8, 61, "V100", 1, 16, 3.00, float("nan")),
        Offering("gcp", "us-central1", "us-central1-a", "gpu", 8, 61, "V100", 1, 16, 2.90, float("nan")),
        Offering("aws", "us-east-1", "use1-az1", "cpu", 8, 32, None, 0, np.nan, 0.40, float("nan")),
        Offering("gcp", "us-central1", "us-central1-a", "cpu", 8, 32, None, 0, np.nan, 0.45, float("nan")),
    ]
    catalog = Catalog(OfferingTable.from_offerings(rows), include_local=False)

    def dag(gb: float) -> list[Task]:
        return [
            Task(name="prep", resources=Resources.from_dict({"cpus": 8}), outputs={"x": gb}),
            Task(name="train", resources=Resources.from_dict({"accelerators": "V100"}), depends_on=["prep"]),
        ]

    apart = optimize(dag(0), catalog)
    assert (apart.tasks["prep"].cloud, apart.tasks["train"].cloud) == ("aws", "gcp")
    together = optimize(dag(100), catalog)  # 100 GB cross-cloud = $9 > the $0.15 saved
    assert together.tasks["prep"].cloud == together.tasks["train"].cloud
    assert together.egress == []
