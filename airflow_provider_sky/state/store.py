"""``StateStore``: clusters, jobs, plans and launch attempts behind plain records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, inspect, make_url, select, update
from sqlalchemy.orm import Session

from airflow_provider_sky.state import pool_queue as _pool_queue  # noqa: F401  (registers the spillover tables)
from airflow_provider_sky.state import pools as _pools  # noqa: F401  (registers the pool tables)
from airflow_provider_sky.state import recovery as _recovery  # noqa: F401  (registers the recovery table)
from airflow_provider_sky.state import staging_cache as _staging_cache  # noqa: F401  (registers the staging cache table)
from airflow_provider_sky.state.engine import EngineEntry, default_state_url, get_entry
from airflow_provider_sky.state.errors import ClusterExistsError, ClusterNotFoundError, JobNotFoundError
from airflow_provider_sky.state.models import Cluster, Job, LaunchAttempt, Plan, utcnow
from airflow_provider_sky.state.records import AttemptRecord, ClusterRecord, JobRecord, PlanRecord
from airflow_provider_sky.state.sql import StatusArg, bump_counter, check_fields, insert_ignore, statuses
from airflow_provider_sky.state.status import ClusterStatus, JobStatus

_CLUSTER_FIELDS = frozenset(c.key for c in inspect(Cluster).column_attrs) - {"id", "name"}
_JOB_FIELDS = frozenset(c.key for c in inspect(Job).column_attrs) - {"id", "cluster_name", "job_id"}
_MAX_RACE_RETRIES = 5


def _apply_job_status(row: Job, to: JobStatus, now: datetime) -> None:
    row.status = to
    if to is JobStatus.RUNNING and row.started_at is None:
        row.started_at = now
    if to.is_terminal:
        if row.ended_at is None:
            row.ended_at = now
    else:
        row.ended_at = None


class StateStore:
    """Durable state of clusters, jobs, plans and launch attempts.

    Every method runs in its own short transaction and returns frozen records. Writes are
    serialized per row (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
    so compare-and-set methods are safe across threads and processes.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_state_url()

    def __repr__(self) -> str:
        return f"StateStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _entry(self) -> EngineEntry:
        return get_entry(self.url)

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Session]:
        entry = self._entry()
        with entry.guard, Session(entry.write_engine if write else entry.engine) as s, s.begin():
            yield s

    @staticmethod
    def _lock_cluster(s: Session, name: str) -> Cluster | None:
        return s.scalars(select(Cluster).where(Cluster.name == name).with_for_update()).first()

    @staticmethod
    def _lock_job(s: Session, cluster_name: str, job_id: int) -> Job | None:
        stmt = select(Job).where(Job.cluster_name == cluster_name, Job.job_id == job_id)
        return s.scalars(stmt.with_for_update()).first()

    @staticmethod
    def _apply_cluster_fields(row: Cluster, fields: Mapping[str, Any], now: datetime) -> None:
        check_fields(fields, _CLUSTER_FIELDS, "cluster")
        for key, value in fields.items():
            if key == "status":
                value = ClusterStatus(value)
                if value != row.status and "status_changed_at" not in fields:
                    row.status_changed_at = now
            setattr(row, key, value)

    # -- clusters -------------------------------------------------------------------------

    def add_cluster(
        self,
        name: str,
        *,
        cloud: str | None = None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        num_nodes: int = 1,
        accelerators: str | None = None,
        use_spot: bool = False,
        status: ClusterStatus | str = ClusterStatus.INIT,
        status_reason: str | None = None,
        owner_dag_id: str | None = None,
        owner_run_id: str | None = None,
        owner_task_id: str | None = None,
        handle: Any = None,
        autostop_idle_minutes: int | None = None,
        autostop_down: bool = False,
        hourly_price: float | None = None,
    ) -> ClusterRecord:
        """Record a new cluster; a TERMINATED row of that name is replaced.

        Raises ``ClusterExistsError`` if a live cluster (any status but TERMINATED) has the name.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "name": name, "cloud": cloud, "region": region, "zone": zone,
            "instance_type": instance_type, "num_nodes": num_nodes, "accelerators": accelerators,
            "use_spot": use_spot, "status": ClusterStatus(status), "status_reason": status_reason,
            "owner_dag_id": owner_dag_id, "owner_run_id": owner_run_id, "owner_task_id": owner_task_id,
            "handle": handle, "created_at": now, "last_used_at": now, "status_changed_at": now,
            "autostop_idle_minutes": autostop_idle_minutes, "autostop_down": autostop_down,
            "hourly_price": hourly_price, "cost_so_far": 0.0,
        }  # fmt: skip
        with self._tx(write=True) as s:
            for _ in range(_MAX_RACE_RETRIES):
                inserted = insert_ignore(s, Cluster, values, ["name"])
                row = self._lock_cluster(s, name)
                if row is None:  # deleted between our insert attempt and the lock: try again
                    continue
                if not inserted:
                    if row.status.is_live:
                        raise ClusterExistsError(name, row.status.value)
                    for key, value in values.items():
                        setattr(row, key, value)
                    s.flush()
                return ClusterRecord.from_row(row)
        raise RuntimeError(f"add_cluster({name!r}) kept racing with concurrent deletes")  # pragma: no cover

    def upsert_cluster(self, name: str, **fields: Any) -> ClusterRecord:
        """Insert the cluster with ``fields`` or update an existing row's ``fields`` (any status)."""
        check_fields(fields, _CLUSTER_FIELDS, "cluster")
        now = utcnow()
        values: dict[str, Any] = {
            "name": name, "status": ClusterStatus.INIT, "created_at": now, "last_used_at": now,
            "status_changed_at": now, "num_nodes": 1, "use_spot": False, "autostop_down": False,
            "cost_so_far": 0.0,
        }  # fmt: skip
        values.update(fields)
        values["status"] = ClusterStatus(values["status"])
        with self._tx(write=True) as s:
            for _ in range(_MAX_RACE_RETRIES):
                inserted = insert_ignore(s, Cluster, values, ["name"])
                row = self._lock_cluster(s, name)
                if row is None:
                    continue
                if not inserted:
                    self._apply_cluster_fields(row, fields, now)
                    s.flush()
                return ClusterRecord.from_row(row)
        raise RuntimeError(
            f"upsert_cluster({name!r}) kept racing with concurrent deletes"
        )  # pragma: no cover

    def get_cluster(self, name: str) -> ClusterRecord | None:
        """The cluster named ``name`` (in any status), or None."""
        with self._tx(write=False) as s:
            row = s.scalars(select(Cluster).where(Cluster.name == name)).first()
            return None if row is None else ClusterRecord.from_row(row)

    def list_clusters(
        self,
        status: StatusArg[ClusterStatus] = None,
        owner_dag_id: str | None = None,
        owner_run_id: str | None = None,
    ) -> list[ClusterRecord]:
        """Clusters, optionally filtered by status (one or several) and owner, ordered by name."""
        stmt: Select[tuple[Cluster]] = select(Cluster).order_by(Cluster.name)
        wanted = statuses(status, ClusterStatus)
        if wanted is not None:
            stmt = stmt.where(Cluster.status.in_(wanted))
        if owner_dag_id is not None:
            stmt = stmt.where(Cluster.owner_dag_id == owner_dag_id)
        if owner_run_id is not None:
            stmt = stmt.where(Cluster.owner_run_id == owner_run_id)
        with self._tx(write=False) as s:
            return [ClusterRecord.from_row(r) for r in s.scalars(stmt)]

    def update_cluster(self, name: str, **fields: Any) -> ClusterRecord:
        """Set ``fields`` unconditionally; raises ``ClusterNotFoundError``."""
        check_fields(fields, _CLUSTER_FIELDS, "cluster")
        with self._tx(write=True) as s:
            row = self._lock_cluster(s, name)
            if row is None:
                raise ClusterNotFoundError(name)
            self._apply_cluster_fields(row, fields, utcnow())
            s.flush()
            return ClusterRecord.from_row(row)

    def transition_cluster(
        self,
        name: str,
        to: ClusterStatus | str,
        from_: StatusArg[ClusterStatus] = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set: move to ``to`` only if the status is in ``from_`` (None: any).

        ``fields`` (e.g. ``handle``, ``status_reason``) are set in the same transaction.
        Returns whether the change applied; False also when the cluster does not exist.
        """
        check_fields(fields, _CLUSTER_FIELDS - {"status"}, "cluster")
        allowed = statuses(from_, ClusterStatus)
        with self._tx(write=True) as s:
            row = self._lock_cluster(s, name)
            if row is None or (allowed is not None and row.status not in allowed):
                return False
            self._apply_cluster_fields(row, {**fields, "status": ClusterStatus(to)}, utcnow())
            return True

    def touch_cluster(self, name: str, at: datetime | None = None) -> bool:
        """Set ``last_used_at`` (now by default); False if the cluster does not exist."""
        with self._tx(write=True) as s:
            stmt = update(Cluster).where(Cluster.name == name).values(last_used_at=at or utcnow())
            return s.execute(stmt).rowcount == 1

    def add_cost(self, name: str, dollars: float) -> float:
        """Atomically add ``dollars`` to ``cost_so_far``; returns the new total."""
        with self._tx(write=True) as s:
            row = self._lock_cluster(s, name)
            if row is None:
                raise ClusterNotFoundError(name)
            row.cost_so_far = (row.cost_so_far or 0.0) + float(dollars)
            s.flush()
            return row.cost_so_far

    def remove_cluster(self, name: str) -> bool:
        """Delete the cluster row (jobs, counters and attempts stay); False if it did not exist."""
        with self._tx(write=True) as s:
            return s.execute(delete(Cluster).where(Cluster.name == name)).rowcount == 1

    # -- jobs -----------------------------------------------------------------------------

    def next_job(
        self,
        cluster_name: str,
        *,
        name: str | None = None,
        status: JobStatus | str = JobStatus.PENDING,
        log_path: str | None = None,
        owner_dag_id: str | None = None,
        owner_run_id: str | None = None,
        owner_task_id: str | None = None,
    ) -> JobRecord:
        """Allocate the next job id of ``cluster_name`` (1, 2, ...; never reused) and record the job."""
        now = utcnow()
        with self._tx(write=True) as s:
            seed = select(func.coalesce(func.max(Job.job_id), 0)).where(Job.cluster_name == cluster_name)
            job_id = bump_counter(s, "job", cluster_name, seed.scalar_subquery())
            row = Job(
                cluster_name=cluster_name, job_id=job_id, name=name, log_path=log_path, submitted_at=now,
                owner_dag_id=owner_dag_id, owner_run_id=owner_run_id, owner_task_id=owner_task_id,
            )  # fmt: skip
            _apply_job_status(row, JobStatus(status), now)
            s.add(row)
            s.flush()
            return JobRecord.from_row(row)

    def get_job(self, cluster_name: str, job_id: int) -> JobRecord | None:
        """The job, or None."""
        with self._tx(write=False) as s:
            stmt = select(Job).where(Job.cluster_name == cluster_name, Job.job_id == job_id)
            row = s.scalars(stmt).first()
            return None if row is None else JobRecord.from_row(row)

    def list_jobs(
        self, cluster_name: str | None = None, status: StatusArg[JobStatus] = None
    ) -> list[JobRecord]:
        """Jobs, optionally of one cluster and/or in some statuses, ordered by cluster and id."""
        stmt: Select[tuple[Job]] = select(Job).order_by(Job.cluster_name, Job.job_id)
        if cluster_name is not None:
            stmt = stmt.where(Job.cluster_name == cluster_name)
        wanted = statuses(status, JobStatus)
        if wanted is not None:
            stmt = stmt.where(Job.status.in_(wanted))
        with self._tx(write=False) as s:
            return [JobRecord.from_row(r) for r in s.scalars(stmt)]

    def set_job_status(
        self,
        cluster_name: str,
        job_id: int,
        to: JobStatus | str,
        from_: StatusArg[JobStatus] = None,
        exit_code: int | None = None,
    ) -> bool:
        """Compare-and-set a job's status; ``from_=None`` means "any non-terminal status".

        Entering RUNNING sets ``started_at`` (once); a terminal status sets ``ended_at``.
        Returns whether the change applied; False also when the job does not exist.
        """
        allowed = statuses(from_, JobStatus)
        allowed = JobStatus.non_terminal() if allowed is None else allowed
        with self._tx(write=True) as s:
            row = self._lock_job(s, cluster_name, job_id)
            if row is None or row.status not in allowed:
                return False
            _apply_job_status(row, JobStatus(to), utcnow())
            if exit_code is not None:
                row.exit_code = exit_code
            return True

    def update_job(self, cluster_name: str, job_id: int, **fields: Any) -> JobRecord:
        """Set ``fields`` unconditionally (``status`` keeps the timestamps right); raises ``JobNotFoundError``."""
        check_fields(fields, _JOB_FIELDS, "job")
        with self._tx(write=True) as s:
            row = self._lock_job(s, cluster_name, job_id)
            if row is None:
                raise JobNotFoundError(cluster_name, job_id)
            for key, value in fields.items():
                if key == "status":
                    _apply_job_status(row, JobStatus(value), utcnow())
                else:
                    setattr(row, key, value)
            s.flush()
            return JobRecord.from_row(row)

    # -- plans ----------------------------------------------------------------------------

    def put_plan(self, dag_id: str, run_id: str, plan: Any) -> Any:
        """Store the run's plan unless one exists; returns the stored plan (the first writer's)."""
        return self.put_plan_record(dag_id, run_id, plan).plan

    def put_plan_record(self, dag_id: str, run_id: str, plan: Any) -> PlanRecord:
        """Like ``put_plan`` but returns the whole record (plan and version)."""
        if plan is None:
            raise ValueError("plan must not be None")
        now = utcnow()
        values = {"dag_id": dag_id, "run_id": run_id, "plan": plan, "version": 1,
                  "created_at": now, "updated_at": now}  # fmt: skip
        with self._tx(write=True) as s:
            insert_ignore(s, Plan, values, ["dag_id", "run_id"])
            row = s.get_one(Plan, (dag_id, run_id))
            return PlanRecord.from_row(row)

    def get_plan(self, dag_id: str, run_id: str) -> Any | None:
        """The stored plan of the run, or None."""
        record = self.get_plan_record(dag_id, run_id)
        return None if record is None else record.plan

    def get_plan_record(self, dag_id: str, run_id: str) -> PlanRecord | None:
        """The stored plan record of the run, or None."""
        with self._tx(write=False) as s:
            row = s.get(Plan, (dag_id, run_id))
            return None if row is None else PlanRecord.from_row(row)

    def replace_plan(self, dag_id: str, run_id: str, plan: Any, expected_version: int) -> PlanRecord:
        """Re-plan by compare-and-set on ``version``; returns the stored record.

        Applies (version + 1) only if the stored version is ``expected_version``; otherwise someone
        re-planned first and their record is returned, so concurrent re-planners converge.
        With no stored plan this behaves like ``put_plan_record``.
        """
        if plan is None:
            raise ValueError("plan must not be None")
        with self._tx(write=True) as s:
            stmt = select(Plan).where(Plan.dag_id == dag_id, Plan.run_id == run_id).with_for_update()
            row = s.scalars(stmt).first()
            if row is not None and row.version == expected_version:
                row.plan = plan
                row.version += 1
                row.updated_at = utcnow()
                s.flush()
            if row is not None:
                return PlanRecord.from_row(row)
        return self.put_plan_record(dag_id, run_id, plan)

    def delete_plan(self, dag_id: str, run_id: str) -> bool:
        """Forget the run's plan; False if there was none."""
        with self._tx(write=True) as s:
            stmt = delete(Plan).where(Plan.dag_id == dag_id, Plan.run_id == run_id)
            return s.execute(stmt).rowcount == 1

    # -- launch attempts ------------------------------------------------------------------

    def record_attempt(
        self,
        cluster_name: str,
        *,
        outcome: str,
        cloud: str | None = None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        error_class: str | type[BaseException] | BaseException | None = None,
        message: str | None = None,
        at: datetime | None = None,
    ) -> AttemptRecord:
        """Append a launch attempt (numbered 1, 2, ... per cluster name, never reused).

        ``error_class`` may be a name, an exception class or an exception (whose text becomes
        the default ``message``).
        """
        if isinstance(error_class, BaseException):
            message = str(error_class) if message is None else message
            error_class = type(error_class)
        if isinstance(error_class, type):
            error_class = error_class.__name__
        with self._tx(write=True) as s:
            seed = select(func.coalesce(func.max(LaunchAttempt.attempt), 0)).where(
                LaunchAttempt.cluster_name == cluster_name
            )
            number = bump_counter(s, "attempt", cluster_name, seed.scalar_subquery())
            row = LaunchAttempt(
                cluster_name=cluster_name, attempt=number, cloud=cloud, region=region, zone=zone,
                instance_type=instance_type, outcome=outcome, error_class=error_class,
                message=message, at=at or utcnow(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return AttemptRecord.from_row(row)

    def list_attempts(self, cluster_name: str | None = None) -> list[AttemptRecord]:
        """Launch attempts (of one cluster name), oldest first."""
        stmt = select(LaunchAttempt).order_by(LaunchAttempt.cluster_name, LaunchAttempt.attempt)
        if cluster_name is not None:
            stmt = stmt.where(LaunchAttempt.cluster_name == cluster_name)
        with self._tx(write=False) as s:
            return [AttemptRecord.from_row(r) for r in s.scalars(stmt)]
