"""SkyTaskOperator: run a SkyPilot-style task on the broker from an Airflow task."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.links.sky import SkyClusterLink
from airflow_provider_sky.provision import recovery
from airflow_provider_sky.provision.console import console_url
from airflow_provider_sky.provision.core import JobOutcome, Owner
from airflow_provider_sky.provision.naming import cluster_name_for, validate_cluster_name
from airflow_provider_sky.spec import SpecError, Task, load_tasks
from airflow_provider_sky.state import JobStatus
from airflow_provider_sky.triggers.sky import SkyJobTrigger, SkyLaunchTrigger

STATE_KEY = "sky_job"
#: The staging report of the job in STATE_KEY, for the XCom of a try that did not submit it
#: (a retry reattached to it, a deferral resumed in another worker process).
STAGING_KEY = "sky_staging"
#: Events of the launch trigger (the job trigger's are ``kind: job``).
LAUNCH_EVENTS = ("launched", "launch_error", "cancelled")


def _mask(value: str) -> None:
    """Register a secret with Airflow's secrets masker (no-op where it is unavailable)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older SDKs
        return
    mask_secret(value)


class _OffsetSaver:
    """Keeps ``task_state_store``'s log offset of the followed job near what the task log holds:
    saved every `seconds` or `nbytes`, not per line (each save is an API call)."""

    def __init__(
        self, state: Any, cluster: str, job_id: int, offset: int, seconds: float, nbytes: int
    ) -> None:
        self.state, self.cluster, self.seconds, self.nbytes = state, cluster, seconds, nbytes
        self.job_id, self.offset = job_id, offset
        self.saved, self.saved_at = offset, time.monotonic()

    def advance(self, job_id: int, offset: int, force: bool = False) -> None:
        """The task log now holds job `job_id`'s log up to byte `offset`."""
        if job_id != self.job_id:
            return
        self.offset = max(self.offset, offset)
        due = self.offset - self.saved >= self.nbytes or time.monotonic() - self.saved_at >= self.seconds
        if self.offset != self.saved and (force or due):
            self._save()

    def switch(self, job_id: int) -> None:
        """A restarted job replaces the followed one: save it at once, from its start."""
        self.job_id, self.offset = job_id, 0
        self._save()

    def flush(self) -> None:
        if self.offset != self.saved:
            self._save()

    def _save(self) -> None:
        if self.state is not None:
            value = {"cluster": self.cluster, "job_id": self.job_id, "log_offset": self.offset}
            self.state.set(STATE_KEY, value)
        self.saved, self.saved_at = self.offset, time.monotonic()


#: Seconds a killed task's job gets between SIGTERM and SIGKILL when its cluster is torn down.
ON_KILL_GRACE = 2.0


class SkyTaskOperator(BaseOperator):
    """Run a task on the cheapest/fastest placement the broker finds, or on the local backend.

    The task comes from ``task`` (a SkyPilot task YAML path, a dict in that schema, or a
    :class:`~airflow_provider_sky.spec.Task`) and/or the inline fields (``run``, ``setup``,
    ``resources``...), which override what ``task`` says. The spec is validated here, at DAG-parse
    time: a bad field fails the DAG import with the field's path and the fix.

    :param inputs: / :param outputs: data the task reads / writes (``{uri_or_name: size_gb}``):
        sizes feed the DAG-wide plan; each output written under ``$SKY_OUTPUT_DIR/<name>`` on the head
        node is uploaded after success (to its bucket URI, or next to the task) and returned in
        the XCom result's ``outputs`` for downstream ``file_mounts``. Bucket inputs (and bucket
        ``file_mounts`` sources) in another region or provider than the aws/gcp/azure cluster are
        first copied into the staging bucket of the cluster's region (verified; skipped when the
        source is unchanged since the last run); mounts then read the near copy and the job gets
        ``$SKY_INPUTS`` (JSON ``{original URI: URI to read}``). See docs/staging.md.
    :param max_staging_cost_usd: refuse to start (before any copy) when staging the inputs would
        cost more than this in estimated egress.
    :param estimated_hours: expected runtime, for the plan's cost estimate (default 1 h).
    :param cluster_name: reuse/name the cluster; default a deterministic name from dag, task and run.
    :param down: tear the cluster down at the end. Default: True for an auto-named cluster,
        False for a named one (so later tasks can reuse it).
    :param share_cluster: let the run's plan put this task on the cluster of the task before it
        (a chain of compatible tasks shares one cluster: the first launches it, the last tears it
        down). False: always a cluster of its own. A named cluster (``cluster_name``), spillover
        and keep-warm tasks never share. A failed member with retries left keeps the cluster for
        its retry; on its final failure it tears it down (also when the failure came before its
        job, through an ``on_failure_callback``). A cluster stranded because a non-sky task
        between members failed is left to the orphan reaper (``sky-airflow gc``).
    :param sky_conn_id: the ``sky`` connection (optional; defaults need none).
    :param poll_interval: seconds between job status checks while streaming logs.
    :param log_tail_lines: how many last log lines the failure message carries.
    :param storage_conn_ids: Airflow connections for bucket `file_mounts`, by scheme
        (``{"s3": "aws_default", "gs": "gcp", "az": "wasb"}``); default: each SDK's credential chain.
    :param spillover: on-prem first, then the cloud: ``"prefer_onprem"`` (wait at most ``max_wait``
        seconds for the SSH pool), ``"deadline"`` (spill when the expected on-prem finish misses
        ``deadline``: a datetime, or a timedelta after the task starts) or ``"cost_of_delay"``
        (``cost_of_delay`` dollars per hour of waiting vs. the cloud's price). Needs "ssh" enabled.
    :param keep_warm: for a named cluster, decide at the end from the DAG's schedule: keep it up
        (with a safety autostop) when the next run starts sooner than a cold start's break-even
        time, else tear it down. The decision and its numbers go to the task log.
    :param deferrable: provision the cluster (with failover) and wait for the job in the triggerer,
        so no worker slot is held while either runs; the worker only plans and submits (secrets,
        workdir and local file mounts stay on the worker). Defaults to Airflow's
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("run", "setup", "envs", "cluster_name", "workdir", "file_mounts")
    template_fields_renderers = {"run": "bash", "setup": "bash", "envs": "json"}
    ui_color = "#d7ecfb"
    operator_extra_links = (SkyClusterLink(),)
    #: Whether a `run` command is mandatory (False for cluster-setup tasks).
    requires_run: bool = True
    #: Whether the task may launch a cluster (False: the cluster must already be UP).
    launches: bool = True
    #: The follow loop saves its log offset in ``task_state_store`` this often (seconds) or after
    #: this many new bytes, whichever comes first (a retry reattaches there: no replayed log).
    log_offset_save_seconds: float = 5.0
    log_offset_save_bytes: int = 256 * 1024

    def __init__(
        self,
        *,
        task: str | os.PathLike[str] | dict[str, Any] | Task | None = None,
        run: str | None = None,
        setup: str | None = None,
        resources: dict[str, Any] | None = None,
        num_nodes: int | None = None,
        envs: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
        workdir: str | None = None,
        file_mounts: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
        estimated_hours: float | None = None,
        cluster_name: str | None = None,
        down: bool | None = None,
        share_cluster: bool = True,
        sky_conn_id: str = SkyHook.default_conn_name,
        poll_interval: float = 1.0,
        log_tail_lines: int = 40,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        keep_warm: bool = False,
        storage_conn_ids: dict[str, str] | None = None,
        spillover: str | None = None,
        max_wait: float | None = None,
        deadline: Any = None,
        cost_of_delay: float | None = None,
        max_staging_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if keep_warm and not cluster_name:
            raise SpecError(
                "keep_warm", keep_warm, "needs a named cluster (auto names change every run)",
                "give cluster_name='...' so the next run can reuse the warm cluster",
            )
        self.keep_warm = keep_warm
        self.storage_conn_ids = dict(storage_conn_ids or {})
        self.spillover, self.max_wait, self.deadline, self.cost_of_delay = spillover, max_wait, deadline, cost_of_delay
        self._spill_policy()  # parse-time check of the spillover parameters
        base = self._load_base_spec(task)
        overrides = {
            "run": run,
            "setup": setup,
            "resources": resources,
            "num_nodes": num_nodes,
            "envs": envs,
            "secrets": secrets,
            "workdir": workdir,
            "file_mounts": file_mounts,
            "inputs": inputs,
            "outputs": outputs,
            "estimated_hours": estimated_hours,
        }
        spec = {**base, **{key: value for key, value in overrides.items() if value is not None}}
        spec.setdefault("name", self.task_id)
        if max_staging_cost_usd is not None:  # read by SkyCore.submit (provision.input_staging)
            if not isinstance(max_staging_cost_usd, int | float) or max_staging_cost_usd < 0:
                raise SpecError("max_staging_cost_usd", max_staging_cost_usd, "must be a number of USD >= 0",
                                "e.g. max_staging_cost_usd=5.0, or leave it unset for no limit")  # fmt: skip
            spec["config"] = {**(spec.get("config") or {}), "max_staging_cost_usd": float(max_staging_cost_usd)}
        if self.requires_run and not spec.get("run"):
            raise SpecError("run", spec.get("run"), "is missing", "give `run=` or a task YAML with a `run` section")
        self._spec = Task.from_dict(spec).to_dict()  # validates now, at DAG-parse time
        if cluster_name is not None and "{{" not in cluster_name:
            problem = validate_cluster_name(cluster_name)
            if problem:
                raise SpecError("cluster_name", cluster_name, problem, "pick a name like 'train-gpu-1'")
        self.run = self._spec.get("run")
        self.setup = self._spec.get("setup")
        self.envs = self._spec.get("envs") or {}
        self.workdir = self._spec.get("workdir")
        self.file_mounts = self._spec.get("file_mounts")
        self.cluster_name = cluster_name
        self.down = down
        self.share_cluster = share_cluster
        if share_cluster and not cluster_name and _down_shared_cluster_on_failure not in self.on_failure_callback:
            # A group member that finally fails tears the shared cluster down (downstream won't run).
            self.on_failure_callback = [*self.on_failure_callback, _down_shared_cluster_on_failure]
        self.sky_conn_id = sky_conn_id
        self.poll_interval = poll_interval
        self.log_tail_lines = log_tail_lines
        self.deferrable = deferrable

    # ---- parse-time helpers -------------------------------------------------------------
    def _load_base_spec(self, task: str | os.PathLike[str] | dict[str, Any] | Task | None) -> dict[str, Any]:
        if task is None:
            return {}
        if isinstance(task, Task):
            return task.to_dict()
        if isinstance(task, dict):
            return Task.from_dict(task).to_dict()
        path = Path(task)
        if not path.is_absolute() and not path.exists() and self.has_dag():
            folder = getattr(self.dag, "folder", None)
            if folder:
                path = Path(folder) / path
        if not path.exists():
            raise SpecError("task", str(task), "file not found", "give an absolute path or one relative to the DAG file")
        tasks = load_tasks(path)
        if len(tasks) != 1:
            raise SpecError(
                "task",
                str(task),
                f"holds a chain of {len(tasks)} tasks",
                "use one SkyTaskOperator per task (or a single-document YAML)",
            )
        return tasks[0].to_dict()

    # ---- run time -----------------------------------------------------------------------
    @cached_property
    def hook(self) -> SkyHook:
        return SkyHook(sky_conn_id=self.sky_conn_id)

    def _rendered_task(self) -> Task:
        spec = dict(self._spec)
        spec.update(
            {
                "run": self.run,
                "setup": self.setup,
                "envs": self.envs or None,
                "workdir": self.workdir,
                "file_mounts": self.file_mounts or None,
            }
        )
        return Task.from_dict({key: value for key, value in spec.items() if value is not None})

    def _owner(self, context: Any) -> Owner:
        ti = context["ti"]
        return Owner(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)

    def _cluster_name(self, owner: Owner) -> str:
        if self.cluster_name:
            problem = validate_cluster_name(self.cluster_name)
            if problem:
                raise AirflowException(f"cluster_name: {self.cluster_name!r} {problem}")
            return self.cluster_name
        group = self._shared_cluster(owner)
        if group is not None:
            return str(group["cluster_group"])
        return cluster_name_for(owner.dag_id, owner.task_id, owner.run_id, owner.map_index)

    def _tear_down(self) -> bool:
        """Whether this task tears its cluster down at its end: a shared cluster only in the group's
        last task; an auto-named one always; a named one only with ``down=True``."""
        if self.down is not None:
            return self.down
        group = getattr(self, "_group", None)
        if group is not None:
            return bool(group.get("group_last"))
        return not self.cluster_name

    def _shared_cluster(self, owner: Owner, refresh: bool = False) -> dict[str, Any] | None:
        """This task's entry in the run plan's cluster groups (None: a cluster of its own).

        Computes (or reads) the run's plan; `refresh` re-reads the stored plan, which a re-plan
        after failover may have changed (a broken group makes this task its group's last)."""
        if not refresh and hasattr(self, "_group"):
            return self._group
        self._group: dict[str, Any] | None = None
        if self.cluster_name or not self.share_cluster or not self.launches or self.spillover or self.keep_warm:
            return None
        if (owner.map_index is not None and owner.map_index >= 0) or not self.has_dag():
            return None
        core = self.hook.core
        if refresh:
            plan = core.store.get_plan(owner.dag_id, owner.run_id)
        else:
            tasks, edges = sky_tasks_of(self.dag)
            plan = core.plan_for_run(owner.dag_id, owner.run_id, tasks, edges, sharing=sharing_rules_of(self.dag))
        entry = ((plan or {}).get("tasks") or {}).get(self.task_id) if isinstance(plan, dict) else None
        self._group = dict(entry) if entry and entry.get("cluster_group") else None
        return self._group

    @staticmethod
    def _final_try(context: Any) -> bool:
        """Whether this try is the task's last (no retry follows a failure); unknown: True."""
        ti = context.get("ti") if context else None
        should_retry = getattr(getattr(ti, "_ti_context_from_server", None), "should_retry", None)
        if isinstance(should_retry, bool):
            return not should_retry
        try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
        if isinstance(try_number, int) and isinstance(max_tries, int):
            return try_number > max_tries
        return True

    def _down_group_after_failure(self, context: Any) -> bool:
        """On the final failure of a group member: tear the shared cluster down (its downstream
        tasks will not run, so the group's last task never will). True when something was."""
        group = self._shared_cluster(self._owner(context), refresh=True)
        if group is None:
            return False
        core = self.hook.core
        name = str(group["cluster_group"])
        record = core.store.get_cluster(name)
        if record is None or record.status.value in ("TERMINATED", "ERROR"):
            return False
        self.log.info("Task %s failed for good: tearing down shared cluster %s (downstream won't run)", self.task_id, name)
        return bool(core.down(name))

    def _log_sharing(self, core: Any, group: dict[str, Any], plan: dict[str, Any]) -> None:
        name = group["cluster_group"]
        members = (plan.get("cluster_groups") or {}).get(name) or []
        if group.get("group_first"):
            self.log.info(
                "Cluster %s is shared by %s (this task launches it; %s tears it down)",
                name, ", ".join(members), members[-1] if members else "the last one",
            )  # fmt: skip
            return
        record = core.store.get_cluster(name)
        if record is not None and record.status.value == "UP":
            self.log.info(
                "Sharing cluster %s with upstream %s, saves ~%.0fs cold start, $%.4f",
                name, group.get("shares_with"), group.get("share_saves_seconds") or 0.0,
                group.get("share_saves_usd") or 0.0,
            )  # fmt: skip
        else:
            self.log.info("Shared cluster %s of upstream %s is not up: launching it", name, group.get("shares_with"))

    def _prepare(self) -> Task:
        """The rendered task, with its secrets registered for masking/redaction."""
        task = self._rendered_task()
        self._secret_values = sorted({str(v) for v in task.secrets.values() if v}, key=len, reverse=True)
        for value in self._secret_values:
            _mask(value)
        return task

    def execute(self, context: Any) -> dict[str, Any]:
        task = self._prepare()
        owner = self._owner(context)
        name = self._cluster_name(owner)
        core = self.hook.core
        state = context.get("task_state_store")
        prior = state.get(STATE_KEY) if state is not None else None
        self._live = {"cluster": name, "job_id": None}
        recovery_policy = recovery.RecoveryPolicy.from_task(task)  # None: not a managed job

        job_id = None
        offset = 0
        if prior and prior.get("cluster") == name and prior.get("job_id") is not None:
            status = core.job_status(name, int(prior["job_id"]))
            # A managed job LOST while no worker watched it (preempted): the follow loop recovers it.
            lost_managed = recovery_policy is not None and status is JobStatus.LOST
            if status is not None and (not status.is_terminal or lost_managed):
                job_id, offset = int(prior["job_id"]), int(prior.get("log_offset", 0))
                self.log.info(
                    "Reattaching to job %s on cluster %s (earlier try, %s) at log offset %d",
                    job_id, name, status.value, offset,
                )  # fmt: skip
            elif status is not None and status.value == "SUCCEEDED":
                job_id, offset = int(prior["job_id"]), int(prior.get("log_offset", 0))
                self.log.info("Job %s on %s already succeeded on an earlier try; not rerun", job_id, name)
                self._follow(core, name, job_id, offset)  # what the earlier try had not logged yet
                return self._finish(core, name, job_id, task, started=time.time(), context=context)
        started = time.time()
        if job_id is None and not self.launches:
            core.require_up(name)
        if job_id is None and self.launches and self.deferrable:
            self._defer_launch(core, task, name, owner, context, state, started)
        if job_id is None and self.launches:
            placement = self._planned_placement(core, context, owner)
            from airflow_provider_sky.provision import input_staging

            # Inputs go to the planned region while the cluster launches (settled before the submit).
            prestaging = input_staging.prestage(task, placement, self._store_options, state=core.store)
            policy = self._spill_policy()
            if policy is not None and "ssh" in core.clouds:
                from airflow_provider_sky.provision.spill_launch import launch_with_spillover

                launched, decision = launch_with_spillover(
                    core, task, name, owner, policy, preferred=placement,
                    on_decision=lambda d: self.log.info("%s", d.log_line()),
                )  # fmt: skip
                self._spill_decision = decision.to_dict()
            else:
                launched = core.launch(task, name, owner, preferred=placement)
            self._replan_if_moved(core, context, owner, placement, launched)
            self.log.info(
                "Cluster %s on %s/%s (%s x%d)%s",
                name,
                launched.cluster.cloud,
                launched.cluster.region,
                launched.cluster.instance_type,
                launched.cluster.num_nodes,
                " [reused]" if not launched.created else "",
            )
            try:
                self._prestaged = prestaging.settle(launched.cluster) if prestaging is not None else None
            except input_staging.StagingCostError:  # refused before any job: the cluster goes too
                if launched.created and self._tear_down():
                    core.down(name)
                raise
            if state is not None:
                state.set(STATE_KEY, {"cluster": name, "job_id": None})
            if not (task.run or task.setup):
                return self._cluster_result(launched.cluster, launched.created)
        if job_id is None:
            job_id = self._submit(core, task, name, owner, state, recovery_policy)
        return self._wait(core, task, name, owner, job_id, offset, state, recovery_policy, started, context)

    def _defer_launch(
        self, core: Any, task: Task, name: str, owner: Owner, context: Any, state: Any, started: float
    ) -> None:
        """Deferrable: plan here, record the task's identity, and provision in the triggerer."""
        from airflow_provider_sky.provision import deferred

        placement = self._planned_placement(core, context, owner)
        if state is not None:  # before the wait: a retry launches by the same name, so it adopts
            state.set(STATE_KEY, {"cluster": name, "job_id": None, "phase": "launching"})
        policy = self._spill_policy()
        self.log.info("Deferring the launch of cluster %s to the triggerer", name)
        self.defer(
            trigger=SkyLaunchTrigger(
                cluster_name=name,
                task_spec=deferred.launch_spec(task),
                owner=deferred.owner_dict(owner),
                placement=dict(placement) if placement else None,
                spill_policy=policy.to_dict() if policy is not None else None,
                sky_conn_id=self.sky_conn_id,
                down_on_kill=self._tear_down(),
            ),
            method_name="execute_complete",
            kwargs={"started": started, "placement": dict(placement) if placement else None},
        )

    def _submit(
        self, core: Any, task: Task, name: str, owner: Owner, state: Any, recovery_policy: Any
    ) -> int:
        """Start the job (or adopt the one a dead try started) and record its id before any wait."""
        job_id = self._orphaned_job(core, name, owner)
        if job_id is not None:
            self.log.info("Adopting job %s on %s, submitted by an earlier try that died", job_id, name)
        elif recovery_policy is not None:  # the SKYPILOT_TASK_ID is stored before the job starts
            job_id = recovery.submit_managed(core, task, name, owner, store_options=self._store_options)
        else:
            job_id = core.submit(task, name, owner, store_options=self._store_options)
        if state is not None:
            state.set(STATE_KEY, {"cluster": name, "job_id": job_id, "log_offset": 0})
            report, prestaged = core.last_staging_report(name, job_id), getattr(self, "_prestaged", None)
            if report is not None or prestaged is not None:
                saved = {"cluster": name, "job_id": job_id, "report": report, "prestaged": prestaged}
                state.set(STAGING_KEY, saved)
        return job_id

    def _wait(
        self,
        core: Any,
        task: Task,
        name: str,
        owner: Owner,
        job_id: int,
        offset: int,
        state: Any,
        recovery_policy: Any,
        started: float,
        context: Any,
    ) -> dict[str, Any]:
        """Follow the job to its end here, or (deferrable) in the triggerer; then finish."""
        self._live["job_id"] = job_id
        if self.deferrable:
            self._defer_job(name, job_id, offset, started)
        self.log.info("Job %s submitted on %s; streaming its log", job_id, name)
        if recovery_policy is not None:
            job_id = self._follow_managed(core, task, name, owner, job_id, offset, state, recovery_policy)
        else:
            self._follow(core, name, job_id, offset, state)
        return self._finish(core, name, job_id, task, started=started, context=context)

    def _defer_job(self, name: str, job_id: int, offset: int, started: float | None) -> None:
        self.log.info("Job %s running on %s; deferring to the triggerer", job_id, name)
        self.defer(
            trigger=SkyJobTrigger(
                cluster_name=name,
                job_id=job_id,
                log_offset=offset,
                sky_conn_id=self.sky_conn_id,
                poll_interval=self.poll_interval,
                down_on_kill=self._tear_down(),
                secret_count=len(self._secret_values),
            ),
            method_name="execute_complete",
            kwargs={"started": started},
        )

    def execute_complete(
        self,
        context: Any,
        event: dict[str, Any],
        started: float | None = None,
        placement: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Resume after a trigger: after the launch, submit and defer the wait; after the job, print
        what the trigger could not (the last partial line, or a job with secrets), then finish."""
        if context.get("ti") is not None:  # per-run state the rebuilt operator lost (shared-cluster group)
            self._cluster_name(self._owner(context))
        if event.get("kind") in LAUNCH_EVENTS:
            return self._resume_after_launch(context, event, started, placement)
        task = self._prepare()
        name, job_id = event["cluster"], int(event["job_id"])
        self._live = {"cluster": name, "job_id": job_id}
        core = self.hook.core
        policy = recovery.RecoveryPolicy.from_task(task)
        state = context.get("task_state_store")
        if event.get("status") == "ERROR" and policy is None:
            raise AirflowException(f"Following job {job_id} on {name} failed: {event.get('message')}")
        tail: deque[str] = deque(maxlen=self.log_tail_lines)

        def emit(text: str) -> None:
            for line in text.splitlines():
                line = self._redact(line)
                tail.append(line)
                self.log.info("%s", line)

        if event.get("status") != "ERROR":
            text, end = core.read_log(name, job_id, int(event.get("log_offset", 0)), final=True)
            emit(text)
            if state is not None:  # a retry from here on does not replay what is already logged
                state.set(STATE_KEY, {"cluster": name, "job_id": job_id, "log_offset": end})
        if policy is not None and event.get("status") != "SUCCEEDED":
            owner = self._owner(context)
            new_job_id = recovery.after_job_end(core, task, name, owner, job_id, policy, on_log_text=emit)
            if new_job_id is not None:
                if state is not None:
                    state.set(STATE_KEY, {"cluster": name, "job_id": new_job_id, "log_offset": 0})
                self._live["job_id"] = new_job_id
                self._defer_job(name, new_job_id, 0, started)
            if event.get("status") == "ERROR":
                raise AirflowException(f"Following job {job_id} on {name} failed: {event.get('message')}")
        self._tail = tail if tail else None
        return self._finish(core, name, job_id, task, started=started or time.time(), context=context)

    def _resume_after_launch(
        self, context: Any, event: dict[str, Any], started: float | None, placement: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The triggerer provisioned the cluster: log where, submit the job here, defer its wait."""
        from types import SimpleNamespace

        task = self._prepare()
        owner = self._owner(context)
        name = event["cluster"]
        self._live = {"cluster": name, "job_id": None}
        if event["kind"] == "launch_error":
            raise AirflowException(f"Provisioning {name} in the triggerer failed: {event.get('message')}")
        if event["kind"] == "cancelled":
            raise AirflowException(f"Provisioning cluster {name} was cancelled")
        core = self.hook.core
        state = context.get("task_state_store")
        p = event["placement"]
        self.log.info(
            "Cluster %s on %s/%s (%s x%d)%s, provisioned in the triggerer after %d launch attempt(s)",
            name, p["cloud"], p["region"], p["instance_type"], p["num_nodes"],
            " [reused]" if event.get("reused") else "", event.get("attempts", 0),
        )  # fmt: skip
        if event.get("spillover"):
            self._spill_decision = event["spillover"]
        record = core.store.get_cluster(name)
        if record is not None:
            launched = SimpleNamespace(cluster=record, created=bool(event.get("created")))
            self._replan_if_moved(core, context, owner, placement, launched)
        if not (task.run or task.setup):
            if record is None:
                raise AirflowException(f"cluster {name} is not in the state store after its launch")
            return self._cluster_result(record, bool(event.get("created")))
        policy = recovery.RecoveryPolicy.from_task(task)
        job_id = self._submit(core, task, name, owner, state, policy)
        return self._wait(core, task, name, owner, job_id, 0, state, policy, started or time.time(), context)

    def _redact(self, line: str) -> str:
        """Hide secret values in a job's output line (Airflow's masker does not see job output)."""
        for secret in getattr(self, "_secret_values", ()):
            line = line.replace(secret, "***")
        return line

    def _spill_policy(self) -> Any:
        """The spillover policy from the operator's parameters (None: no spillover)."""
        if not self.spillover:
            return None
        from datetime import UTC, datetime, timedelta

        from airflow_provider_sky.provision.spillover import policy_from_params

        deadline = self.deadline
        if isinstance(deadline, timedelta):
            deadline = datetime.now(UTC) + deadline
        try:
            return policy_from_params(
                self.spillover, max_wait=self.max_wait, deadline_at=deadline, dollars_per_hour=self.cost_of_delay
            )
        except ValueError as exc:
            raise SpecError("spillover", self.spillover, str(exc), "see the spillover parameters") from exc

    def _store_options(self, uri: str) -> dict[str, Any]:
        """Credentials for a bucket mount's store, from the connection named for its scheme."""
        from airflow_provider_sky.hooks.storage import SkyStorageHook
        from airflow_provider_sky.storage.uri import parse_uri

        scheme = parse_uri(uri).scheme
        return SkyStorageHook(self.storage_conn_ids.get(scheme)).store_options(uri)

    def _output_destination(self, context: Any, cluster: Any) -> Any:
        """Where each declared output goes: its own bucket URI, else a staging place next to the task."""
        from airflow_provider_sky.spec.file_mounts import is_bucket_uri

        ti = context.get("ti") if context else None
        run_key = "/".join(
            str(getattr(ti, attr, None) or "none") for attr in ("dag_id", "run_id", "task_id")
        ).replace(":", "_")

        def destination(name: str) -> tuple[str, dict[str, Any]]:
            if is_bucket_uri(name):
                return name, self._store_options(name)
            if cluster.cloud in ("local", "ssh"):
                home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / ".sky-airflow")
                return str(home / "sky" / "staging" / "outputs" / run_key / name), {}
            from airflow_provider_sky.hooks.storage import SkyStorageHook
            from airflow_provider_sky.storage.staging import (
                SCHEME_OF_CLOUD,
                ensure_staging_bucket,
                staging_bucket_name,
                staging_uri,
            )

            scheme = SCHEME_OF_CLOUD[cluster.cloud]
            hook = SkyStorageHook(self.storage_conn_ids.get(scheme))
            account = hook.account_identity(scheme)
            bucket = staging_bucket_name(cluster.cloud, cluster.region, account)
            uri = staging_uri(
                cluster.cloud, bucket, f"outputs/{run_key}/{name}", account=account if scheme == "az" else None
            )
            ensure_staging_bucket(hook.get_store(uri), cluster.region, 7)
            return uri, hook.store_options(uri)

        return destination

    def _planned_placement(self, core: Any, context: Any, owner: Owner) -> dict[str, Any] | None:
        """This task's place in the DAG run's plan (computed once over all sky tasks of the DAG)."""
        if self.cluster_name and core.store.get_cluster(self.cluster_name) is not None:
            return None  # a named, known cluster is reused or relaunched where it was
        dag = context.get("dag")
        if dag is None:
            return None
        tasks, edges = sky_tasks_of(dag)
        plan = core.plan_for_run(owner.dag_id, owner.run_id, tasks, edges, sharing=sharing_rules_of(dag))
        if not plan:
            return None
        placement = plan.get("tasks", {}).get(self.task_id)
        group = self._shared_cluster(owner)
        if group is not None:
            self._log_sharing(core, group, plan)
        if placement and placement.get("cloud") == "local":
            return None  # the local backend takes no placement (it has one machine)
        if placement:
            self.log.info(
                "Plan for this run: %s/%s %s%s at $%.4f/h (run total $%.4f)",
                placement.get("cloud"),
                placement.get("region"),
                placement.get("instance_type"),
                " [spot]" if placement.get("use_spot") else "",
                placement.get("hourly_price") or 0.0,
                plan.get("total_cost") or 0.0,
            )
        return placement

    def _replan_if_moved(self, core: Any, context: Any, owner: Owner, placement: Any, launched: Any) -> None:
        """Failover put this task elsewhere than planned: re-plan the run's tasks still to come."""
        if not placement or not launched.created or context.get("dag") is None:
            return
        cluster = launched.cluster
        if (cluster.cloud, cluster.region) == (placement.get("cloud"), placement.get("region")):
            return
        tasks, edges = sky_tasks_of(context["dag"])
        plan = core.replan_after_failover(owner.dag_id, owner.run_id, tasks, edges)
        if plan:
            self.log.info(
                "Failover moved %s to %s/%s (planned %s/%s); re-planned the remaining tasks: %s",
                self.task_id, cluster.cloud, cluster.region, placement.get("cloud"), placement.get("region"),
                {t: f"{p.get('cloud')}/{p.get('region')}" for t, p in plan.get("tasks", {}).items()},
            )  # fmt: skip

    @staticmethod
    def _orphaned_job(core: Any, name: str, owner: Owner) -> int | None:
        """A live job of this very task instance that an earlier try submitted but never recorded
        (killed between submitting and saving the id): adopt it instead of running it twice."""
        for job in reversed(core.store.list_jobs(cluster_name=name)):
            mine = (job.owner_dag_id, job.owner_run_id, job.owner_task_id) == (owner.dag_id, owner.run_id, owner.task_id)
            if mine and not job.is_terminal:
                status = core.job_status(name, job.job_id)
                if status is not None and not status.is_terminal:
                    return job.job_id
        return None

    @staticmethod
    def _cluster_result(cluster: Any, created: bool) -> dict[str, Any]:
        return {
            "cluster": cluster.name,
            "cloud": cluster.cloud,
            "region": cluster.region,
            "zone": cluster.zone,
            "instance_type": cluster.instance_type,
            "num_nodes": cluster.num_nodes,
            "hourly_price": cluster.hourly_price or 0.0,
            "created": created,
        }

    def _offset_saver(self, state: Any, name: str, job_id: int, offset: int) -> _OffsetSaver:
        seconds, nbytes = self.log_offset_save_seconds, self.log_offset_save_bytes
        return _OffsetSaver(state, name, job_id, offset, seconds, nbytes)

    def _follow(self, core: Any, name: str, job_id: int, offset: int, state: Any = None) -> None:
        tail: deque[str] = deque(maxlen=self.log_tail_lines)
        self._tail = tail
        saver = self._offset_saver(state, name, job_id, offset)

        def emit(text: str) -> None:
            for line in text.splitlines():
                line = self._redact(line)
                tail.append(line)
                self.log.info("%s", line)

        while True:
            status = core.job_status(name, job_id)
            text, offset = core.read_log(name, job_id, offset)
            emit(text)
            saver.advance(job_id, offset)  # after the lines are in the task log, never before
            if status is None or status.is_terminal:
                text, offset = core.read_log(name, job_id, offset, final=True)
                emit(text)
                saver.advance(job_id, offset, force=True)
                return
            time.sleep(self.poll_interval)

    def _follow_managed(
        self,
        core: Any,
        task: Task,
        name: str,
        owner: Owner,
        job_id: int,
        offset: int,
        state: Any,
        policy: recovery.RecoveryPolicy,
    ) -> int:
        """`_follow` for a managed job (``job_recovery``): recover preemptions, restart failures.

        Returns the id of the job that carried the task to its end (a restarted job's, after a recovery).
        The follow loop's log offset is seen by wrapping this core's ``read_log`` for the loop's
        duration (the recovery module only hands out text), and saved once its lines are logged.
        """
        tail: deque[str] = deque(maxlen=self.log_tail_lines)
        self._tail = tail
        saver = self._offset_saver(state, name, job_id, offset)
        last_read: list[int] = [job_id, offset]

        def emit(text: str) -> None:
            for line in text.splitlines():
                line = self._redact(line)
                tail.append(line)
                self.log.info("%s", line)
            if not text.startswith("[sky recovery]"):
                saver.advance(*last_read)

        def on_new_job(new_job_id: int) -> None:
            # Before any wait on the new job, so a retry after a worker kill reattaches to it.
            saver.switch(new_job_id)
            self._live["job_id"] = new_job_id

        read_log, job_status = core.read_log, core.job_status

        def reading(cluster_name: str, jid: int, at: int, final: bool = False) -> tuple[str, int]:
            text, end = read_log(cluster_name, jid, at, final)
            if cluster_name == name:
                last_read[:] = [jid, end]
            return text, end

        def polling(cluster_name: str, jid: int) -> Any:
            saver.advance(saver.job_id, saver.offset)  # a quiet job: save what is logged, on time
            return job_status(cluster_name, jid)

        core.read_log, core.job_status = reading, polling
        try:
            result = recovery.follow_with_recovery(
                core,
                task,
                name,
                owner,
                job_id,
                emit,
                self.poll_interval,
                on_new_job,
                policy=policy,
                log_offset=offset,
            )
        finally:
            del core.read_log, core.job_status
        saver.flush()
        return result.job_id

    def _finish(
        self, core: Any, name: str, job_id: int, task: Task, started: float, context: Any = None
    ) -> dict[str, Any]:
        outcome: JobOutcome = core.outcome(name, job_id)
        cluster = outcome.cluster
        outputs: dict[str, str] = {}
        if outcome.status == "SUCCEEDED" and task.outputs:
            outputs = core.collect_outputs(name, task, self._output_destination(context, cluster))
            self.log.info("Outputs: %s", outputs)
        extra = (cluster.handle or {}).get("extra", {}) if isinstance(cluster.handle, dict) else {}
        self._sky_links = {"cluster": console_url(cluster.cloud, cluster.region, cluster.name, extra)}
        result = outcome.to_xcom()
        if outputs:
            result["outputs"] = outputs
        result["duration_s"] = round(time.time() - started, 3)
        result["launch_attempts"] = [
            {"cloud": a.cloud, "region": a.region, "zone": a.zone, "instance_type": a.instance_type,
             "outcome": a.outcome, "error": a.error_class, "message": a.message}
            for a in core.store.list_attempts(name)
        ]  # fmt: skip
        if getattr(self, "_spill_decision", None):
            result["spillover"] = self._spill_decision
        staging, prestaged = core.last_staging_report(name, job_id), getattr(self, "_prestaged", None)
        store = context.get("task_state_store") if context else None
        saved = store.get(STAGING_KEY) if store is not None else None
        if staging is None and prestaged is None and saved and [saved["cluster"], saved["job_id"]] == [name, job_id]:
            staging, prestaged = saved.get("report"), saved.get("prestaged")  # submitted by an earlier process
        if staging is not None or prestaged is not None:  # per input: bytes copied, cache hit, cost, seconds
            result["staging"] = {**(staging or {}), "prestaged": prestaged}
        result["accrued_cost"] = round(core.store.get_cluster(name).cost_so_far or 0.0, 6)
        if task.resources.job_recovery is not None:  # task id, preemptions, restarts, recoveries
            result.update(recovery.summary(core, name, job_id))
        group = None
        if not self.cluster_name and context and context.get("ti") is not None:
            group = self._shared_cluster(self._owner(context), refresh=True)  # a re-plan may have ended it
        if group is not None:
            result["cluster_group"] = {k: group.get(k) for k in ("cluster_group", "group_first", "group_last", "shares_with")}
        if self.keep_warm:
            decision = core.keep_warm_or_down(name, self._next_run_at(context), getattr(self, "dag_id", None))
            if decision is not None:
                self.log.info("Keep-warm: %s %s", decision.reason, decision.numbers)
                result["keep_warm"] = {"keep": decision.keep, "reason": decision.reason}
            result["torn_down"] = bool(decision is not None and not decision.keep)
        elif group is not None and outcome.status != "SUCCEEDED" and self.down is None:
            # A shared cluster outlives a failed try that will be retried (the retry reuses it); on
            # the final failure the downstream tasks will not run, so it goes now.
            final = self._final_try(context)
            self.log.info(
                "Shared cluster %s: %s", name,
                "final failure, tearing it down" if final else "retries left, keeping it for the retry",
            )  # fmt: skip
            if final:
                core.down(name)
            result["torn_down"] = final
        elif self._tear_down():
            core.down(name)
            result["torn_down"] = True
        else:
            if group is not None:
                self.log.info("Leaving shared cluster %s up for the next task of its group", name)
            result["torn_down"] = False
        if outcome.status != "SUCCEEDED":
            lines = getattr(self, "_tail", None) or core.log_tail(name, job_id, self.log_tail_lines)
            tail = "\n".join(self._redact(line) for line in lines)
            raise AirflowException(
                f"Sky job {job_id} on cluster {name} ended {outcome.status} (exit code {outcome.exit_code}). "
                f"Last log lines:\n{tail}"
            )
        return result

    @staticmethod
    def _next_run_at(context: Any) -> Any:
        """When the DAG's schedule runs next (None: unscheduled or unknown)."""
        dag = context.get("dag") if context else None
        if dag is None:
            return None
        from datetime import UTC, datetime

        from airflow_provider_sky.provision.keepwarm import next_run_after

        try:
            return next_run_after(getattr(dag, "timetable", None), datetime.now(UTC))
        except (TypeError, ValueError):
            return None

    def on_kill(self) -> None:
        """Cancel the running job and tear down what this task created (nothing else)."""
        live = getattr(self, "_live", None)
        if not live:
            return
        core = self.hook.core
        down = self._tear_down()
        if live.get("job_id") is not None:
            self.log.info("Cancelling job %s on %s", live["job_id"], live["cluster"])
            # Airflow SIGKILLs a killed task a few seconds after SIGTERM: when the cluster goes
            # anyway, give the job only a short grace so the teardown below always gets its turn.
            core.cancel(live["cluster"], int(live["job_id"]), grace=ON_KILL_GRACE if down else None)
        if down:
            self.log.info("Tearing down cluster %s", live["cluster"])
            core.down(live["cluster"])


def sharing_rules_of(dag: Any) -> Any:
    """What the DAG's sky tasks allow for cluster sharing (`cluster_groups.SharingRules`)."""
    from airflow_provider_sky.provision.cluster_groups import SharingRules

    sky = {t.task_id: t for t in dag.tasks if isinstance(t, SkyTaskOperator) and t.launches}
    excluded, no_handoff, indirect = set(), set(), set()
    for task_id, op in sky.items():
        trigger_rule = str(getattr(op, "trigger_rule", "all_success")).rsplit(".", 1)[-1].lower()
        if (
            op.cluster_name or not getattr(op, "share_cluster", True) or op.spillover or op.keep_warm
            or trigger_rule != "all_success"
        ):  # fmt: skip
            excluded.add(task_id)
        elif op.down is True:
            no_handoff.add(task_id)
        direct = set(op.upstream_task_ids)
        for up in _sky_upstreams(dag, op, sky):
            if up not in direct:
                indirect.add((up, task_id))
    return SharingRules(frozenset(excluded), frozenset(no_handoff), frozenset(indirect))


def _sky_upstreams(dag: Any, op: Any, sky: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(op.upstream_task_ids)
    while stack:
        up = stack.pop()
        if up in seen:
            continue
        seen.add(up)
        if up in sky:
            found.add(up)
        else:
            stack.extend(dag.get_task(up).upstream_task_ids)
    return found


def _down_shared_cluster_on_failure(context: Any) -> None:
    """``on_failure_callback`` of sky tasks: a group member that failed for good (retries spent)
    tears the shared cluster down, whatever failed (launch, submit, job), since the group's last
    task will never run. Clusters left when a non-sky task between fails are the reaper's."""
    task = context.get("task") if context else None
    if not isinstance(task, SkyTaskOperator):
        return
    try:
        task._down_group_after_failure(context)
    except Exception:  # a callback must not hide the task's own error
        task.log.warning("could not tear down the shared cluster after the failure", exc_info=True)


def sky_tasks_of(dag: Any) -> tuple[dict[str, Task], list[tuple[str, str]]]:
    """The DAG's sky tasks as spec Tasks, and the sky-to-sky edges (through any non-sky tasks between)."""
    sky = {t.task_id: t for t in dag.tasks if isinstance(t, SkyTaskOperator) and t.launches}
    tasks = {task_id: Task.from_dict(op._spec) for task_id, op in sky.items()}
    edges: list[tuple[str, str]] = []
    for task_id, op in sky.items():
        seen: set[str] = set()
        stack = list(op.upstream_task_ids)
        while stack:
            up = stack.pop()
            if up in seen:
                continue
            seen.add(up)
            if up in sky:
                edges.append((up, task_id))
            else:
                stack.extend(dag.get_task(up).upstream_task_ids)
    return tasks, edges


class SkyLaunchClusterOperator(SkyTaskOperator):
    """Launch (or reuse) a cluster and run its `setup`, keeping it up for later tasks.

    Use it as an Airflow setup task, paired with :class:`SkyDownOperator` as the teardown::

        launch = SkyLaunchClusterOperator(task_id="launch", cluster_name="etl-1", resources={...})
        down = SkyDownOperator(task_id="down", cluster_name="etl-1")
        launch >> [SkyExecOperator(...), ...] >> down.as_teardown(setups=launch)
    """

    requires_run = False

    def __init__(self, *, cluster_name: str, down: bool | None = False, **kwargs: Any) -> None:
        super().__init__(cluster_name=cluster_name, down=down, **kwargs)


class SkyExecOperator(SkyTaskOperator):
    """Run a job on an existing, UP cluster: workdir sync and `run` only (no setup, no launch)."""

    launches = False

    def __init__(self, *, cluster_name: str, down: bool | None = False, **kwargs: Any) -> None:
        if kwargs.get("setup"):
            raise SpecError(
                "setup", kwargs["setup"], "is not run by SkyExecOperator",
                "put setup on the SkyLaunchClusterOperator (or use SkyTaskOperator)",
            )
        super().__init__(cluster_name=cluster_name, down=down, **kwargs)

    def _rendered_task(self) -> Task:
        task = super()._rendered_task()
        return Task.from_dict({**task.to_dict(), "setup": None})


class SkyDownOperator(BaseOperator):
    """Tear down a cluster (cancels its jobs; job logs are kept). Safe when it is already gone."""

    template_fields: Sequence[str] = ("cluster_name",)
    ui_color = "#f6d5d5"

    def __init__(self, *, cluster_name: str, sky_conn_id: str = SkyHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "{{" not in cluster_name:
            problem = validate_cluster_name(cluster_name)
            if problem:
                raise SpecError("cluster_name", cluster_name, problem, "pick a name like 'train-gpu-1'")
        self.cluster_name = cluster_name
        self.sky_conn_id = sky_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        torn_down = SkyHook(sky_conn_id=self.sky_conn_id).core.down(self.cluster_name)
        self.log.info("Cluster %s %s", self.cluster_name, "terminated" if torn_down else "was already gone")
        return {"cluster": self.cluster_name, "torn_down": torn_down}
