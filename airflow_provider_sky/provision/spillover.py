"""On-prem first, spill over to the cloud: the policy and the numbers behind each decision.

For one task the three options are compared:

    on-prem now     the pool has free units for it and nobody of its kind is queued ahead
    wait            expected wait W from the shared queue (`state.pool_queue.expected_wait`) and the
                    learned runtime R; on-prem finish = now + W + R
    cloud now       plan price P per node-hour, provisioning time T (median of past launches on those
                    clouds), staging egress E; cloud finish = now + T + R, cost = P x nodes x (T + R) + E

Policies (used only when the pool is full; a free pool always wins, a pool that can never run the
task always loses):

    prefer_onprem(max_wait)  wait while W (and the time already waited) stays within max_wait
    deadline(deadline_at)    wait while the on-prem finish meets the deadline; else the cloud if it
                             finishes sooner
    cost_of_delay($/h)       wait when W x $/h (+ on-prem cost) <= cloud cost + T x $/h

`decide` is pure (the benchmark drives it); `assess_pool`, `quote_cloud` and `heterogeneity` gather
its inputs from the pool, the state store and the optimizer. `SpillDecision.to_dict()` is the XCom form.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.ssh_pool_config import normalize_gpu_name
from airflow_provider_sky.state import pool_queue, pools

if TYPE_CHECKING:
    from airflow_provider_sky.clouds.ssh_pool_config import PoolHost
    from airflow_provider_sky.spec import Task
    from airflow_provider_sky.spec.resources import Resources
    from airflow_provider_sky.state import StateStore

CHOICES = ("onprem", "wait", "cloud")
POLICIES = ("prefer_onprem", "deadline", "cost_of_delay")
DEFAULT_PROVISION_S = {"local": 5.0}  # other clouds: DEFAULT_CLOUD_PROVISION_S until history says otherwise
DEFAULT_CLOUD_PROVISION_S = 300.0
HOST_DEMAND = "host"


# ---- policies ----------------------------------------------------------------------------------
def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _epoch(value: datetime | float | str) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        return _epoch(datetime.fromisoformat(value))
    return float(value)


def _iso(ts: float | None) -> str | None:
    return None if ts is None or not math.isfinite(ts) else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class SpillPolicy:
    """How to choose between waiting for the pool and the cloud; build with the functions below."""

    kind: str
    max_wait_s: float | None = None
    deadline_at: float | None = None  # POSIX seconds
    dollars_per_hour: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"spillover: unknown policy {self.kind!r}; use one of {', '.join(POLICIES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_wait_s": self.max_wait_s, "deadline_at": _iso(self.deadline_at),
                "dollars_per_hour": self.dollars_per_hour}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpillPolicy:
        deadline_at = d.get("deadline_at")
        return cls(
            str(d["kind"]),
            None if d.get("max_wait_s") is None else float(d["max_wait_s"]),
            None if deadline_at is None else _epoch(deadline_at),
            None if d.get("dollars_per_hour") is None else float(d["dollars_per_hour"]),
        )

    def describe(self) -> str:
        if self.kind == "prefer_onprem":
            return f"prefer_onprem(max_wait={self.max_wait_s:g}s)"
        if self.kind == "deadline":
            return f"deadline({_iso(self.deadline_at)})"
        return f"cost_of_delay(${self.dollars_per_hour:g}/h)"


def prefer_onprem(max_wait: float | timedelta = 600.0) -> SpillPolicy:
    """Wait for the pool as long as the expected wait stays within `max_wait` (seconds or timedelta)."""
    return SpillPolicy("prefer_onprem", max_wait_s=max(0.0, _seconds(max_wait)))


def deadline(deadline_at: datetime | float | str) -> SpillPolicy:
    """Burst to the cloud when the expected on-prem finish would miss `deadline_at`."""
    return SpillPolicy("deadline", deadline_at=_epoch(deadline_at))


def cost_of_delay(dollars_per_hour: float) -> SpillPolicy:
    """Each hour of waiting costs `dollars_per_hour`; pick the cheaper of waiting and the cloud."""
    return SpillPolicy("cost_of_delay", dollars_per_hour=max(0.0, float(dollars_per_hour)))


def policy_from_params(
    spillover: str | SpillPolicy | Mapping[str, Any] | None,
    *,
    max_wait: float | timedelta | None = None,
    deadline_at: datetime | float | str | None = None,
    dollars_per_hour: float | None = None,
) -> SpillPolicy | None:
    """The policy for operator parameters ``spillover``, ``max_wait``, ``deadline``, ``cost_of_delay``.

    None / "" / "off" -> None (no spillover). Missing numbers raise ValueError naming the parameter.
    """
    if spillover is None or isinstance(spillover, SpillPolicy):
        return spillover
    if isinstance(spillover, Mapping):
        return SpillPolicy.from_dict(spillover)
    kind = spillover.strip().lower()
    if kind in ("", "off", "none", "false"):
        return None
    if kind == "prefer_onprem":
        return prefer_onprem(600.0 if max_wait is None else max_wait)
    if kind == "deadline":
        if deadline_at is None:
            raise ValueError("spillover='deadline' needs deadline= (a datetime, or the task's SLA)")
        return deadline(deadline_at)
    if kind == "cost_of_delay":
        if dollars_per_hour is None:
            raise ValueError("spillover='cost_of_delay' needs cost_of_delay= (dollars per hour of waiting)")
        return cost_of_delay(dollars_per_hour)
    raise ValueError(f"spillover: unknown policy {spillover!r}; use one of {', '.join(POLICIES)}")


# ---- the decision ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpillDecision:
    """Where the task goes and why; `to_dict` is JSON (XCom, task log, state store)."""

    choice: str  # onprem | wait | cloud
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)
    expected_wait_s: float | None = None
    cloud_placement: dict[str, Any] | None = None
    heterogeneity: tuple[str, ...] = ()
    policy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "reason": self.reason,
            "policy": self.policy,
            "expected_wait_s": self.expected_wait_s,
            "cloud_placement": self.cloud_placement,
            "heterogeneity": list(self.heterogeneity),
            "inputs": self.inputs,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpillDecision:
        return cls(
            d["choice"], d["reason"], dict(d.get("inputs") or {}), d.get("expected_wait_s"),
            d.get("cloud_placement"), tuple(d.get("heterogeneity") or ()), d.get("policy", ""),
        )  # fmt: skip

    def log_line(self) -> str:
        text = f"spillover: {self.choice} ({self.policy}): {self.reason}"
        return text + "".join(f"\n  note: {h}" for h in self.heterogeneity)


@dataclass(frozen=True)
class OnPremView:
    """What the pool offers this task right now."""

    can_run: bool
    reason: str | None = None
    free_now: bool = False
    expected_wait_s: float = 0.0
    runtime_s: float = pool_queue.DEFAULT_RUNTIME_S
    runtime_source: str = "default"
    position: int = 0
    ahead: int = 0
    free_units: int = 0
    units_total: int = 0
    hourly_price: float = 0.0  # the whole on-prem cluster, amortized
    egress_usd: float = 0.0  # e.g. reading bucket inputs from on-prem
    accelerator: str | None = None


@dataclass(frozen=True)
class CloudQuote:
    """Running the task in the cloud now: price, provisioning time, egress, the planned placement."""

    available: bool
    reason: str | None = None
    hourly_price: float = 0.0  # per node
    num_nodes: int = 1
    runtime_s: float = pool_queue.DEFAULT_RUNTIME_S
    provision_s: float = DEFAULT_CLOUD_PROVISION_S
    egress_usd: float = 0.0
    placement: dict[str, Any] | None = None
    accelerator: str | None = None
    source: str = ""

    @property
    def cost_usd(self) -> float:
        return (
            self.hourly_price * self.num_nodes * (self.provision_s + self.runtime_s) / 3600.0
            + self.egress_usd
        )


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def decide(
    policy: SpillPolicy,
    pool: OnPremView,
    cloud: CloudQuote,
    *,
    now: float,
    waited_s: float = 0.0,
    heterogeneity: Sequence[str] = (),
) -> SpillDecision:
    """Pick onprem / wait / cloud for one task (pure; `now` in POSIX seconds)."""
    wait = pool.expected_wait_s
    onprem_finish = now + wait + pool.runtime_s
    cloud_finish = now + cloud.provision_s + cloud.runtime_s
    inputs: dict[str, Any] = {
        "now": _iso(now),
        "waited_s": _r(waited_s, 1),
        "pool_can_run": pool.can_run,
        "pool_free_now": pool.free_now,
        "free_units": pool.free_units,
        "units_total": pool.units_total,
        "queue_position": pool.position,
        "queued_ahead": pool.ahead,
        "expected_wait_s": _r(wait, 1),
        "runtime_s": _r(pool.runtime_s, 1),
        "runtime_source": pool.runtime_source,
        "onprem_finish_at": _iso(onprem_finish),
        "onprem_hourly_price": _r(pool.hourly_price, 4),
        "cloud_available": cloud.available,
        "cloud_hourly_price": _r(cloud.hourly_price, 4),
        "cloud_provision_s": _r(cloud.provision_s, 1),
        "cloud_egress_usd": _r(cloud.egress_usd, 4),
        "cloud_cost_usd": _r(cloud.cost_usd, 4),
        "cloud_finish_at": _iso(cloud_finish),
        "cloud_price_source": cloud.source,
        "policy": policy.to_dict(),
    }
    finite_wait = wait if math.isfinite(wait) else None

    def out(choice: str, reason: str) -> SpillDecision:
        return SpillDecision(
            choice, reason, inputs, _r(finite_wait, 1), cloud.placement if choice == "cloud" else None,
            tuple(heterogeneity), policy.describe(),
        )  # fmt: skip

    if not pool.can_run:
        why = f"the pool can never run this task: {pool.reason}"
        if not cloud.available:
            why += f"; and no cloud to spill to ({cloud.reason})"
        return out("cloud", why)
    if pool.free_now:
        return out("onprem", f"pool has capacity now ({pool.free_units} of {pool.units_total} units free)")
    if not cloud.available:
        return out(
            "wait",
            f"pool is full and there is no cloud to spill to ({cloud.reason}); expected wait {wait:.0f}s",
        )
    queue_text = f"expected wait {wait:.0f}s (position {pool.position}, {pool.ahead} ahead, runtime {pool.runtime_s:.0f}s {pool.runtime_source})"

    if policy.kind == "prefer_onprem":
        limit = policy.max_wait_s or 0.0
        left = limit - waited_s
        inputs["max_wait_left_s"] = _r(left, 1)
        if wait <= left:
            return out("wait", f"{queue_text} fits max_wait {limit:.0f}s (waited {waited_s:.0f}s)")
        return out("cloud", f"{queue_text} exceeds max_wait {limit:.0f}s (waited {waited_s:.0f}s)")

    if policy.kind == "deadline":
        due = policy.deadline_at if policy.deadline_at is not None else math.inf
        inputs["deadline_at"] = _iso(due)
        inputs["onprem_slack_s"] = _r(due - onprem_finish, 1)
        inputs["cloud_slack_s"] = _r(due - cloud_finish, 1)
        if onprem_finish <= due:
            return out(
                "wait", f"{queue_text}: on-prem finish {_iso(onprem_finish)} meets the deadline {_iso(due)}"
            )
        miss = f"on-prem finish {_iso(onprem_finish)} misses the deadline {_iso(due)} by {onprem_finish - due:.0f}s"
        if cloud_finish < onprem_finish:
            verdict = (
                "meets it" if cloud_finish <= due else f"misses it by {cloud_finish - due:.0f}s but sooner"
            )
            return out("cloud", f"{queue_text}: {miss}; the cloud finishes {_iso(cloud_finish)} ({verdict})")
        return out(
            "wait", f"{queue_text}: {miss}, but the cloud would finish even later ({_iso(cloud_finish)})"
        )

    rate = policy.dollars_per_hour or 0.0
    wait_cost = (
        (wait * rate / 3600.0 if math.isfinite(wait) else math.inf)
        + pool.hourly_price * pool.runtime_s / 3600.0
        + pool.egress_usd
    )
    cloud_cost = cloud.cost_usd + cloud.provision_s * rate / 3600.0
    inputs["wait_cost_usd"] = _r(wait_cost, 4)
    inputs["cloud_total_cost_usd"] = _r(cloud_cost, 4)
    if wait_cost <= cloud_cost:
        return out(
            "wait",
            f"{queue_text}: waiting costs ${wait_cost:.4f} <= cloud ${cloud_cost:.4f} (at ${rate:g}/h of delay)",
        )
    return out(
        "cloud",
        f"{queue_text}: waiting costs ${wait_cost:.4f} > cloud ${cloud_cost:.4f} (at ${rate:g}/h of delay)",
    )


# ---- the pool's side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolFit:
    """Whether (and as what) the pool can ever run a task: the first candidate that fits the hosts."""

    can_run: bool
    reason: str | None
    resources: Resources | None = None
    demand: str = HOST_DEMAND  # "host" or "<GPU>:<count>"
    accelerator: str | None = None
    gpus: int = 0
    cpus: float = 0.0
    memory_gb: float = 0.0
    units: int = 1  # nodes


def _fits(h: PoolHost, accelerator: str | None, gpus: int, cpus: float, memory: float) -> bool:
    if (h.cpus or 0) < cpus or (h.memory_gb or 0) < memory:
        return False
    return accelerator is None or (h.gpus or {}).get(accelerator, 0) >= gpus


def _num(q: Any) -> float:
    return float(getattr(q, "value", 0) or 0)


def pool_fit(
    task: Task, inventory: Sequence[PoolHost], pool_cloud: str = "ssh", pool_name: str = ""
) -> PoolFit:
    """The first of the task's candidates the pool's hosts could ever run, or why none can."""
    problems: list[str] = []
    nodes = max(1, int(task.num_nodes or 1))
    for res in task.resources.candidates():
        if res.cloud not in (None, pool_cloud):
            problems.append(f"pinned to {res.cloud}")
            continue
        if res.use_spot:
            problems.append("asks for spot instances")
            continue
        cpus, memory = _num(res.cpus), _num(res.memory)
        accs = dict(res.accelerators or {})
        acc, gpus = (None, 0)
        if accs:
            name, count = next(iter(accs.items()))
            acc, gpus = normalize_gpu_name(name), math.ceil(float(count))
        fitting = [h for h in inventory if _fits(h, acc, gpus, cpus, memory)]
        if len(fitting) >= nodes:
            demand = f"{acc}:{gpus}" if acc else HOST_DEMAND
            return PoolFit(True, None, res, demand, acc, gpus, cpus, memory, nodes)
        if acc and not any((h.gpus or {}).get(acc) for h in inventory):
            have = sorted({g for h in inventory for g in (h.gpus or {})})
            problems.append(f"no accelerator {acc} (the pool has {', '.join(have) or 'no GPUs'})")
        elif not any((h.cpus or 0) >= cpus and (h.memory_gb or 0) >= memory for h in inventory):
            biggest = max(inventory, key=lambda h: ((h.memory_gb or 0), (h.cpus or 0)))
            problems.append(
                f"needs {cpus:g} CPUs / {memory:g} GB but the largest host has "
                f"{biggest.cpus or 0:g} CPUs / {biggest.memory_gb or 0:g} GB"
            )
        else:
            problems.append(f"only {len(fitting)} host(s) fit, {nodes} node(s) needed")
    where = f"ssh pool {pool_name!r}" if pool_name else "the pool"
    return PoolFit(False, f"{where}: " + "; ".join(dict.fromkeys(problems)))


def _gpu_indices(h: PoolHost, accelerator: str) -> list[int]:
    i = 0
    for name, count in (h.gpus or {}).items():
        if name == accelerator:
            return list(range(i, i + count))
        i += count
    return []


def unit_free_in(
    inventory: Sequence[PoolHost],
    taken: Mapping[tuple[str, str], str],
    remaining_s: Mapping[str, float],
    fit: PoolFit,
    unknown_remaining_s: float = pool_queue.DEFAULT_RUNTIME_S,
) -> list[float]:
    """Seconds until each unit (a whole host, or a group of `fit.gpus` GPUs) that can run the task is free."""

    def left(cluster: str) -> float:
        return float(remaining_s.get(cluster, unknown_remaining_s))

    out: list[float] = []
    for h in inventory:
        if not _fits(h, fit.accelerator, fit.gpus, fit.cpus, fit.memory_gb):
            continue
        on_host = {slot: c for (key, slot), c in taken.items() if key == h.key}
        if fit.accelerator is None:
            out.append(max((left(c) for c in on_host.values()), default=0.0))
            continue
        k = (h.gpus or {}).get(fit.accelerator, 0) // max(1, fit.gpus)
        if "host" in on_host:
            out.extend([left(on_host["host"])] * k)
            continue
        busy = sorted(
            (left(on_host[f"gpu:{i}"]) for i in _gpu_indices(h, fit.accelerator) if f"gpu:{i}" in on_host),
            reverse=True,
        )
        groups = [max(busy[j : j + fit.gpus]) for j in range(0, len(busy), max(1, fit.gpus))]
        groups = groups[:k]
        out.extend(groups + [0.0] * (k - len(groups)))
    return out


def assess_pool(
    store: StateStore,
    pool_name: str,
    inventory: Sequence[PoolHost],
    fit: PoolFit,
    cluster_name: str,
    runtime: pool_queue.RuntimeEstimate,
    *,
    hourly_price: float = 0.0,
    egress_usd: float = 0.0,
    stale_after: float = pool_queue.DEFAULT_STALE_AFTER_S,
    now: datetime | None = None,
) -> OnPremView:
    """The pool's offer to a (queued or not) task: free now? expected wait? from store + inventory."""
    if not fit.can_run:
        return OnPremView(False, fit.reason, runtime_s=runtime.seconds, runtime_source=runtime.source)
    now = now or datetime.now(UTC)
    taken = pools.taken_slots(store, pool_name)
    entries = pool_queue.queue(store, pool_name, stale_after, demand=fit.demand)
    # a cluster between allocation and its hold record still has its queue entry: it runs that long
    remaining = {e.cluster_name: e.runtime_s for e in entries}
    remaining.update({h.cluster_name: h.remaining_s(now) for h in pool_queue.holds(store, pool_name)})
    units = unit_free_in(inventory, taken, remaining, fit)
    mine = next((e for e in entries if e.cluster_name == cluster_name), None)
    holding = set(taken.values())  # got its slots, leaves the queue in a moment: not ahead of us
    ahead = [e for e in entries if (mine is None or e.ticket < mine.ticket) and e.cluster_name not in holding]
    free = sum(1 for u in units if u <= 0)
    need_now = sum(e.units for e in ahead) + fit.units
    wait = pool_queue.expected_wait(units, [(e.units, e.runtime_s) for e in ahead], fit.units)
    return OnPremView(
        True, None, free_now=free >= need_now, expected_wait_s=wait, runtime_s=runtime.seconds,
        runtime_source=runtime.source if not runtime.samples else f"learned from {runtime.samples} run(s)",
        position=len(ahead), ahead=len(ahead), free_units=free, units_total=len(units),
        hourly_price=hourly_price, egress_usd=egress_usd, accelerator=fit.demand if fit.accelerator else None,
    )  # fmt: skip


# ---- the cloud's side --------------------------------------------------------------------------
def bucket_sources(task: Task) -> list[tuple[str, float]]:
    """``(uri, GB)`` of the task's bucket inputs and bucket file_mount sources."""
    from airflow_provider_sky.spec.file_mounts import is_bucket_uri

    out = [(uri, float(gb or 0.0)) for uri, gb in (task.inputs or {}).items() if is_bucket_uri(uri)]
    out += [
        (m.source, 0.0) for m in (task.file_mounts or {}).values() if m.source and is_bucket_uri(m.source)
    ]
    return out


def _egress(
    src_cloud: str | None, src_region: str | None, dst_cloud: str, dst_region: str | None, gb: float
) -> float:
    if gb <= 0 or src_cloud is None or src_cloud in ("local", "ssh"):
        return 0.0
    try:
        from airflow_provider_sky.catalog.egress import egress_cost

        return float(egress_cost(src_cloud, src_region, dst_cloud, dst_region, gb))
    except (KeyError, ValueError):
        return 0.0


def staging_egress(task: Task, dst_cloud: str, dst_region: str | None) -> float:
    """Egress dollars to run `task` at (dst_cloud, dst_region): bucket inputs read there, local outputs sent back."""
    from airflow_provider_sky.optimizer.data_flow import store_cloud
    from airflow_provider_sky.spec.file_mounts import is_bucket_uri

    total = sum(
        _egress(store_cloud(uri), None, dst_cloud, dst_region, gb) for uri, gb in bucket_sources(task)
    )
    if dst_cloud not in ("local", "ssh"):  # outputs that land on-prem leave the cloud
        for uri, gb in (task.outputs or {}).items():
            if not is_bucket_uri(uri):
                total += _egress(dst_cloud, dst_region, "onprem", None, float(gb or 0.0))
    return total


def measured_provision_s(
    store: StateStore | None, cloud_names: Iterable[str], dag_id: str | None = None
) -> float:
    """Median provisioning time (cluster row created -> first launched attempt) on those clouds."""
    names = tuple(cloud_names)
    default = max(
        (DEFAULT_PROVISION_S.get(c, DEFAULT_CLOUD_PROVISION_S) for c in names),
        default=DEFAULT_CLOUD_PROVISION_S,
    )
    if store is None:
        return default
    clusters = [c for c in store.list_clusters(owner_dag_id=dag_id) if c.cloud in names]
    samples: list[float] = []
    for c in sorted(clusters, key=lambda c: c.created_at, reverse=True)[:20]:
        launched = [a for a in store.list_attempts(c.name) if a.outcome == "launched" and a.cloud in names]
        if launched:
            seconds = (launched[-1].at - c.created_at).total_seconds()
            if 0 <= seconds < 6 * 3600:
                samples.append(seconds)
    return float(statistics.median(samples)) if samples else default


def _optimizer_placement(task: Task, cloud_names: Sequence[str], catalog_dir: str | None) -> Any:
    """Best placement of the task on `cloud_names` from the optimizer, or raise."""
    from airflow_provider_sky import optimizer
    from airflow_provider_sky.catalog import load_catalog

    catalog = load_catalog(catalog_dir)
    rank = getattr(optimizer, "rank_placements", None)
    if rank is not None:
        ranked = list(rank(task, catalog, clouds=tuple(cloud_names), blocked=[]))
        if not ranked:
            raise ValueError("the optimizer found no placement")
        return ranked[0]
    import inspect

    others = [(c, None, None, None) for c in ("aws", "gcp", "azure", "local") if c not in cloud_names]
    kwargs: dict[str, Any] = {"blocked": others}
    if "clouds" in inspect.signature(optimizer.optimize).parameters:
        kwargs["clouds"] = tuple(cloud_names)
    plan = optimizer.optimize([replace(task, name=task.name or "task", depends_on=[])], catalog, **kwargs)
    return next(iter(plan.tasks.values()))


def quote_cloud(
    task: Task,
    cloud_names: Sequence[str],
    runtime_s: float,
    *,
    store: StateStore | None = None,
    dag_id: str | None = None,
    catalog_dir: str | None = None,
    hourly_price: float | None = None,
    provision_s: float | None = None,
) -> CloudQuote:
    """Price, provisioning time and egress of running `task` on `cloud_names` now.

    `hourly_price` overrides the optimizer's (e.g. for the local backend standing in for a cloud).
    """
    names = tuple(cloud_names)
    nodes = max(1, int(task.num_nodes or 1))
    if not names:
        return CloudQuote(False, "no cloud besides the pool is enabled", num_nodes=nodes, runtime_s=runtime_s)
    pinned = task.resources.cloud
    if pinned and pinned not in names:
        return CloudQuote(False, f"the task is pinned to {pinned}", num_nodes=nodes, runtime_s=runtime_s)
    prov = provision_s if provision_s is not None else measured_provision_s(store, names, dag_id)
    placement: dict[str, Any] | None = None
    accelerator: str | None = None
    source = "given"
    price = hourly_price
    if price is None:
        if all(n == "local" for n in names):
            price, source = 0.0, "local backend (free)"
        else:
            try:
                p = _optimizer_placement(task, names, catalog_dir)
            except Exception as exc:  # no catalog entry, infeasible, optimizer changed: quote without a plan
                price, source = 0.0, f"no price ({type(exc).__name__}: {exc})"
            else:
                price, source = float(p.hourly_price), "optimizer"
                placement = {"cloud": p.cloud, "region": p.region, "zone": p.zone,
                             "instance_type": p.instance_type, "use_spot": bool(p.use_spot),
                             "hourly_price": float(p.hourly_price)}  # fmt: skip
                accs = getattr(p, "accelerators", None)
                if accs:
                    accelerator = ",".join(f"{k}:{v:g}" for k, v in dict(accs).items())
    dst_cloud = (placement or {}).get("cloud") or pinned or names[0]
    egress = staging_egress(task, dst_cloud, (placement or {}).get("region"))
    return CloudQuote(
        True, None, float(price), nodes, runtime_s, float(prov), egress, placement, accelerator, source
    )


# ---- heterogeneity -----------------------------------------------------------------------------
def heterogeneity(
    task: Task, fit: PoolFit, cloud: CloudQuote | None, bucket_access: bool | None
) -> list[str]:
    """Differences between running on-prem and in the cloud that the user should know before launch."""
    notes: list[str] = []
    buckets = [uri for uri, _ in bucket_sources(task)]
    if fit.can_run and buckets and bucket_access is False:
        shown = ", ".join(buckets[:3]) + (" ..." if len(buckets) > 3 else "")
        notes.append(
            f"on-prem hosts have no bucket access (pool bucket_access: false) but the task reads {shown}; "
            "on-prem it needs the data staged by an upstream task"
        )
    if fit.can_run and cloud is not None and cloud.accelerator and fit.accelerator:
        wanted = cloud.accelerator.split(":")[0]
        if normalize_gpu_name(wanted) != fit.accelerator:
            notes.append(
                f"accelerator differs: on-prem runs on {fit.demand}, the cloud plan on {cloud.accelerator}"
            )
    cands = task.resources.candidates()
    if fit.can_run and fit.resources is not None and len(cands) > 1 and fit.resources != cands[0]:
        first = dict(cands[0].accelerators or {}) or "the first choice"
        notes.append(
            f"on-prem uses a fallback candidate ({fit.demand}), not the task's first choice ({first})"
        )
    return notes
