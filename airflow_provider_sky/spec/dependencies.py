"""Checks on `depends_on` across the tasks of one YAML file: known names, no duplicates, no cycles."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path


def check_dependencies(
    names: Sequence[str | None], depends_on: Sequence[Sequence[str]], prefixes: Sequence[str]
) -> None:
    """Validate the dependency graph given by task `names` and their `depends_on` lists."""
    if not any(depends_on):
        return
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is None:
            raise SpecError(
                join_path(prefixes[i], "name"), None, "tasks need names when depends_on is used",
                "give every task in the file a name",
            )  # fmt: skip
        if name in index:
            raise SpecError(
                join_path(prefixes[i], "name"), name, "duplicate task name", "give each task a unique name"
            )
        index[name] = i
    for i, deps in enumerate(depends_on):
        for dep in deps:
            if dep not in index:
                known = ", ".join(sorted(index))
                fix = did_you_mean(dep, index, f"use one of the task names in this file: {known}")
                raise SpecError(join_path(prefixes[i], "depends_on"), dep, "unknown task", fix)
    cycle = _find_cycle([[index[d] for d in deps] for deps in depends_on])
    if cycle is not None:
        path = " -> ".join(str(names[i]) for i in cycle)
        raise SpecError(
            join_path(prefixes[cycle[0]], "depends_on"),
            path,
            "dependency cycle",
            "remove one of the dependencies",
        )


def _find_cycle(edges: list[list[int]]) -> list[int] | None:
    """A list of node indices forming a cycle (first == last), or None. Iterative DFS."""
    state = [0] * len(edges)  # 0 new, 1 on stack, 2 done
    for root in range(len(edges)):
        if state[root]:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, next_edge = stack[-1]
            if next_edge < len(edges[node]):
                stack[-1] = (node, next_edge + 1)
                child = edges[node][next_edge]
                if state[child] == 1:
                    on_stack = [n for n, _ in stack]
                    return [*on_stack[on_stack.index(child) :], child]
                if state[child] == 0:
                    state[child] = 1
                    stack.append((child, 0))
            else:
                state[node] = 2
                stack.pop()
    return None
