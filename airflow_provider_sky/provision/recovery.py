"""Managed jobs (``resources.job_recovery``): detect preemption, relaunch, restart under the same task id.

    detect    `detect_preemption`: the cloud no longer has all the nodes the state store recorded
              (`Cloud.find` returns nothing, fewer nodes, or other node ids), or the job is LOST and
              its head node does not answer
    recover   `recover`: mark the job LOST, tear down what is left (`SkyCore.down`), relaunch the
              cluster under the same name (FAILOVER: the preempted region first, then the usual
              failover placements; EAGER_NEXT_REGION: the preempted region blocked first, and only
              if nothing else works tried again), and resubmit the job with the original
              ``SKYPILOT_TASK_ID`` so it can resume from its checkpoint
    follow    `follow_with_recovery`: the operator's wait loop for managed jobs; streams logs,
              recovers preemptions (not counted against ``max_restarts_on_errors``) and restarts
              user-code failures (non-zero exit) on the same cluster up to ``max_restarts_on_errors``

Every job of a chain is recorded in ``state.recovery`` before it starts, so the task id and the
counts survive a preempted head node and a killed Airflow worker. Nothing here imports Airflow.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.base import ClusterHandle
from airflow_provider_sky.clouds.errors import ProvisionError
from airflow_provider_sky.execution import job_driver as drv
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.provision.blocklist import BlockEntry
from airflow_provider_sky.provision.core import LaunchResult, Owner
from airflow_provider_sky.provision.placement import Placement
from airflow_provider_sky.state import ClusterStatus, JobStatus
from airflow_provider_sky.state import recovery as chains

if TYPE_CHECKING:
    from airflow_provider_sky.provision.core import SkyCore
    from airflow_provider_sky.spec import Task

log = logging.getLogger(__name__)

FAILOVER = "FAILOVER"
EAGER_NEXT_REGION = "EAGER_NEXT_REGION"
_STRATEGIES = (FAILOVER, EAGER_NEXT_REGION)
_PROBE_TIMEOUT = 20.0


class RecoveryError(RuntimeError):
    """A managed job could not be recovered (relaunch failed or the preemption budget is used up)."""


@dataclass(frozen=True)
class RecoveryPolicy:
    """How a managed job recovers; from ``resources.job_recovery``.

    `max_preemptions` (None: unlimited, like SkyPilot) bounds preemption recoveries per task.
    """

    strategy: str = FAILOVER
    max_restarts_on_errors: int = 0
    max_preemptions: int | None = None

    def __post_init__(self) -> None:
        name = (self.strategy or FAILOVER).strip().upper().replace("-", "_")
        if name not in _STRATEGIES:
            raise ValueError(
                f"unknown recovery strategy {self.strategy!r}; use FAILOVER or EAGER_NEXT_REGION"
            )
        object.__setattr__(self, "strategy", name)

    @classmethod
    def from_task(cls, task: Task) -> RecoveryPolicy | None:
        """The task's policy, or None when the task is not a managed job."""
        spec = task.resources.job_recovery
        if spec is None:
            return None
        return cls(spec.strategy or FAILOVER, spec.max_restarts_on_errors)


@dataclass(frozen=True)
class PreemptionInfo:
    """What was lost: where the cluster ran and how many of its nodes are gone."""

    cluster_name: str
    cloud: str | None
    region: str | None
    zone: str | None
    instance_type: str | None
    use_spot: bool
    expected_nodes: int
    found_nodes: int
    reason: str

    def placement(self) -> Placement | None:
        """The placement the cluster had (for 'same region first')."""
        if self.cloud is None:
            return None
        return Placement(self.cloud, self.region, None, self.instance_type, self.use_spot)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "expected_nodes": self.expected_nodes,
            "found_nodes": self.found_nodes,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RecoveryResult:
    """The restarted job, where its cluster now runs, and the chain's preemption count so far."""

    new_job_id: int
    placement: dict[str, Any]
    preemptions: int
    task_id: str


@dataclass
class FollowResult:
    """End of a managed job: its last job (whose outcome is the task's) and the recovery history."""

    job_id: int
    status: JobStatus | None
    task_id: str
    preemptions: int = 0
    restarts_on_errors: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "skypilot_task_id": self.task_id,
            "preemptions": self.preemptions,
            "restarts_on_errors": self.restarts_on_errors,
            "recoveries": self.history,
        }


# ---- detection ----------------------------------------------------------------------------
def _find(cloud: Any, cluster_name: str, region: str | None) -> ClusterHandle | None:
    if region and _accepts(type(cloud).find, "region"):
        return cloud.find(cluster_name, region=region)
    return cloud.find(cluster_name)


@functools.lru_cache(maxsize=64)
def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _head_answers(cloud: Any, handle: ClusterHandle) -> bool:
    """Whether the head node still runs commands (a node that vanished under a live record does not)."""
    try:
        runner = cloud.runners(handle)[0]
        return runner.run(["true"], timeout=_PROBE_TIMEOUT).returncode == 0
    except Exception:
        return False


def _termination_reason(cloud: Any, recorded: ClusterHandle | None) -> str:
    """``": <why>"`` when the cloud can tell why nodes ended (EC2 state reasons), else ``""``."""
    explain = getattr(cloud, "termination_reason", None)
    if recorded is None or not callable(explain):
        return ""
    try:
        why = explain(recorded)
    except Exception:
        return ""
    return f": {why}" if why else ""


def detect_preemption(core: SkyCore, cluster_name: str, job_id: int | None = None) -> PreemptionInfo | None:
    """A `PreemptionInfo` when an UP cluster lost nodes behind our back, else None.

    Lost means: `Cloud.find` no longer returns the cluster, returns fewer nodes than recorded, or
    misses recorded node ids; or, when `job_id` is given and that job is LOST, the head node does
    not answer. A cluster we stopped or tore down ourselves is never "preempted". Cloud API errors
    count as "cannot tell" (None).
    """
    record = core.store.get_cluster(cluster_name)
    if record is None or record.status is not ClusterStatus.UP or record.cloud not in core.clouds:
        return None
    cloud = core.clouds[record.cloud]
    recorded = ClusterHandle.from_json(record.handle) if record.handle else None

    def info(found: int, reason: str) -> PreemptionInfo:
        return PreemptionInfo(
            cluster_name, record.cloud, record.region, record.zone, record.instance_type,
            bool(record.use_spot), record.num_nodes, found, reason,
        )  # fmt: skip

    try:
        handle = _find(cloud, cluster_name, record.region)
    except Exception as exc:
        log.warning("preemption check of %s failed: %s", cluster_name, exc)
        return None
    if handle is None:
        why = _termination_reason(cloud, recorded)
        return info(0, f"all {record.num_nodes} node(s) of {cluster_name} are gone{why}")
    missing = sorted(set(recorded.node_ids) - set(handle.node_ids)) if recorded and handle.node_ids else []
    if handle.num_nodes < record.num_nodes or missing:
        found = (
            len(set(recorded.node_ids) & set(handle.node_ids))
            if recorded and recorded.node_ids
            else handle.num_nodes
        )
        found = min(found, handle.num_nodes)
        what = f" ({', '.join(missing)})" if missing else ""
        why = _termination_reason(cloud, recorded)
        return info(
            found,
            f"{record.num_nodes - found} of {record.num_nodes} node(s) of {cluster_name} gone{what}{why}",
        )
    if job_id is not None:
        job = core.store.get_job(cluster_name, job_id)
        if job is not None and job.status is JobStatus.LOST and not _head_answers(cloud, handle):
            return info(
                handle.num_nodes, f"job {job_id} is LOST and the head node of {cluster_name} does not answer"
            )
    return None


# ---- task ids and chains ------------------------------------------------------------------
def _task_id_on_node(core: SkyCore, cluster_name: str, job_id: int) -> str | None:
    """The job's ``SKYPILOT_TASK_ID`` from its spec on the head node (while the node lives)."""
    try:
        head = core._runners(cluster_name)[0]
        raw = head.read_bytes(f"{jobs.job_dir(head, job_id)}/{drv.SPEC_FILE}", 0, 1 << 20)
        return json.loads(raw.decode("utf-8")).get("task_id")
    except Exception:
        return None


def ensure_chain(core: SkyCore, cluster_name: str, job_id: int) -> chains.ChainEntry:
    """The chain entry of a job; a job submitted outside `submit_managed` is adopted as a chain root.

    Its task id is read from the head node; when that is gone too, a fresh one is made (the job
    can then not resume from its checkpoint, which the log says).
    """
    entry = chains.get_job(core.store, cluster_name, job_id)
    if entry is not None:
        return entry
    task_id = _task_id_on_node(core, cluster_name, job_id)
    if task_id is None:
        task_id = jobs.make_task_id(cluster_name, job_id)
        log.warning(
            "job %s on %s: its SKYPILOT_TASK_ID is unknown; restarts use %s", job_id, cluster_name, task_id
        )
    return chains.record_job(core.store, cluster_name, job_id, task_id=task_id)


def chain_counts(core: SkyCore, cluster_name: str, root_job_id: int) -> tuple[int, int, list[dict[str, Any]]]:
    """(preemptions, restarts on errors, history) of a chain so far."""
    entries = chains.chain(core.store, cluster_name, root_job_id)
    history = [e.to_dict() for e in entries if e.reason != chains.ORIGINAL]
    preemptions = sum(1 for e in entries if e.reason == chains.PREEMPTION)
    errors = sum(1 for e in entries if e.reason == chains.ERROR)
    return preemptions, errors, history


def _start_job(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner,
    *,
    task_id: str | None,
    root_job_id: int | None = None,
    reason: str = chains.ORIGINAL,
    previous_job_id: int | None = None,
    placement: dict[str, Any] | None = None,
    message: str | None = None,
    store_options: Any = None,
) -> tuple[int, str]:
    """`SkyCore.submit` with a chosen task id, recorded in the chain before the job starts."""

    def record(job_id: int, chosen: str) -> None:
        chains.record_job(
            core.store, cluster_name, job_id, task_id=chosen, root_job_id=root_job_id, reason=reason,
            previous_job_id=previous_job_id, placement=placement, message=message,
        )  # fmt: skip

    chosen: list[str] = []

    def on_job(job_id: int, tid: str) -> None:
        chosen.append(tid)
        record(job_id, tid)

    job_id = core.submit(task, cluster_name, owner, store_options=store_options, task_id=task_id, on_job=on_job)
    return job_id, chosen[0] if chosen else (task_id or "")


def submit_managed(
    core: SkyCore, task: Task, cluster_name: str, owner: Owner | None = None, store_options: Any = None
) -> int:
    """Submit a managed job (the root of a recovery chain); its task id is stored before it starts.

    `store_options` is `SkyCore.submit`'s (credentials for bucket file mounts).
    """
    job_id, _ = _start_job(
        core, task, cluster_name, owner or Owner(), task_id=None, store_options=store_options
    )
    return job_id


# ---- relaunch -----------------------------------------------------------------------------
@contextlib.contextmanager
def _avoiding(core: SkyCore, avoid: Sequence[BlockEntry]) -> Iterator[None]:
    """Make `core.launch` skip `avoid` (until `SkyCore.launch` takes an ``avoid`` argument)."""
    if not avoid:
        yield
        return
    original = core.placement_source

    def placement_source(task: Task, preferred: Any = None) -> Any:
        source = original(task, preferred)

        def next_placement(blocklist: Any) -> Placement | None:
            for entry in avoid:
                blocklist.add(entry)
            return source(blocklist)

        return next_placement

    core.placement_source = placement_source  # type: ignore[method-assign]
    try:
        yield
    finally:
        del core.placement_source


def _launch(core: SkyCore, task: Task, cluster_name: str, owner: Owner, preferred: Placement | None,
            avoid: Sequence[BlockEntry]) -> LaunchResult:  # fmt: skip
    if avoid and _accepts(type(core).launch, "avoid"):
        return core.launch(task, cluster_name, owner, preferred=preferred, avoid=list(avoid))  # type: ignore[call-arg]
    with _avoiding(core, avoid):
        return core.launch(task, cluster_name, owner, preferred=preferred)


def _preferred_placement(task: Task, lost: PreemptionInfo) -> Placement | None:
    """The preempted placement, with the task's matching candidate resources."""
    base = lost.placement()
    if base is None:
        return None
    for res in task.resources.candidates():
        if res.cloud in (None, base.cloud) and res.instance_type in (None, base.instance_type):
            return Placement(base.cloud, base.region, None, base.instance_type, base.use_spot, resources=res)
    return base


def relaunch(core: SkyCore, task: Task, cluster_name: str, owner: Owner, strategy: str,
             lost: PreemptionInfo) -> LaunchResult:  # fmt: skip
    """Launch the cluster again after `lost` by `strategy` (see the module docstring)."""
    strategy = RecoveryPolicy(strategy).strategy
    if strategy == FAILOVER:
        return _launch(core, task, cluster_name, owner, _preferred_placement(task, lost), ())
    avoid = []
    if lost.cloud and lost.region:
        avoid = [
            BlockEntry(lost.cloud, lost.region, reason=f"preempted: {lost.reason}", error_class="Preempted")
        ]
    try:
        return _launch(core, task, cluster_name, owner, None, avoid)
    except ProvisionError as exc:
        if not avoid:
            raise
        log.warning("no other region could take %s (%s); trying %s again", cluster_name, exc, lost.region)
        return _launch(core, task, cluster_name, owner, _preferred_placement(task, lost), ())


def _lost_from_record(core: SkyCore, cluster_name: str, reason: str) -> PreemptionInfo:
    record = core.store.get_cluster(cluster_name)
    if record is None:
        return PreemptionInfo(cluster_name, None, None, None, None, False, 0, 0, reason)
    return PreemptionInfo(
        cluster_name, record.cloud, record.region, record.zone, record.instance_type,
        bool(record.use_spot), record.num_nodes, 0, reason,
    )  # fmt: skip


def recover(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner | None,
    job_id: int,
    attempt: int,
    strategy: str = FAILOVER,
    *,
    info: PreemptionInfo | None = None,
) -> RecoveryResult:
    """Recover a preempted job: tear down the remains, relaunch, resubmit under the same task id.

    `attempt` is this recovery's number (1 for the first), for the record and the log.
    Raises `RecoveryError` when the cluster cannot be launched again.
    """
    owner = owner or Owner()
    entry = ensure_chain(core, cluster_name, job_id)
    lost = (
        info
        or detect_preemption(core, cluster_name, job_id)
        or _lost_from_record(core, cluster_name, "recovery requested")
    )
    core.store.set_job_status(cluster_name, job_id, JobStatus.LOST)
    log.warning("recovery %d of %s (job %s): %s", attempt, cluster_name, job_id, lost.reason)
    core.down(cluster_name)  # terminate what is left; job logs are archived when the head is alive
    try:
        launched = relaunch(core, task, cluster_name, owner, strategy, lost)
    except ProvisionError as exc:
        raise RecoveryError(f"could not relaunch {cluster_name} after preemption: {exc}") from exc
    c = launched.cluster
    placement = {
        "cloud": c.cloud, "region": c.region, "zone": c.zone, "instance_type": c.instance_type,
        "use_spot": bool(c.use_spot), "preempted": lost.to_dict(), "attempt": attempt,
    }  # fmt: skip
    new_job_id, task_id = _start_job(
        core, task, cluster_name, owner, task_id=entry.task_id, root_job_id=entry.root_job_id,
        reason=chains.PREEMPTION, previous_job_id=job_id, placement=placement, message=lost.reason,
    )  # fmt: skip
    preemptions, _, _ = chain_counts(core, cluster_name, entry.root_job_id)
    return RecoveryResult(new_job_id, placement, preemptions, task_id)


def restart_on_error(core: SkyCore, task: Task, cluster_name: str, owner: Owner | None, job_id: int) -> int:
    """Restart a failed managed job on its (healthy) cluster under the same task id; the new job id."""
    entry = ensure_chain(core, cluster_name, job_id)
    job = core.store.get_job(cluster_name, job_id)
    message = f"job {job_id} exited with code {job.exit_code if job else None}"
    new_job_id, _ = _start_job(
        core, task, cluster_name, owner or Owner(), task_id=entry.task_id, root_job_id=entry.root_job_id,
        reason=chains.ERROR, previous_job_id=job_id, message=message,
    )  # fmt: skip
    return new_job_id


# ---- the wait loop ------------------------------------------------------------------------
def _flush_log(
    core: SkyCore, cluster_name: str, job_id: int, offset: int, on_log_text: Callable[[str], None]
) -> None:
    with contextlib.suppress(Exception):
        text, _ = core.read_log(cluster_name, job_id, offset, final=True)
        if text:
            on_log_text(text)


def _note(on_log_text: Callable[[str], None] | None, text: str) -> None:
    if on_log_text is not None:
        on_log_text(f"[sky recovery] {text}\n")


def recover_if_preempted(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner | None,
    job_id: int,
    policy: RecoveryPolicy,
    on_log_text: Callable[[str], None] | None = None,
    *,
    job_ended: bool = True,
) -> int | None:
    """Recover the job when its cluster lost nodes; the restarted job's id, or None (not preempted).

    A CANCELLED job is never recovered. Raises `RecoveryError` past ``policy.max_preemptions``.
    """
    job = core.store.get_job(cluster_name, job_id)
    if job is not None and job.status is JobStatus.CANCELLED:
        return None
    lost = detect_preemption(core, cluster_name, job_id if job_ended else None)
    if lost is None:
        return None
    entry = ensure_chain(core, cluster_name, job_id)
    preemptions, _, _ = chain_counts(core, cluster_name, entry.root_job_id)
    if policy.max_preemptions is not None and preemptions >= policy.max_preemptions:
        raise RecoveryError(
            f"{cluster_name} was preempted again ({lost.reason}) after {preemptions} recoveries; "
            f"max_preemptions={policy.max_preemptions}"
        )
    result = recover(core, task, cluster_name, owner, job_id, preemptions + 1, policy.strategy, info=lost)
    where = "/".join(str(result.placement[k]) for k in ("cloud", "region", "zone") if result.placement[k])
    _note(
        on_log_text,
        f"preempted ({lost.reason}); relaunched {cluster_name} on {where}; job {job_id} restarted as "
        f"job {result.new_job_id} (SKYPILOT_TASK_ID={result.task_id}, preemptions={result.preemptions})",
    )
    return result.new_job_id


def after_job_end(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner | None,
    job_id: int,
    policy: RecoveryPolicy,
    on_log_text: Callable[[str], None] | None = None,
) -> int | None:
    """After a managed job ended (or could not be polled): the id of the job that carries on, or None.

    Preemption first (recovered whatever the exit status, not counted as an error); then a FAILED
    job on a healthy cluster is restarted while ``max_restarts_on_errors`` allows. Used by the
    follow loop and by a deferrable operator's ``execute_complete``.
    """
    new_job_id = recover_if_preempted(core, task, cluster_name, owner, job_id, policy, on_log_text)
    if new_job_id is not None:
        return new_job_id
    job = core.store.get_job(cluster_name, job_id)
    if job is None or job.status is not JobStatus.FAILED:
        return None
    entry = ensure_chain(core, cluster_name, job_id)
    _, restarts, _ = chain_counts(core, cluster_name, entry.root_job_id)
    if restarts >= policy.max_restarts_on_errors:
        return None
    new_job_id = restart_on_error(core, task, cluster_name, owner, job_id)
    _note(
        on_log_text,
        f"job {job_id} failed (exit code {job.exit_code}); restart {restarts + 1} of "
        f"{policy.max_restarts_on_errors} as job {new_job_id} (SKYPILOT_TASK_ID={entry.task_id})",
    )
    return new_job_id


def summary(core: SkyCore, cluster_name: str, job_id: int) -> dict[str, Any]:
    """The XCom fields of a managed job's chain (task id, preemptions, restarts, history)."""
    entry = chains.get_job(core.store, cluster_name, job_id)
    if entry is None:
        return FollowResult(job_id, None, "", 0, 0, []).to_xcom()
    preemptions, restarts, history = chain_counts(core, cluster_name, entry.root_job_id)
    return FollowResult(job_id, None, entry.task_id, preemptions, restarts, history).to_xcom()


def follow_with_recovery(
    core: SkyCore,
    task: Task,
    cluster_name: str,
    owner: Owner | None,
    job_id: int,
    on_log_text: Callable[[str], None],
    poll_interval: float = 1.0,
    on_new_job: Callable[[int], None] | None = None,
    *,
    policy: RecoveryPolicy | None = None,
    log_offset: int = 0,
    health_check_interval: float = 30.0,
    max_poll_errors: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> FollowResult:
    """Follow a managed job to its end, recovering preemptions and restarting user-code failures.

    `on_log_text` gets the job's new log text (and one ``[sky recovery]`` line per recovery);
    `on_new_job(job_id)` is called as soon as a restarted job is submitted (store it where a retry
    looks, e.g. ``task_state_store``). The cluster is also checked for lost nodes every
    `health_check_interval` seconds while the job runs (a dead worker node may hang a job), and
    whenever a poll fails (`max_poll_errors` failures in a row on a healthy cluster re-raise).
    See `after_job_end` for what is restarted. Counts continue across worker restarts (they are
    in the state store).
    """
    owner = owner or Owner()
    policy = policy or RecoveryPolicy.from_task(task) or RecoveryPolicy()
    entry = ensure_chain(core, cluster_name, job_id)
    offset = log_offset
    last_check = time.monotonic()
    poll_errors = 0

    def switch(new_job_id: int) -> None:
        nonlocal job_id, offset, last_check, poll_errors
        job_id, offset, last_check, poll_errors = new_job_id, 0, time.monotonic(), 0
        if on_new_job is not None:
            on_new_job(new_job_id)

    while True:
        error: Exception | None = None
        try:
            status = core.job_status(cluster_name, job_id)
        except Exception as exc:  # e.g. SSH to a node that is gone
            status, error = None, exc
        if error is None:
            with contextlib.suppress(Exception):
                text, offset = core.read_log(cluster_name, job_id, offset)
                if text:
                    on_log_text(text)
        done = error is None and (status is None or status.is_terminal)
        if done:
            _flush_log(core, cluster_name, job_id, offset, on_log_text)
            if status is not JobStatus.SUCCEEDED:
                new_job_id = after_job_end(core, task, cluster_name, owner, job_id, policy, on_log_text)
                if new_job_id is not None:
                    switch(new_job_id)
                    continue
            preemptions, restarts, history = chain_counts(core, cluster_name, entry.root_job_id)
            return FollowResult(job_id, status, entry.task_id, preemptions, restarts, history)
        if error is not None or time.monotonic() - last_check >= health_check_interval:
            last_check = time.monotonic()
            if error is not None:
                _flush_log(core, cluster_name, job_id, offset, on_log_text)
            new_job_id = recover_if_preempted(
                core, task, cluster_name, owner, job_id, policy, on_log_text, job_ended=False
            )
            if new_job_id is not None:
                switch(new_job_id)
                continue
            if error is not None:
                poll_errors += 1
                if poll_errors >= max_poll_errors:
                    raise error
        else:
            poll_errors = 0
        sleep(poll_interval)
