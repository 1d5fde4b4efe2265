"""The placement plan: what runs where, what it costs, what data moves; JSON round trip and a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table


@dataclass(frozen=True)
class TaskPlacement:
    """Where one task runs. ``hourly_price`` is per instance; ``cost`` = hourly x hours x nodes."""

    cloud: str
    region: str | None
    zone: str | None
    instance_type: str
    accelerators: dict[str, int | float] | None
    use_spot: bool
    hourly_price: float
    cost: float
    #: Shared cluster (see ``provision.cluster_groups``): its name, and whether this task launches
    #: it (``group_first``) / tears it down (``group_last``); ``shares_with`` is the upstream task
    #: whose cluster this one takes over. None / False: the task has a cluster of its own.
    cluster_group: str | None = None
    group_first: bool = False
    group_last: bool = False
    shares_with: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "accelerators": dict(self.accelerators) if self.accelerators else None,
            "use_spot": self.use_spot,
            "hourly_price": self.hourly_price,
            "cost": self.cost,
        }
        if self.cluster_group:
            d.update(
                cluster_group=self.cluster_group,
                group_first=self.group_first,
                group_last=self.group_last,
                shares_with=self.shares_with,
            )
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> TaskPlacement:
        return cls(
            cloud=d["cloud"],
            region=d.get("region"),
            zone=d.get("zone"),
            instance_type=d["instance_type"],
            accelerators=dict(d["accelerators"]) if d.get("accelerators") else None,
            use_spot=bool(d.get("use_spot", False)),
            hourly_price=float(d["hourly_price"]),
            cost=float(d["cost"]),
            cluster_group=d.get("cluster_group"),
            group_first=bool(d.get("group_first", False)),
            group_last=bool(d.get("group_last", False)),
            shares_with=d.get("shares_with"),
        )

    @property
    def cluster_text(self) -> str:
        """The shared cluster for a table cell: ``name (first)`` / ``(last)``, "-" when none."""
        if not self.cluster_group:
            return "-"
        role = "first" if self.group_first else "last" if self.group_last else "middle"
        return f"{self.cluster_group} ({role})"

    @property
    def where(self) -> str:
        return "/".join(p for p in (self.cloud, self.region, self.zone) if p)


@dataclass(frozen=True)
class EgressFlow:
    """Data moved along a dependency (or to/from a bucket) between two places, and its price."""

    src: str
    dst: str
    gb: float
    src_cloud: str
    src_region: str | None
    dst_cloud: str
    dst_region: str | None
    cost: float

    def to_json_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> EgressFlow:
        return cls(
            d["src"], d["dst"], float(d["gb"]), d["src_cloud"], d.get("src_region"), d["dst_cloud"],
            d.get("dst_region"), float(d["cost"]),
        )  # fmt: skip


@dataclass(frozen=True)
class Alternative:
    """A candidate the optimizer weighed for a task (cheapest per region, compute cost only)."""

    where: str
    instance_type: str
    use_spot: bool
    hourly_price: float
    cost: float


@dataclass
class Plan:
    """A DAG-wide placement. ``to_json_dict`` is the stored/CLI form; the rest is for humans."""

    tasks: dict[str, TaskPlacement]
    egress: list[EgressFlow]
    total_cost: float
    total_hours: float
    minimize: str = "cost"
    solver: str = ""
    optimal: bool = True
    gap: float | None = None
    solve_seconds: float = 0.0
    alternatives: dict[str, list[Alternative]] = field(default_factory=dict)
    catalog: str | None = None

    @property
    def cluster_groups(self) -> dict[str, list[str]]:
        """Shared clusters: name -> member tasks in run order (empty when every task has its own)."""
        groups: dict[str, list[str]] = {}
        for name, p in self.tasks.items():
            if p.cluster_group:
                groups.setdefault(p.cluster_group, []).append(name)
        return groups

    @property
    def compute_cost(self) -> float:
        return sum(t.cost for t in self.tasks.values())

    @property
    def egress_cost(self) -> float:
        return sum(f.cost for f in self.egress)

    def to_json_dict(self) -> dict[str, Any]:
        """``{"total_cost", "total_hours", "tasks": {name: {...}}, "egress": [...]}``, plus
        ``"cluster_groups": {cluster: [tasks]}`` when some consecutive tasks share a cluster."""
        d: dict[str, Any] = {
            "total_cost": float(self.total_cost),
            "total_hours": float(self.total_hours),
            "tasks": {name: p.to_json_dict() for name, p in self.tasks.items()},
            "egress": [f.to_json_dict() for f in self.egress],
        }
        if self.cluster_groups:
            d["cluster_groups"] = self.cluster_groups
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Plan:
        """Inverse of :meth:`to_json_dict` (solver details and alternatives are not stored)."""
        return cls(
            tasks={name: TaskPlacement.from_json_dict(p) for name, p in d["tasks"].items()},
            egress=[EgressFlow.from_json_dict(f) for f in d.get("egress", [])],
            total_cost=float(d["total_cost"]),
            total_hours=float(d["total_hours"]),
            solver="stored",
        )

    def placement(self, task: str) -> TaskPlacement:
        try:
            return self.tasks[task]
        except KeyError:
            raise KeyError(f"task {task!r} is not in this plan (tasks: {sorted(self.tasks)})") from None

    def summary(self) -> str:
        """One line: totals and how the plan was found."""
        if self.optimal:
            how = self.solver
        elif self.gap is None:
            how = f"{self.solver}, stopped at the time limit without a bound (heuristic plan)"
        else:
            how = f"{self.solver}, stopped early, gap {100 * self.gap:.2f}%"
        return (
            f"{len(self.tasks)} task(s): ${self.total_cost:,.2f} (compute ${self.compute_cost:,.2f} + "
            f"egress ${self.egress_cost:,.2f}), {self.total_hours:.2f} h; minimize {self.minimize}; "
            f"{how} in {self.solve_seconds * 1000:.0f} ms"
        )

    def render_table(self) -> Table:
        """A rich table: one row per task, then one per data transfer, with totals in the caption."""
        table = Table(title="Sky placement plan", caption=self.summary(), show_lines=False)
        shared = bool(self.cluster_groups)  # the "cluster" column only when some tasks share one
        columns = [("task", "left"), ("where", "left"), ("instance", "left"), ("accelerators", "left"),
                   ("spot", "center"), ("$/h", "right"), ("cost", "right"), ("alternatives", "right")]  # fmt: skip
        for col, just in columns + ([("cluster", "left")] if shared else []):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for name, p in self.tasks.items():
            acc = ", ".join(f"{k}:{v:g}" for k, v in (p.accelerators or {}).items()) or "-"
            alts = self.alternatives.get(name, [])
            alt = f"{len(alts)} (next ${alts[1].cost:,.2f})" if len(alts) > 1 else str(len(alts) or "-")
            table.add_row(
                name, p.where, p.instance_type, acc, "yes" if p.use_spot else "",
                f"{p.hourly_price:.4g}", f"${p.cost:,.2f}", alt, *([p.cluster_text] if shared else []),
            )  # fmt: skip
        for f in self.egress:
            src = "/".join(x for x in (f.src_cloud, f.src_region) if x)
            dst = "/".join(x for x in (f.dst_cloud, f.dst_region) if x)
            row = [f"{f.src} -> {f.dst}", f"{src} -> {dst}", f"{f.gb:g} GB egress", "", "", "", f"${f.cost:,.2f}", ""]
            table.add_row(*row, *([""] if shared else []))
        return table
