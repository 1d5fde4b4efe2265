"""Cluster groups: consecutive tasks of one DAG run that share one cluster, decided in the run's plan.

An edge ``u -> v`` of the run's sky tasks joins (u hands its cluster over to v) when all hold:

- chain shape: u has exactly one sky successor (v), v exactly one sky predecessor (u), and the edge
  is direct (no non-sky task runs in between, so the handoff is short);
- neither task is excluded (`SharingRules`: ``share_cluster=False``, an explicit ``cluster_name``,
  spillover, keep-warm, a trigger rule other than all_success), and u may hand off (an explicit
  ``down=True`` ends a group);
- compatible: the same cloud, region and market (spot/on-demand) in the plan, the same node count,
  the group's instance fits v's resources (the same type, or the catalog says that type satisfies
  what v asks for), and v asks for no accelerators, or for the very ones the group's first task
  launched with (the core's reuse fit check compares exactly that);
- cheaper: what v saves, its cold start (provision, plus setup when v's setup already ran on the
  cluster; measured from the DAG's past launches, see `keepwarm.measured_startup_seconds`) priced
  at v's rate plus the egress of u's data to v in the plan, is at least what sharing costs: the
  cluster idling for ``handoff_seconds`` between u's end and v's start, plus running v on a
  pricier instance than planned. A tie (the free local backend) shares: it still saves time.

A group's cluster is named after its first task (`naming.group_cluster_name`); the first task
launches it, the middle ones reuse it, the last one tears it down. A joining task whose instance
type differs from the group's is moved onto the group's instance in the plan (price and cost too).

Re-planning after failover keeps groups consistent with what already runs (`decide_groups` with
``previous`` and ``started``): an edge whose downstream task started keeps its old decision; an
edge whose upstream task started keeps a join only while the group's actual cluster still fits the
downstream task (else the group breaks: the downstream task gets a cluster of its own where the new
plan puts it, and the upstream task, now last, tears the cluster down); edges between tasks still
to come are decided afresh, so tasks follow a moved cluster when it suits them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.provision.keepwarm import StartupEstimate
from airflow_provider_sky.provision.naming import group_cluster_name
from airflow_provider_sky.spec import Task

DEFAULT_HANDOFF_SECONDS = 30.0  # scheduler latency between a task's end and its successor's start
GROUPS_KEY = "cluster_groups"  # plan JSON: {cluster: [tasks]}; present once sharing was decided
RULES_KEY = "sharing_rules"  # plan JSON: the rules, so a re-plan decides with the same ones
_PLACEMENT_FIELDS = ("zone", "instance_type", "accelerators", "hourly_price")
_GROUP_FIELDS = ("cluster_group", "group_first", "group_last", "shares_with", "share_saves_seconds",
                 "share_saves_usd")  # fmt: skip


@dataclass(frozen=True)
class SharingRules:
    """What the DAG's operators allow: tasks never sharing, tasks ending a group, indirect edges."""

    excluded: frozenset[str] = frozenset()
    no_handoff: frozenset[str] = frozenset()
    indirect: frozenset[tuple[str, str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "excluded": sorted(self.excluded),
            "no_handoff": sorted(self.no_handoff),
            "indirect": sorted([u, v] for u, v in self.indirect),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> SharingRules:
        d = d or {}
        return cls(
            frozenset(d.get("excluded") or ()),
            frozenset(d.get("no_handoff") or ()),
            frozenset((u, v) for u, v in d.get("indirect") or ()),
        )


@dataclass(frozen=True)
class EdgeDecision:
    """Whether ``down`` takes over ``up``'s cluster, why, and what it saves (net, after idle costs)."""

    up: str
    down: str
    share: bool
    reason: str
    saves_seconds: float = 0.0
    saves_usd: float = 0.0


@dataclass
class Grouping:
    """The decisions for every edge, the groups (cluster -> tasks in order) and per-task plan fields."""

    decisions: list[EdgeDecision] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def decision(self, up: str, down: str) -> EdgeDecision | None:
        return next((d for d in self.decisions if (d.up, d.down) == (up, down)), None)

    def apply_json(self, plan: Mapping[str, Any], rules: SharingRules | None = None) -> dict[str, Any]:
        """A copy of a plan (JSON form) with the group fields set, moved placements repriced and
        ``cluster_groups`` (and the rules) recorded; old group fields are dropped first."""
        out = dict(plan)
        tasks: dict[str, dict[str, Any]] = {}
        delta = 0.0
        for name, entry in (plan.get("tasks") or {}).items():
            new = {k: v for k, v in entry.items() if k not in _GROUP_FIELDS}
            extra = self.annotations.get(name, {})
            if "cost" in extra:
                delta += float(extra["cost"]) - float(entry.get("cost") or 0.0)
            new.update(extra)
            tasks[name] = new
        out["tasks"] = tasks
        if delta:
            out["total_cost"] = float(plan.get("total_cost") or 0.0) + delta
        out[GROUPS_KEY] = {name: list(members) for name, members in self.groups.items()}
        if rules is not None:
            out[RULES_KEY] = rules.to_json()
        return out

    def apply(self, plan: Any) -> Any:
        """The same for an `optimizer.Plan` (the CLI's form, with its solver details kept)."""
        tasks = {}
        delta = 0.0
        for name, p in plan.tasks.items():
            extra = self.annotations.get(name, {})
            fields = {k: v for k, v in extra.items() if k in {f.name for f in dataclasses.fields(p)}}
            if "cost" in fields:
                delta += float(fields["cost"]) - p.cost
            tasks[name] = dataclasses.replace(p, **fields)
        return dataclasses.replace(plan, tasks=tasks, total_cost=plan.total_cost + delta)


def _accelerators_text(task: Task) -> str | None:
    """The accelerator request as the core records it on a cluster ("A100:2"), or None."""
    accs = task.resources.accelerators
    return ",".join(f"{name}:{count}" for name, count in accs.items()) if accs else None


def fit_problem(place: Mapping[str, Any], task: Task, catalog: Any = None) -> str | None:
    """Why a cluster at `place` (a plan placement) cannot run `task`, or None when it fits."""
    cloud, region, itype = place.get("cloud"), place.get("region"), place.get("instance_type")
    for cand in task.resources.candidates():
        if cand.cloud not in (None, cloud) or cand.region not in (None, region):
            continue
        if cand.instance_type not in (None, itype):
            continue
        if cloud == "local":
            if cand.accelerators or cand.use_spot:
                continue
            return None
        if catalog is None:
            if cand.instance_type == itype:
                return None
            continue
        from airflow_provider_sky.optimizer.requests import query_for

        query = dataclasses.replace(
            query_for(cand), cloud=cloud, region=region, zone=None, instance_type=itype,
            use_spot=bool(place.get("use_spot")),
        )  # fmt: skip
        if len(catalog.find(query)):
            return None
    return f"{cloud}/{region} {itype} does not satisfy its resources"


def _topological(tasks: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    names = list(tasks)
    preds: dict[str, set[str]] = {n: set() for n in names}
    for u, v in edges:
        preds[v].add(u)
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(names):
        ready = [n for n in names if n not in done and preds[n] <= done]
        if not ready:  # a cycle cannot come from Airflow; keep the rest in their given order
            ready = [n for n in names if n not in done]
        for n in ready:
            order.append(n)
            done.add(n)
    return order


class _Decider:
    """One grouping pass (see `decide_groups`)."""

    def __init__(self, tasks, edges, placements, egress, rules, startup, catalog, handoff_seconds, previous, started):  # type: ignore[no-untyped-def]
        self.tasks: Mapping[str, Task] = tasks
        self.edges = [(u, v) for u, v in dict.fromkeys(edges) if u in tasks and v in tasks and u != v]
        self.places: Mapping[str, Mapping[str, Any]] = placements
        self.egress = list(egress or ())
        self.rules: SharingRules = rules
        self.startup: StartupEstimate = startup
        self.catalog = catalog
        self.handoff = handoff_seconds
        self.previous = previous
        self.started = set(started)
        self.succ: dict[str, list[str]] = {n: [] for n in tasks}
        self.pred: dict[str, list[str]] = {n: [] for n in tasks}
        for u, v in self.edges:
            self.succ[u].append(v)
            self.pred[v].append(u)

    def shape_problem(self, u: str, v: str) -> str | None:
        if len(self.succ[u]) != 1:
            return f"fan-out: {u} feeds {len(self.succ[u])} sky tasks"
        if len(self.pred[v]) != 1:
            return f"fan-in: {v} waits for {len(self.pred[v])} sky tasks"
        if (u, v) in self.rules.indirect:
            return "not directly chained (other tasks run in between)"
        for name in (u, v):
            if name in self.rules.excluded:
                return f"{name} does not share its cluster (share_cluster=False, cluster_name, spillover or keep_warm)"
        if u in self.rules.no_handoff:
            return f"{u} tears its cluster down (down=True)"
        if u not in self.places or v not in self.places:
            return "not both in the plan"
        return None

    def compat_problem(self, first: str, u: str, v: str) -> str | None:
        g, p = self.places[first], self.places[v]
        tu, tv, tf = self.tasks[u], self.tasks[v], self.tasks[first]
        if (g.get("cloud"), g.get("region")) != (p.get("cloud"), p.get("region")):
            return f"different places ({g.get('cloud')}/{g.get('region')} vs {p.get('cloud')}/{p.get('region')})"
        if bool(g.get("use_spot")) != bool(p.get("use_spot")):
            return "different markets (spot vs on-demand)"
        if tu.num_nodes != tv.num_nodes or tf.num_nodes != tv.num_nodes:
            return f"different node counts ({tf.num_nodes} vs {tv.num_nodes})"
        wanted = _accelerators_text(tv)
        if wanted and wanted != _accelerators_text(tf):
            return f"{v} asks for accelerators {wanted}, the cluster is launched for {_accelerators_text(tf) or 'none'}"
        if g.get("instance_type") != p.get("instance_type"):
            problem = fit_problem(g, tv, self.catalog)
            if problem:
                return f"the group's instance does not fit {v}: {problem}"
        return None

    def economics(self, first: str, u: str, v: str) -> tuple[float, float, str]:
        """(seconds saved, dollars saved net, explanation) of v taking over the group's cluster."""
        g, p, tv = self.places[first], self.places[v], self.tasks[v]
        nodes = max(1, tv.num_nodes)
        ran_setups = {self.tasks[n].setup for n in self.members_so_far(first, u) if self.tasks[n].setup}
        setup_s = self.startup.setup_seconds if tv.setup and tv.setup in ran_setups else 0.0
        saved_s = self.startup.provision_seconds + setup_s
        v_rate, g_rate = float(p.get("hourly_price") or 0.0), float(g.get("hourly_price") or 0.0)
        egress = sum(float(f.get("cost") or 0.0) for f in self.egress if (f.get("src"), f.get("dst")) == (u, v))
        saved = saved_s / 3600 * v_rate * nodes + egress
        idle = self.handoff / 3600 * g_rate * nodes
        hours = float(p.get("cost") or 0.0) / (v_rate * nodes) if v_rate > 0 else float(tv.estimated_hours or 1.0)
        bigger = max(0.0, g_rate - v_rate) * hours * nodes
        net = saved - idle - bigger
        why = (
            f"saves {saved_s:.0f}s cold start (${saved - egress:.4f}) + egress ${egress:.4f}; "
            f"costs idle handoff {self.handoff:.0f}s (${idle:.4f}) + larger instance ${bigger:.4f}"
        )
        return saved_s - self.handoff, net, why

    def members_so_far(self, first: str, last: str) -> list[str]:
        chain = [last]
        while chain[-1] != first and self.pred[chain[-1]]:
            chain.append(self.pred[chain[-1]][0])
        return chain

    def joined_before(self, u: str, v: str) -> bool:
        old = self.previous or {}
        gu, gv = (old.get(u) or {}).get("cluster_group"), (old.get(v) or {}).get("cluster_group")
        return bool(gv) and gu == gv

    def decide(self, first: str, u: str, v: str) -> EdgeDecision:
        problem = self.shape_problem(u, v)
        if problem:
            return EdgeDecision(u, v, False, problem)
        if self.previous is not None and v in self.started:
            kept = self.joined_before(u, v)
            return EdgeDecision(u, v, kept, f"kept: {v} already started {'on' if kept else 'off'} the shared cluster")
        if self.previous is not None and u in self.started:
            if not self.joined_before(u, v):
                return EdgeDecision(u, v, False, f"kept: {u} already started without handing over")
            problem = self.compat_problem(first, u, v)
            if problem:
                return EdgeDecision(u, v, False, f"group broken after re-planning: {problem}")
            return EdgeDecision(u, v, True, f"kept: {v} follows the cluster of {first}")
        problem = self.compat_problem(first, u, v)
        if problem:
            return EdgeDecision(u, v, False, problem)
        seconds, net, why = self.economics(first, u, v)
        if net < 0:
            return EdgeDecision(u, v, False, f"separate clusters are cheaper: {why}", seconds, net)
        return EdgeDecision(u, v, True, why, seconds, net)


def decide_groups(
    tasks: Mapping[str, Task],
    edges: Iterable[tuple[str, str]],
    placements: Mapping[str, Mapping[str, Any]],
    *,
    dag_id: str,
    run_id: str,
    egress: Iterable[Mapping[str, Any]] = (),
    rules: SharingRules | None = None,
    startup: StartupEstimate | None = None,
    catalog: Any = None,
    handoff_seconds: float = DEFAULT_HANDOFF_SECONDS,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    started: Collection[str] = (),
) -> Grouping:
    """Decide which consecutive tasks share a cluster (rules in the module docstring).

    `placements` / `egress` are the plan's JSON ``tasks`` / ``egress``; `startup` the measured cold
    start (default: the keep-warm defaults); `catalog` checks that a bigger instance fits (without
    one, only the same instance type does). With `previous` (the old plan's ``tasks``) and
    `started` (tasks that already have a job or cluster) this is a re-plan.
    """
    from airflow_provider_sky.provision.keepwarm import DEFAULT_PROVISION_SECONDS, DEFAULT_SETUP_SECONDS

    startup = startup or StartupEstimate(DEFAULT_PROVISION_SECONDS, DEFAULT_SETUP_SECONDS, 0, 0)
    d = _Decider(tasks, edges, placements, egress, rules or SharingRules(), startup, catalog, handoff_seconds,
                 previous, started)  # fmt: skip
    result = Grouping()
    first_of: dict[str, str] = {}
    for v in _topological(tasks, d.edges):
        first_of[v] = v
        for u in d.pred[v]:
            decision = d.decide(first_of[u], u, v)
            result.decisions.append(decision)
            if decision.share:
                first_of[v] = first_of[u]
    members: dict[str, list[str]] = {}
    for name in _topological(tasks, d.edges):
        members.setdefault(first_of[name], []).append(name)
    for first, group in members.items():
        if len(group) < 2:
            continue
        cluster = group_cluster_name(dag_id, run_id, first)
        result.groups[cluster] = group
        base = placements[first]
        for i, name in enumerate(group):
            note: dict[str, Any] = {
                "cluster_group": cluster, "group_first": i == 0, "group_last": i == len(group) - 1,
                "shares_with": group[i - 1] if i else None,
            }  # fmt: skip
            if i:
                decision = result.decision(group[i - 1], name)
                note["share_saves_seconds"] = round(decision.saves_seconds, 1) if decision else 0.0
                note["share_saves_usd"] = round(decision.saves_usd, 6) if decision else 0.0
                own = placements[name]
                if own.get("instance_type") != base.get("instance_type"):  # runs on the group's instance
                    note.update({k: base.get(k) for k in _PLACEMENT_FIELDS})
                    rate = float(own.get("hourly_price") or 0.0)
                    hours_nodes = float(own.get("cost") or 0.0) / rate if rate > 0 else 0.0
                    note["cost"] = float(base.get("hourly_price") or 0.0) * hours_nodes
            result.annotations[name] = note
    return result


def local_placements(tasks: Mapping[str, Task]) -> dict[str, dict[str, Any]]:
    """Plan placements when only the local backend is enabled: every task that may run there, free."""
    out = {}
    for name, task in tasks.items():
        if all(c.cloud not in (None, "local") for c in task.resources.candidates()):
            continue
        out[name] = {
            "cloud": "local", "region": "local", "zone": "local", "instance_type": "local",
            "accelerators": None, "use_spot": False, "hourly_price": 0.0, "cost": 0.0,
        }  # fmt: skip
    return out
