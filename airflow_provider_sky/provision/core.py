"""The broker core the Airflow faces call: launch (or reuse) a cluster, run a job, follow it, tear down.

State lives in the state store (clusters, jobs, launch attempts); the cloud modules do the launching
and the execution layer runs detached jobs on the nodes. Nothing here imports Airflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import ConfigError, ProvisionError
from airflow_provider_sky.clouds.local import LocalCloud
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.logs import LogTailer
from airflow_provider_sky.provision.autostop import AutostopConfig, ensure_autostop, refresh_cluster_status
from airflow_provider_sky.provision.failover import launch_with_failover
from airflow_provider_sky.provision.file_mounts import (
    RclonePush,
    StoreOptions,
    clear_destinations,
    copy_on_nodes,
    fetch_bucket_mounts,
    mount_bucket_mounts,
    resolve_named_buckets,
    unmount_nodes,
)
from airflow_provider_sky.provision.keepwarm import decide_keep_warm, measured_startup_seconds
from airflow_provider_sky.provision.outputs import Destination, collect_outputs, output_env
from airflow_provider_sky.provision.placement import Placement, ordered_source, placements_from_resources
from airflow_provider_sky.provision.planning import placement_ranker, plan_for_run, replan_remaining
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterRecord, ClusterStatus, JobRecord, JobStatus, StateStore

log = logging.getLogger(__name__)

WORKDIR_ON_NODE = "sky_workdir"


@dataclass(frozen=True)
class Owner:
    """Who asked for a cluster or job: the Airflow task instance (empty for CLI use)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int = -1


@dataclass(frozen=True)
class LaunchResult:
    """The cluster a task runs on, and whether this call created it (False: reused)."""

    cluster: ClusterRecord
    created: bool


@dataclass(frozen=True)
class JobOutcome:
    """A finished (or last known) job with its placement and cost, shaped for XCom."""

    cluster: ClusterRecord
    job: JobRecord

    @property
    def status(self) -> str:
        return self.job.status.value

    @property
    def exit_code(self) -> int | None:
        return self.job.exit_code

    @property
    def runtime_hours(self) -> float:
        if not self.job.started_at:
            return 0.0
        end = self.job.ended_at or datetime.now(UTC)
        return max(0.0, (end - self.job.started_at).total_seconds() / 3600)

    @property
    def estimated_cost(self) -> float:
        price = self.cluster.hourly_price or 0.0
        return price * self.cluster.num_nodes * self.runtime_hours

    def to_xcom(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "cluster": c.name,
            "cloud": c.cloud,
            "region": c.region,
            "zone": c.zone,
            "instance_type": c.instance_type,
            "accelerators": c.accelerators,
            "use_spot": c.use_spot,
            "num_nodes": c.num_nodes,
            "hourly_price": c.hourly_price or 0.0,
            "job_id": self.job.job_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "log_path": self.job.log_path,
            "runtime_hours": round(self.runtime_hours, 6),
            "estimated_cost": round(self.estimated_cost, 6),
        }


def _accelerators_text(task: Task) -> str | None:
    accs = task.resources.accelerators
    if not accs:
        return None
    return ",".join(f"{name}:{count}" for name, count in accs.items())


def _accelerator_count(text: str | None) -> float | None:
    """Accelerators per node from a cluster record's "A100:2" (None when unknown or none)."""
    if not text:
        return None
    total = 0.0
    for part in text.split(","):
        _, _, count = part.partition(":")
        try:
            total += float(count or 1)
        except ValueError:
            return None
    return total


class SkyCore:
    """Launch, run, follow and tear down sky tasks; the one entry point for every face."""

    def __init__(self, store: StateStore, clouds: Mapping[str, Cloud], settings: SkySettings | None = None) -> None:
        self.store = store
        self.clouds = dict(clouds)
        self.settings = settings or SkySettings()
        self._staging_reports: dict[tuple[str, int], dict[str, Any]] = {}  # (cluster, job id) -> report

    @classmethod
    def from_settings(cls, settings: SkySettings) -> SkyCore:
        """Build the store and the enabled clouds from settings."""
        store = StateStore(settings.state_db_url)
        clouds: dict[str, Cloud] = {}
        for name in settings.enabled_clouds:
            if name == "local":
                clouds[name] = LocalCloud(settings.local_dir)
            elif name == "ssh":
                if not settings.ssh_pool:
                    raise ConfigError(
                        "cloud 'ssh' is enabled but no node pool is configured",
                        cloud="ssh",
                        fix="set ssh_pool_conn_id in the sky connection to a connection of type sky_ssh_pool",
                    )
                from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud

                clouds[name] = SshPoolCloud.from_connection(settings.ssh_pool, store=store)
            elif name == "aws":
                from airflow_provider_sky.clouds.aws import AwsCloud

                aws = dict(settings.aws or {})
                owners = [o.strip() for o in settings.extra.get("aws_image_owners", "").split(",") if o.strip()]
                clouds[name] = AwsCloud(
                    session_kwargs={k: v for k, v in aws.items() if k != "endpoint_url" and v},
                    endpoint_url=aws.get("endpoint_url") or settings.extra.get("aws_endpoint_url"),
                    regions=[r for r in settings.region_preferences if "-" in r] or None,
                    image_id=settings.extra.get("aws_image_id"),
                    **({"image_owners": owners} if owners else {}),
                    **AwsCloud.settings_options(settings.extra),  # aws_ssh_user, aws_ssh_proxy_command ...
                )
            elif name == "gcp":
                from airflow_provider_sky.clouds.gcp import GcpCloud

                fields = dict(settings.gcp or {})
                if settings.extra.get("gcp_project"):
                    fields.setdefault("project", settings.extra["gcp_project"])
                clouds[name] = GcpCloud.from_connection(fields)
                clouds[name].configure_from_extras(settings.extra)  # gcp_ssh_user, gcp_ssh_jump_host ...
            elif name == "azure":
                from airflow_provider_sky.clouds.azure import AzureCloud

                fields = dict(settings.azure or {})
                if settings.extra.get("azure_subscription_id"):
                    fields.setdefault("subscriptionId", settings.extra["azure_subscription_id"])
                clouds[name] = AzureCloud.from_connection(fields)
                clouds[name].configure_from_extras(settings.extra)  # azure_ssh_user, azure_ssh_proxy_command ...
        return cls(store, clouds, settings)

    # ---- placement ----------------------------------------------------------------------
    def _cloud(self, name: str | None) -> Cloud:
        if name is None:
            raise ConfigError("no cloud is enabled", fix="enable at least 'local' in the sky connection")
        cloud = self.clouds.get(name)
        if cloud is None:
            raise ConfigError(
                f"cloud {name!r} is not enabled (enabled: {', '.join(sorted(self.clouds)) or 'none'})",
                cloud=name,
                fix=f"add {name!r} to enabled_clouds in the sky connection, or change resources.infra",
            )
        return cloud

    def choose_cloud(self, task: Task) -> Cloud:
        """The cloud a task goes to: its pin, else the first enabled cloud."""
        pinned = task.resources.cloud
        return self._cloud(pinned or next(iter(self.clouds), None))

    # ---- clusters -----------------------------------------------------------------------
    def _handle(self, record: ClusterRecord) -> ClusterHandle:
        return ClusterHandle.from_json(record.handle)

    def _check_fits(self, record: ClusterRecord, task: Task) -> None:
        pinned = task.resources.cloud
        problems = []
        if pinned and record.cloud != pinned:
            problems.append(f"it runs on {record.cloud}, the task asks for {pinned}")
        if task.resources.region and record.region != task.resources.region:
            problems.append(f"it is in {record.region}, the task asks for {task.resources.region}")
        if record.num_nodes < task.num_nodes:
            problems.append(f"it has {record.num_nodes} nodes, the task needs {task.num_nodes}")
        wanted = _accelerators_text(task)
        if wanted and record.accelerators != wanted:
            problems.append(f"it has accelerators {record.accelerators or 'none'}, the task needs {wanted}")
        if problems:
            raise ConfigError(
                f"cluster {record.name} does not fit the task: " + "; ".join(problems),
                cloud=record.cloud,
                fix="use another cluster_name, or tear this cluster down (sky-airflow down NAME)",
            )

    def require_up(self, cluster_name: str) -> ClusterRecord:
        """The cluster's record, or a clear error when it is not UP (for exec-only tasks)."""
        record = self.store.get_cluster(cluster_name)
        if record is None or record.status is not ClusterStatus.UP:
            state = record.status.value if record else "unknown to the state store"
            raise ConfigError(
                f"cluster {cluster_name} is not UP ({state})",
                cloud=record.cloud if record else None,
                fix="launch it first (SkyLaunchClusterOperator or SkyTaskOperator with this cluster_name)",
            )
        return record

    def launch(
        self, task: Task, cluster_name: str, owner: Owner | None = None, preferred: Any = None
    ) -> LaunchResult:
        """Reuse a live cluster of that name (if it fits) or launch it with failover.

        `preferred` is the plan's placement for this task (tried first). Every attempt is recorded.
        """
        owner = owner or Owner()
        record = self.store.get_cluster(cluster_name)
        if record is not None and record.status in (ClusterStatus.UP, ClusterStatus.STOPPED):
            refresh_cluster_status(self, None, cluster_name)  # autostop may have stopped/removed it
            record = self.store.get_cluster(cluster_name) or record
        if record is not None and record.status in (ClusterStatus.UP, ClusterStatus.STOPPED):
            cloud = self._cloud(record.cloud)
            handle = cloud.find(cluster_name)
            if handle is not None:
                self._check_fits(record, task)
                if record.status is ClusterStatus.STOPPED:
                    handle = cloud.start(handle)
                    self.store.transition_cluster(cluster_name, ClusterStatus.UP, handle=handle.to_json())
                self.store.touch_cluster(cluster_name)
                if task.resources.autostop is not None:  # a reusing task may only tighten/set autostop
                    self._autostop(cloud, handle, task)
                    self.store.update_cluster(
                        cluster_name,
                        autostop_idle_minutes=task.resources.autostop.idle_minutes,
                        autostop_down=bool(task.resources.autostop.down),
                    )
                return LaunchResult(self.store.get_cluster(cluster_name) or record, created=False)
            self.store.transition_cluster(
                cluster_name, ClusterStatus.TERMINATED, status_reason="vanished from the cloud"
            )
        res = task.resources
        autostop = res.autostop
        first_cloud = self.choose_cloud(task)  # clear error when the pinned cloud is not enabled
        fields = {
            "cloud": first_cloud.name,
            "region": res.region,
            "zone": res.zone,
            "instance_type": res.instance_type,
            "num_nodes": task.num_nodes,
            "accelerators": _accelerators_text(task),
            "use_spot": bool(res.use_spot),
            "status": ClusterStatus.INIT,
            "status_reason": None,
            "owner_dag_id": owner.dag_id,
            "owner_run_id": owner.run_id,
            "owner_task_id": owner.task_id,
            "autostop_idle_minutes": autostop.idle_minutes if autostop else None,
            "autostop_down": bool(autostop.down) if autostop else False,
        }
        self.store.upsert_cluster(cluster_name, **fields)
        try:
            handle, attempts = launch_with_failover(
                cluster_name,
                task.num_nodes,
                self.placement_source(task, preferred),
                self.clouds,
                self.store,
                resources=res,
                labels=self._labels(cluster_name, owner),
                max_attempts=self.settings.max_launch_attempts,
                total_timeout=self.settings.launch_timeout_seconds,
                retry_until_up=self.settings.retry_until_up,
                on_attempt=lambda a: log.info("launch attempt %s", a.describe()),
            )
        except ProvisionError as exc:
            self.store.transition_cluster(cluster_name, ClusterStatus.TERMINATED, status_reason=str(exc))
            raise
        cloud = self.clouds[handle.cloud]
        self.store.transition_cluster(
            cluster_name,
            ClusterStatus.UP,
            from_=ClusterStatus.INIT,
            handle=handle.to_json(),
            cloud=handle.cloud,
            region=handle.region,
            zone=handle.zone,
            instance_type=handle.instance_type,
            use_spot=bool(handle.extra.get("use_spot", res.use_spot)),
            hourly_price=self._hourly_price(cloud, handle, attempts),
        )
        self.store.touch_cluster(cluster_name)
        self._autostop(cloud, handle, task)
        record = self.store.get_cluster(cluster_name)
        assert record is not None
        return LaunchResult(record, created=True)

    @staticmethod
    def _autostop(cloud: Cloud, handle: ClusterHandle, task: Task) -> None:
        """Install (or refresh) the node-side autostop agent for the task's `autostop` setting."""
        config = AutostopConfig.from_spec(task.resources.autostop)
        if config is None:
            return
        try:
            ensure_autostop(cloud, handle, config)
        except Exception:  # the orphan reaper is the backstop
            log.warning("autostop could not be installed on %s", handle.cluster_name, exc_info=True)

    @staticmethod
    def _labels(cluster_name: str, owner: Owner) -> dict[str, str]:
        labels = {"sky-cluster": cluster_name, "sky-managed-by": "airflow-provider-sky"}
        for key, value in (("dag-id", owner.dag_id), ("run-id", owner.run_id), ("task-id", owner.task_id)):
            if value:
                labels[f"sky-{key}"] = value
        return labels

    @staticmethod
    def _hourly_price(cloud: Cloud, handle: ClusterHandle, attempts: list[Any]) -> float:
        """Price per node-hour: what the cloud reports, else what the placement that worked said."""
        price = handle.extra.get("hourly_price")
        if price is None and attempts:
            price = attempts[-1].hourly_price
        return float(price) if price is not None else 0.0

    def placement_source(self, task: Task, preferred: Any = None) -> Any:
        """Best-first placements for a task: the plan's choice first, then the task's own candidates.

        Returns a callable ``next_placement(blocklist)`` for `launch_with_failover`.
        """
        default = self.choose_cloud(task).name
        first = ordered_source([Placement.coerce(preferred)] if preferred is not None else [])
        fallback = ordered_source(placements_from_resources(task.resources.candidates(), default))
        pinned = task.resources.cloud
        clouds = [pinned] if pinned else list(self.clouds)
        ranker = placement_ranker(task, clouds, self.settings.catalog_dir)

        def next_placement(blocklist: Any) -> Placement | None:
            found = first(blocklist)
            if found is None and ranker is not None:
                blocked = [(e.cloud, e.region, e.zone, e.instance_type) for e in blocklist if e.use_spot is None]
                ranked = ordered_source(p for p in ranker(blocked) if p.cloud in self.clouds)
                found = ranked(blocklist)
            return found or fallback(blocklist)

        return next_placement

    def replan_after_failover(
        self, dag_id: str, run_id: str, tasks: Mapping[str, Task], edges: list[tuple[str, str]]
    ) -> dict[str, Any] | None:
        """Re-plan the run's remaining tasks with every task that has a cluster fixed where it runs."""
        fixed = {
            c.owner_task_id: (c.cloud, c.region, c.instance_type, bool(c.use_spot))
            for c in self.store.list_clusters(owner_dag_id=dag_id, owner_run_id=run_id)
            if c.owner_task_id in tasks and c.status is ClusterStatus.UP and c.cloud
        }
        return replan_remaining(
            self.store, dag_id, run_id, tasks, edges, fixed,
            clouds=self.clouds, minimize=self.settings.minimize, catalog_dir=self.settings.catalog_dir,
        )  # fmt: skip

    def plan_for_run(
        self,
        dag_id: str,
        run_id: str,
        tasks: Mapping[str, Task],
        edges: list[tuple[str, str]],
        sharing: Any = None,
    ) -> dict[str, Any] | None:
        """The DAG run's stored plan (computed once over all its sky tasks), or None.

        `sharing` (`cluster_groups.SharingRules`) also decides which consecutive tasks share a cluster.
        """
        return plan_for_run(
            self.store,
            dag_id,
            run_id,
            tasks,
            edges,
            clouds=self.clouds,
            minimize=self.settings.minimize,
            catalog_dir=self.settings.catalog_dir,
            sharing=sharing,
        )

    def down(self, cluster_name: str) -> bool:
        """Terminate a cluster (all its jobs are cancelled); True when something was torn down."""
        record = self.store.get_cluster(cluster_name)
        cloud_name = record.cloud if record else None
        clouds = [self._cloud(cloud_name)] if cloud_name in self.clouds else list(self.clouds.values())
        if record is not None and record.status is ClusterStatus.UP:
            for job in self.store.list_jobs(cluster_name=cluster_name):
                if not job.is_terminal:  # finished but not yet polled: record the real outcome
                    with contextlib.suppress(Exception):
                        self.job_status(cluster_name, job.job_id)
        found = False
        for cloud in clouds:
            handle = cloud.find(cluster_name)
            if handle is not None:
                runners = cloud.runners(handle)
                if cloud.name in ("local", "ssh"):  # their node dirs get deleted: unmount buckets first
                    unmount_nodes(runners)
                self._archive_logs(cluster_name, runners[0])
                cloud.terminate(handle)
                found = True
        if record is not None:
            for job in self.store.list_jobs(cluster_name=cluster_name):
                if not job.is_terminal:
                    self.store.set_job_status(cluster_name, job.job_id, JobStatus.CANCELLED)
            self.store.transition_cluster(cluster_name, ClusterStatus.TERMINATED, status_reason="terminated")
        return found or record is not None

    def log_archive_dir(self) -> Path:
        """Where job logs are kept after their cluster is gone (next to the local backend's files)."""
        if self.settings.log_dir:
            return Path(self.settings.log_dir)
        home = os.environ.get("AIRFLOW_HOME")
        return (Path(home) / "sky" / "logs") if home else Path.home() / ".sky-airflow" / "logs"

    def _archive_logs(self, cluster_name: str, head: Any) -> None:
        """Copy every job log of a cluster off its head node, so `logs` works after teardown."""
        for job in self.store.list_jobs(cluster_name=cluster_name):
            if not job.log_path or not job.log_path.startswith(getattr(head, "home", "\0")):
                continue
            target = self.log_archive_dir() / cluster_name / f"{job.job_id}.log"
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    offset = 0
                    while chunk := head.read_bytes(job.log_path, offset, 1 << 20):
                        out.write(chunk)
                        offset += len(chunk)
            except (OSError, FileNotFoundError):
                log.warning("could not archive the log of job %s on %s", job.job_id, cluster_name)
                continue
            self.store.update_job(cluster_name, job.job_id, log_path=str(target))

    def keep_warm_or_down(self, cluster_name: str, next_run_at: datetime | None, dag_id: str | None) -> Any:
        """After a run's last use of a cluster: keep it (with a safety autostop) when the next
        scheduled run comes sooner than the break-even time of a cold start, else tear it down."""
        record = self.store.get_cluster(cluster_name)
        if record is None or record.status is not ClusterStatus.UP:
            return None
        now = datetime.now(UTC)
        estimate = measured_startup_seconds(self.store, dag_id or cluster_name)
        price = record.hourly_price or 0.0
        decision = decide_keep_warm(
            next_run_at,
            now,
            price * record.num_nodes,
            estimate.provision_seconds,
            estimate.setup_seconds,
            hourly_price=price * record.num_nodes,
        )
        if decision.keep:
            cloud = self._cloud(record.cloud)
            minutes = float(decision.numbers.get("autostop_idle_minutes") or 60)
            ensure_autostop(cloud, self._handle(record), AutostopConfig(idle_minutes=minutes, down=True))
            self.store.update_cluster(cluster_name, autostop_idle_minutes=round(minutes), autostop_down=True)
        else:
            self.down(cluster_name)
        return decision

    # ---- jobs ---------------------------------------------------------------------------
    def _runners(self, cluster_name: str) -> list[Any]:
        record = self.store.get_cluster(cluster_name)
        if record is None or record.handle is None:
            raise ConfigError(f"cluster {cluster_name} is not known to the state store", fix="launch it first")
        return self._cloud(record.cloud).runners(self._handle(record))

    def _sync(
        self, task: Task, cluster: ClusterRecord, runners: list[Any], store_options: StoreOptions | None = None
    ) -> None:
        """Copy workdir and local file mounts onto every node; mount buckets (MOUNT modes, where the
        node has rclone + FUSE) or copy them (COPY: fetched by each node with rclone where
        `copy_placement` says so, else, and as the fallback, fetched once here and pushed)."""

        def node_path(dst: str) -> str:
            if cluster.cloud == "local":  # never write outside the node's directory
                return dst.lstrip("~").lstrip("/")
            return dst

        mounts = resolve_named_buckets(task.file_mounts, cluster.cloud, store_options)
        # before any byte moves: nothing may be written through a mount left on a reused cluster
        extra = {"workdir": WORKDIR_ON_NODE} if task.workdir else None
        clear_destinations(mounts, runners, node_path, store_options, extra=extra)
        push = RclonePush()  # a node lacking rclone gets the worker's, once in this submit
        mounted = mount_bucket_mounts(mounts, runners, node_path, store_options, push=push)
        copied = copy_on_nodes(
            mounts, runners, node_path, store_options, cloud=cluster.cloud, skip=mounted, push=push
        )
        done = [m | set(c) for m, c in zip(mounted, copied, strict=True)]
        cache = self.log_archive_dir().parent / "mounts" / cluster.name
        everywhere = set.intersection(*done) if done else set()  # on every node already: no fetch here
        fetched = fetch_bucket_mounts(mounts, cache, store_options, skip=everywhere)
        for rank, runner in enumerate(runners):
            if task.workdir:
                runner.put(task.workdir, WORKDIR_ON_NODE)
            for dst, mount in mounts.items():
                source = fetched.get(dst) or mount.source
                if source is None or dst in done[rank]:
                    continue
                runner.put(source, node_path(dst))

    def submit(
        self,
        task: Task,
        cluster_name: str,
        owner: Owner | None = None,
        store_options: StoreOptions | None = None,
        *,
        task_id: str | None = None,
        on_job: Callable[[int, str], None] | None = None,
        max_staging_cost_usd: float | None = None,
    ) -> int:
        """Sync files and start the task's job (setup first, once per cluster) detached; return its id.

        `task_id` is the job's SKYPILOT_TASK_ID (default: a new one); `on_job(job_id, task_id)` is
        called once the id exists and before the job starts (job recovery records it there).
        Bucket inputs and mounts in another region than an aws/gcp/azure cluster are staged near it
        first (`provision.input_staging`; ceiling: `max_staging_cost_usd`, else the task's config).
        """
        owner = owner or Owner()
        task.validate_for_run()
        cluster = self.store.get_cluster(cluster_name)
        if cluster is None or cluster.status is not ClusterStatus.UP:
            raise ConfigError(f"cluster {cluster_name} is not UP", fix="launch it first")
        runners = self._runners(cluster_name)
        from airflow_provider_sky.provision import input_staging

        staged = None
        if input_staging.wanted(task, cluster.cloud):
            from airflow_provider_sky.state.staging_cache import StateStagingCache

            staged = input_staging.stage_task_inputs(
                task, cluster.cloud, cluster.region, store_options, cache=StateStagingCache(self.store),
                max_cost_usd=input_staging.cost_limit(task, max_staging_cost_usd),
            )  # fmt: skip
            task = staged.task
        self._sync(task, cluster, runners, store_options)
        job = self.store.next_job(
            cluster_name,
            name=task.name,
            owner_dag_id=owner.dag_id,
            owner_run_id=owner.run_id,
            owner_task_id=owner.task_id,
        )
        if staged is not None:  # kept for `last_staging_report` (the operator's XCom)
            reports = self._staging_reports
            reports[(cluster_name, job.job_id)] = input_staging.report(staged, cluster.cloud, cluster.region)
            while len(reports) > 64:
                reports.pop(next(iter(reports)))
        task_id = task_id or jobs.make_task_id(cluster_name, job.job_id)
        if on_job is not None:
            on_job(job.job_id, task_id)
        env = {k: v for k, v in task.envs.items() if v is not None}
        env.update({k: v for k, v in task.secrets.items() if v is not None})
        if task.outputs:
            env.update(output_env(runners[0]))
        accs = task.resources.accelerators or {}
        gpus = sum(accs.values()) if accs else 0
        gpus = int(gpus) if float(gpus).is_integer() else gpus
        capacity = _accelerator_count(cluster.accelerators)
        try:
            handle = jobs.submit_multinode_job(
                runners,
                job.job_id,
                task.run,
                env,
                WORKDIR_ON_NODE if task.workdir else None,
                setup=task.setup,
                cluster_name=cluster_name,
                num_gpus_per_node=gpus,
                gpu_capacity=capacity,
                task_id=task_id,
            )
        except Exception as exc:
            self.store.set_job_status(cluster_name, job.job_id, JobStatus.FAILED)
            raise ConfigError(f"could not start job {job.job_id} on {cluster_name}: {exc}", cloud=cluster.cloud) from exc
        self.store.update_job(cluster_name, job.job_id, log_path=handle.log_path)
        self.store.touch_cluster(cluster_name)
        return job.job_id

    def last_staging_report(self, cluster_name: str, job_id: int) -> dict[str, Any] | None:
        """What `submit` staged for job `job_id` (`input_staging.report`), when this core submitted it
        and it staged anything; None otherwise (kept in memory: not after a worker restart)."""
        return self._staging_reports.get((cluster_name, job_id))

    def collect_outputs(self, cluster_name: str, task: Task, destination: Destination) -> dict[str, str]:
        """Upload what the job wrote under $SKY_OUTPUT_DIR/<name> for each declared output."""
        if not task.outputs:
            return {}
        return collect_outputs(self._runners(cluster_name)[0], list(task.outputs), destination)

    def job_status(self, cluster_name: str, job_id: int) -> JobStatus | None:
        """Poll the job on the head node and record its status; None when it cannot be found."""
        record = self.store.get_job(cluster_name, job_id)
        if record is not None and record.is_terminal:
            return record.status
        try:
            state = jobs.job_status(self._runners(cluster_name)[0], job_id)
        except (jobs.JobNotFoundError, ConfigError, FileNotFoundError):  # the job or its cluster is gone
            if record is not None:
                self.store.set_job_status(cluster_name, job_id, JobStatus.LOST)
                return JobStatus.LOST
            return None
        except (jobs.JobError, OSError) as exc:  # a poll racing a kill, a flaky connection: ask again later
            log.warning("could not poll job %s on %s: %s", job_id, cluster_name, exc)
            return record.status if record is not None else None
        status = JobStatus(state.status.value)
        if record is not None and record.status is not status:
            self.store.set_job_status(cluster_name, job_id, status, exit_code=state.exit_code)
            if status.is_terminal:
                self._account(cluster_name, job_id)
        return status

    def _account(self, cluster_name: str, job_id: int) -> None:
        cluster = self.store.get_cluster(cluster_name)
        job = self.store.get_job(cluster_name, job_id)
        if cluster is not None and job is not None:
            cost = JobOutcome(cluster, job).estimated_cost
            if cost:
                self.store.add_cost(cluster_name, cost)
            self.store.touch_cluster(cluster_name)

    def read_log(self, cluster_name: str, job_id: int, offset: int, final: bool = False) -> tuple[str, int]:
        """New complete log lines from byte `offset` (all remaining text when `final`)."""
        tailer = LogTailer(self._log_reader(cluster_name, job_id), offset=offset)
        try:
            return tailer.flush() if final else tailer.read_new()
        except FileNotFoundError:
            return "", offset

    def _log_reader(self, cluster_name: str, job_id: int) -> Any:
        """Read bytes of a job's log: from the head node while the cluster lives, else the archive."""
        cluster = self.store.get_cluster(cluster_name)
        if cluster is not None and cluster.status is ClusterStatus.UP:
            with contextlib.suppress(ConfigError):
                return jobs.log_reader(self._runners(cluster_name)[0], job_id)
        archived = self.log_archive_dir() / cluster_name / f"{job_id}.log"

        def read(offset: int, max_bytes: int) -> bytes:
            with archived.open("rb") as f:
                if offset < 0:  # from the end, like the runners' read_bytes
                    f.seek(max(0, archived.stat().st_size + offset))
                else:
                    f.seek(offset)
                return f.read(max_bytes)

        return read

    def log_tail(self, cluster_name: str, job_id: int, lines: int = 40) -> list[str]:
        """The last `lines` lines of a job's log."""
        window = 64 * 1024
        try:
            read = self._log_reader(cluster_name, job_id)
            data = read(-window, window)
        except (ConfigError, FileNotFoundError, jobs.JobNotFoundError, OSError):
            return []
        return data.decode("utf-8", "replace").splitlines()[-lines:]

    def cancel(self, cluster_name: str, job_id: int, grace: float | None = None) -> None:
        """Cancel a job (its whole process tree on every node): SIGTERM, SIGKILL after `grace` s."""
        with contextlib.suppress(ConfigError, FileNotFoundError, jobs.JobNotFoundError):
            runner = self._runners(cluster_name)[0]
            if grace is None:
                jobs.cancel_job(runner, job_id)
            else:
                jobs.cancel_job(runner, job_id, grace=grace)
        self.store.set_job_status(cluster_name, job_id, JobStatus.CANCELLED)

    def outcome(self, cluster_name: str, job_id: int) -> JobOutcome:
        """The job's final record joined with its cluster's placement."""
        self.job_status(cluster_name, job_id)
        cluster = self.store.get_cluster(cluster_name)
        job = self.store.get_job(cluster_name, job_id)
        if cluster is None or job is None:
            raise ConfigError(f"job {job_id} on {cluster_name} is not in the state store")
        return JobOutcome(cluster, job)
