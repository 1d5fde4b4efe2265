"""Build a :class:`Problem` from spec tasks and a catalog."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.optimizer.candidates import CandidateFinder
from airflow_provider_sky.optimizer.data_flow import data_items, store_cloud
from airflow_provider_sky.optimizer.egress_model import EgressModel, Place
from airflow_provider_sky.optimizer.errors import OptimizerError
from airflow_provider_sky.optimizer.problem import DataEdge, NodeOptions, Problem

DEFAULT_HOURS = 1.0


def task_hours(task: Any) -> float:
    hours = getattr(task, "estimated_hours", None)
    return float(hours) if hours else DEFAULT_HOURS


def task_name(task: Any, i: int) -> str:
    """The task's name, or ``task-<i>`` for an unnamed task."""
    name = getattr(task, "name", None)
    return str(name) if name else f"task-{i}"


def build_problem(
    tasks: Sequence[Any],
    catalog: Catalog,
    *,
    blocked: Iterable | None = None,
    bandwidth_gbps: float = 1.0,
    edges: Iterable[tuple[str, str]] | None = None,
    finder: CandidateFinder | None = None,
    clouds: Iterable[str] | None = None,
) -> Problem:
    """Nodes for tasks (and buckets in their inputs/outputs) with priced candidates, plus edges.

    Dependencies come from each task's ``depends_on`` and the optional ``edges`` (name pairs).
    ``clouds`` restricts candidates to those clouds (None = every cloud of the catalog).
    """
    finder = finder or CandidateFinder(catalog, blocked, clouds)
    names = [task_name(t, i) for i, t in enumerate(tasks)]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise OptimizerError(f"two tasks are named {name!r}; task names must be unique in a DAG")
        index[name] = i
    pairs: set[tuple[int, int]] = set()
    for i, t in enumerate(tasks):
        deps = getattr(t, "depends_on", None) or ()
        for d in [deps] if isinstance(deps, str) else deps:
            if d not in index:
                raise OptimizerError(f"task {names[i]!r} depends on {d!r}, which is not a task of this DAG")
            pairs.add((index[d], i))
    for a, b in edges or ():
        for n in (a, b):
            if n not in index:
                raise OptimizerError(f"dependency {a!r} -> {b!r} names an unknown task {n!r}")
        pairs.add((index[a], index[b]))

    region_place: dict[int, int] = {}
    places: list[Place] = []
    place_index: dict[Place, int] = {}

    def place_of(p: Place) -> int:
        if p not in place_index:
            place_index[p] = len(places)
            places.append(p)
        return place_index[p]

    nodes: list[NodeOptions] = []
    for name, t in zip(names, tasks, strict=True):
        hours, n_nodes = task_hours(t), int(getattr(t, "num_nodes", 1) or 1)
        priced, (regions, cost, rows, spot, hourly) = finder.per_region(name, getattr(t, "resources", None), hours * n_nodes)
        locs = np.empty(len(regions), dtype=np.int64)
        for k, r in enumerate(regions.tolist()):
            if r not in region_place:
                region_place[r] = place_of(catalog.region_names[r])
            locs[k] = region_place[r]
        nodes.append(NodeOptions(name, locs, cost, rows, spot, hourly, hours, n_nodes, False, len(priced.rows)))

    data_edges: list[DataEdge] = []
    out_gb = [0.0] * len(tasks)
    store_nodes: dict[Place, int] = {}

    def store_node(cloud: str) -> int:
        p: Place = (cloud, None)
        if p not in store_nodes:
            loc = np.array([place_of(p)], dtype=np.int64)
            zero = np.zeros(1)
            store_nodes[p] = len(nodes)
            nodes.append(NodeOptions(f"{cloud} bucket", loc, zero, np.array([-1]), np.zeros(1, bool), zero, 0.0, 0, True, 1))
        return store_nodes[p]

    for i, t in enumerate(tasks):
        for uri, gb in data_items(getattr(t, "outputs", None)):
            cloud = store_cloud(uri)
            if cloud is None:
                out_gb[i] += gb
            elif gb > 0:
                data_edges.append(DataEdge(i, store_node(cloud), gb))
        for uri, gb in data_items(getattr(t, "inputs", None)):
            cloud = store_cloud(uri)
            if cloud is not None and gb > 0:
                data_edges.append(DataEdge(store_node(cloud), i, gb))
    data_edges.extend(DataEdge(a, b, out_gb[a]) for a, b in sorted(pairs))
    return Problem(nodes, data_edges, EgressModel(places), bandwidth_gbps)
