"""Read what ``sky-airflow plan`` accepts: a DAG YAML or a SkyPilot task YAML (multi-document = chain).

DAG YAML::

    name: training-pipeline
    minimize: cost            # or time
    tasks:
      - name: prep
        resources: {cpus: 8+}
        outputs: {prep-out: 50}    # GB read by each downstream task
      - name: train
        depends_on: [prep]
        resources: {accelerators: A100:8}
        estimated_hours: 6
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.spec.dependencies import check_dependencies
from airflow_provider_sky.spec.errors import SpecError
from airflow_provider_sky.spec.task import Task, load_chain
from airflow_provider_sky.spec.yaml_io import load_documents, read_source

DAG_KEYS = {"name", "minimize", "tasks", "bandwidth_gbps", "description"}


@dataclass
class DagSpec:
    """Tasks to plan, their extra chain edges, and the DAG-level settings."""

    name: str | None
    tasks: list[Task]
    edges: list[tuple[str, str]] = field(default_factory=list)
    minimize: str | None = None
    bandwidth_gbps: float | None = None


def _is_dag(documents: list[Any]) -> bool:
    return len(documents) == 1 and isinstance(documents[0], Mapping) and "tasks" in documents[0]


def load_dag(text_or_path: str | bytes | os.PathLike[str]) -> DagSpec:
    """Parse a DAG YAML or SkyPilot task YAML; errors are :class:`SpecError` with the field path."""
    text, source = read_source(text_or_path)
    documents = load_documents(text, source)
    if not _is_dag(documents):
        name, tasks = load_chain(text)
        edges: list[tuple[str, str]] = []
        if len(tasks) > 1 and not any(t.depends_on for t in tasks):
            for i, t in enumerate(tasks):
                if not t.name:
                    t.name = f"task-{i}"
            edges = [(a.name, b.name) for a, b in itertools.pairwise(tasks)]  # type: ignore[misc]
        return DagSpec(name, tasks, edges)
    doc = documents[0]
    unknown = sorted(set(doc) - DAG_KEYS)
    if unknown:
        raise SpecError(unknown[0], doc[unknown[0]], "unknown DAG field", f"use only {', '.join(sorted(DAG_KEYS))}")
    raw_tasks = doc["tasks"]
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise SpecError("tasks", raw_tasks, "must be a non-empty list of tasks", "list tasks as `- name: ...` items")
    tasks = [Task.from_dict(item, f"tasks[{i}]") for i, item in enumerate(raw_tasks)]
    prefixes = [f"tasks[{i}]" for i in range(len(tasks))]
    for i, t in enumerate(tasks):
        if not t.name:
            raise SpecError(f"tasks[{i}].name", None, "every task of a DAG needs a name", "add `name: <task>`")
    check_dependencies([t.name for t in tasks], [t.depends_on for t in tasks], prefixes)
    minimize = doc.get("minimize")
    if minimize is not None and minimize not in ("cost", "time"):
        raise SpecError("minimize", minimize, "must be cost or time", "use `minimize: cost` or `minimize: time`")
    bandwidth = doc.get("bandwidth_gbps")
    if bandwidth is not None and (not isinstance(bandwidth, int | float) or bandwidth <= 0):
        raise SpecError("bandwidth_gbps", bandwidth, "must be a number > 0", "e.g. `bandwidth_gbps: 1`")
    return DagSpec(doc.get("name"), tasks, [], minimize, None if bandwidth is None else float(bandwidth))
