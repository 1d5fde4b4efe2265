"""Schedule-aware keep-warm: keep a cluster for the DAG's next run only when that is cheaper.

Break-even rule. Let ``gap`` be the time until the next scheduled run (hours), ``idle`` the hourly
cost of keeping the cluster up and idle (hourly price x nodes; less if idle costs less), ``price``
the hourly price of the cluster while it starts, ``t_start`` the cold-start time (provision + setup,
hours, measured from past runs), ``launch`` a fixed cost per launch and ``value`` what an hour of
the user's waiting is worth. Then

    idle_cost       = idle x gap
    cold_start_cost = t_start x (price + value) + launch
    break_even      = cold_start_cost / idle            (hours of idling a cold start pays for)

and the cluster is kept when ``idle_cost < cold_start_cost``, i.e. ``gap < break_even``. No next
run (manual / ``@once`` DAG) → tear down. A next run already due → keep. A keep comes with an
autostop suggestion (the gap plus slack), so a cluster kept for a run that never comes still stops.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from airflow_provider_sky.state import StateStore

DEFAULT_PROVISION_SECONDS = 300.0
DEFAULT_SETUP_SECONDS = 120.0
AUTOSTOP_SLACK = 0.25  # keep-warm autostop: gap x (1 + slack), at least +10 minutes
_NO_SCHEDULE = frozenset({"", "@once", "none", "None"})


@dataclass(frozen=True)
class KeepWarmDecision:
    """Keep the cluster or not, why (one line for the task log), and the numbers behind it."""

    keep: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def decide_keep_warm(
    next_run_at: datetime | None,
    now: datetime,
    idle_hourly_cost: float,
    provision_seconds: float,
    setup_seconds: float,
    launch_cost: float = 0.0,
    *,
    hourly_price: float | None = None,
    user_hourly_value: float = 0.0,
    max_keep: timedelta | None = None,
) -> KeepWarmDecision:
    """Apply the break-even rule of the module docstring.

    `hourly_price` prices the cold start (default: `idle_hourly_cost`); `max_keep` caps how long a
    cluster may idle whatever the numbers say.
    """
    price = idle_hourly_cost if hourly_price is None else hourly_price
    start_h = max(0.0, provision_seconds + setup_seconds) / 3600.0
    cold = start_h * (price + user_hourly_value) + launch_cost
    numbers: dict[str, Any] = {
        "now": _aware(now).isoformat(),
        "next_run_at": _aware(next_run_at).isoformat() if next_run_at else None,
        "idle_hourly_cost": idle_hourly_cost,
        "hourly_price": price,
        "provision_seconds": provision_seconds,
        "setup_seconds": setup_seconds,
        "launch_cost": launch_cost,
        "user_hourly_value": user_hourly_value,
        "cold_start_cost": round(cold, 6),
        "break_even_seconds": None if idle_hourly_cost <= 0 else round(cold / idle_hourly_cost * 3600, 1),
    }
    if next_run_at is None:
        return KeepWarmDecision(False, "no next scheduled run: tear down", numbers)
    gap_h = (_aware(next_run_at) - _aware(now)).total_seconds() / 3600.0
    idle_cost = max(0.0, gap_h) * idle_hourly_cost
    numbers.update(gap_seconds=round(gap_h * 3600, 1), idle_cost=round(idle_cost, 6))
    numbers["autostop_idle_minutes"] = round(max(gap_h * 60 * (1 + AUTOSTOP_SLACK), gap_h * 60 + 10), 1)
    when = f"next run at {_aware(next_run_at).isoformat()} (in {gap_h * 60:.1f} min)"
    if max_keep is not None and gap_h * 3600 > max_keep.total_seconds():
        return KeepWarmDecision(False, f"{when} is beyond max_keep {max_keep}: tear down", numbers)
    if gap_h <= 0:
        return KeepWarmDecision(True, f"{when} is already due: keep warm", numbers)
    cmp = "<" if idle_cost < cold else ">="
    detail = (
        f"idle until then ${idle_cost:.4f} {cmp} cold start ${cold:.4f} "
        f"(provision {provision_seconds:.0f}s + setup {setup_seconds:.0f}s at ${price:.4f}/h"
        f"{f' + user time ${user_hourly_value:.2f}/h' if user_hourly_value else ''}"
        f"{f' + launch ${launch_cost:.4f}' if launch_cost else ''})"
    )
    keep = idle_cost < cold
    return KeepWarmDecision(keep, f"{when}; {detail}: {'keep warm' if keep else 'tear down'}", numbers)


# ---- schedules ----
def _tz(value: Any) -> tzinfo:
    if value is None:
        return UTC
    if isinstance(value, tzinfo):
        return value
    name = getattr(value, "name", None) or str(value)
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


def next_run_after(schedule: Any, after: datetime, tz: Any = None) -> datetime | None:
    """The first scheduled run strictly after `after`, or None for no schedule.

    `schedule`: a cron string or preset (``"0 * * * *"``, ``"@daily"``), a `timedelta` (every so
    often from `after`; ``_delta`` of a delta timetable too), ``"@continuous"`` (now), a croniter object, anything with ``get_next`` or ``next_run_after(after)``,
    a callable ``after -> datetime``, or a timetable-like object exposing its cron expression as
    ``expression`` / ``_expression`` (and ``timezone`` / ``_timezone``). Cron is evaluated in `tz`
    (or the schedule's own zone; default UTC), so DST shifts are honoured. Naive `after` is UTC.
    """
    after = _aware(after)
    if schedule is None or (isinstance(schedule, str) and schedule.strip() in _NO_SCHEDULE):
        return None
    if isinstance(schedule, str) and schedule.strip() == "@continuous":
        return after
    delta = getattr(schedule, "_delta", schedule)
    if isinstance(delta, timedelta):
        return after + delta
    if isinstance(schedule, croniter):
        schedule.set_current(after, force=True)
        return _aware(schedule.get_next(datetime))
    own = getattr(schedule, "next_run_after", None)
    if callable(own):
        got = own(after)
        return _aware(got) if got else None
    expr = schedule if isinstance(schedule, str) else None
    if expr is None:
        expr = getattr(schedule, "expression", None) or getattr(schedule, "_expression", None)
        tz = tz or getattr(schedule, "timezone", None) or getattr(schedule, "_timezone", None)
    if expr is None:
        if callable(schedule):
            got = schedule(after)
            return _aware(got) if got else None
        raise TypeError(f"cannot find the next run of schedule {schedule!r}")
    zone = _tz(tz)
    it = croniter(expr, after.astimezone(zone))
    return _aware(it.get_next(datetime)).astimezone(UTC)


# ---- measured startup ----
@dataclass(frozen=True)
class StartupEstimate:
    """Median measured cold-start times (defaults where history has nothing) and the sample counts."""

    provision_seconds: float
    setup_seconds: float
    provision_samples: int
    setup_samples: int


def _median(values: list[float], default: float) -> float:
    return float(statistics.median(values)) if values else default


def measured_startup_seconds(
    store: StateStore,
    cluster_or_dag: str,
    default_provision: float = DEFAULT_PROVISION_SECONDS,
    default_setup: float = DEFAULT_SETUP_SECONDS,
    *,
    keep: Callable[[float], bool] = lambda s: 0 <= s < 6 * 3600,
) -> StartupEstimate:
    """Cold-start times from history: one cluster by name, else every cluster owned by that DAG.

    Provision: from the cluster row's ``created_at`` (written before the cloud is asked) to its
    first ``launched`` attempt (failover included). Setup: the first job of each cluster (which
    runs the setup) from ``submitted_at`` to ``started_at``. Samples outside `keep` are dropped.
    """
    record = store.get_cluster(cluster_or_dag)
    clusters = [record] if record is not None else store.list_clusters(owner_dag_id=cluster_or_dag)
    provision: list[float] = []
    setup: list[float] = []
    for cluster in clusters:
        launched = [a for a in store.list_attempts(cluster.name) if a.outcome == "launched"]
        if launched:
            seconds = (launched[0].at - cluster.created_at).total_seconds()
            if keep(seconds):
                provision.append(seconds)
        first = next(iter(store.list_jobs(cluster_name=cluster.name)), None)
        if first is not None and first.started_at is not None:
            seconds = (first.started_at - first.submitted_at).total_seconds()
            if keep(seconds):
                setup.append(seconds)
    return StartupEstimate(
        _median(provision, default_provision), _median(setup, default_setup), len(provision), len(setup)
    )
