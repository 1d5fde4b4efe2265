"""The placement problem: per node the candidate locations with their compute cost, plus data edges.

A node is a task or a bucket named in a task's inputs/outputs (fixed to its cloud). Candidates are
already pruned to one offering per (node, region): egress and transfer time depend only on the
region, so only the cheapest offering in a region can be optimal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from airflow_provider_sky.optimizer.egress_model import EgressModel, Place
from airflow_provider_sky.optimizer.errors import OptimizerError


@dataclass
class NodeOptions:
    """Candidates of one node. Arrays are parallel; ``loc`` indexes ``Problem.places``."""

    name: str
    loc: np.ndarray
    cost: np.ndarray
    row: np.ndarray
    use_spot: np.ndarray
    hourly: np.ndarray
    runtime_hours: float = 0.0
    num_nodes: int = 1
    is_store: bool = False
    considered: int = 0

    def __len__(self) -> int:
        return len(self.loc)

    def take(self, keep: np.ndarray) -> NodeOptions:
        """Only the candidates ``keep`` (indices or mask)."""
        return NodeOptions(
            self.name, self.loc[keep], self.cost[keep], self.row[keep], self.use_spot[keep], self.hourly[keep],
            self.runtime_hours, self.num_nodes, self.is_store, self.considered,
        )  # fmt: skip


@dataclass(frozen=True)
class DataEdge:
    """Precedence ``src -> dst`` (node indices) carrying ``gb`` (0 = order only)."""

    src: int
    dst: int
    gb: float = 0.0


@dataclass
class Problem:
    nodes: list[NodeOptions]
    edges: list[DataEdge]
    egress: EgressModel
    bandwidth_gbps: float = 1.0
    topo_order: list[int] = field(default_factory=list)

    @property
    def places(self) -> list[Place]:
        return self.egress.places

    def __post_init__(self) -> None:
        if not self.topo_order:
            self.topo_order = topological_order(len(self.nodes), self.edges, [n.name for n in self.nodes])

    def data_edges(self) -> list[DataEdge]:
        return [e for e in self.edges if e.gb > 0]

    def transfer_hours(self, gb: float) -> float:
        """Hours to move ``gb`` between two regions at the configured bandwidth."""
        return gb * 8.0 / self.bandwidth_gbps / 3600.0 if gb > 0 else 0.0

    def with_nodes(self, nodes: list[NodeOptions]) -> Problem:
        return Problem(nodes, self.edges, self.egress, self.bandwidth_gbps, self.topo_order)


@dataclass(frozen=True)
class Evaluation:
    compute_cost: float
    egress_cost: float
    makespan_hours: float
    flows: list[tuple[DataEdge, float]]  # (edge, cost) for edges that move data between places

    @property
    def total_cost(self) -> float:
        return self.compute_cost + self.egress_cost


def topological_order(n: int, edges: list[DataEdge], names: list[str]) -> list[int]:
    """Kahn's order; raises OptimizerError naming a cycle's tasks."""
    indeg = [0] * n
    succ: list[list[int]] = [[] for _ in range(n)]
    for e in edges:
        succ[e.src].append(e.dst)
        indeg[e.dst] += 1
    queue = deque(i for i in range(n) if indeg[i] == 0)
    order: list[int] = []
    while queue:
        i = queue.popleft()
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                queue.append(j)
    if len(order) != n:
        stuck = sorted(names[i] for i in range(n) if indeg[i] > 0)
        raise OptimizerError(f"depends_on forms a cycle among tasks {stuck}; remove one of the dependencies")
    return order


def evaluate(problem: Problem, choice: list[int]) -> Evaluation:
    """Cost and makespan of choosing candidate ``choice[i]`` for node ``i``."""
    nodes, eg = problem.nodes, problem.egress
    compute = float(sum(n.cost[c] for n, c in zip(nodes, choice, strict=True)))
    loc = [int(n.loc[c]) for n, c in zip(nodes, choice, strict=True)]
    egress = 0.0
    flows: list[tuple[DataEdge, float]] = []
    preds: list[list[tuple[int, float]]] = [[] for _ in nodes]
    for e in problem.edges:
        same = bool(eg.same_place[loc[e.src], loc[e.dst]])
        transfer = 0.0 if same else problem.transfer_hours(e.gb)
        preds[e.dst].append((e.src, transfer))
        if e.gb > 0 and not same:
            c = float(eg.cost_matrix(np.array([loc[e.src]]), np.array([loc[e.dst]]), e.gb)[0, 0])
            egress += c
            flows.append((e, c))
    finish = [0.0] * len(nodes)
    for i in problem.topo_order:
        start = max((finish[p] + t for p, t in preds[i]), default=0.0)
        finish[i] = start + nodes[i].runtime_hours
    return Evaluation(compute, egress, max(finish, default=0.0), flows)
