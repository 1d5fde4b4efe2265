"""Detached jobs on a cluster: submit, poll, cancel, set up once.

A job lives on the head node under ``<home>/.sky/jobs/<job_id>/`` and is run by the stdlib-only
`job_driver`, started fully detached so it survives the submitting process (the Airflow worker)
and its process group. Everything here goes through a `CommandRunner`, so it works the same for
the local backend and for remote nodes. Worker nodes get their own copy of the scripts in a job
directory of the same name; the head node's driver starts the job on every node.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from airflow_provider_sky.execution import job_driver as drv
from airflow_provider_sky.execution.logs import ReadBytes
from airflow_provider_sky.execution.runner import CommandRunner

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DRIVER_SOURCE = Path(drv.__file__).read_text(encoding="utf-8")
_DRIVER_NAME = f"job_driver-{hashlib.sha256(_DRIVER_SOURCE.encode()).hexdigest()[:12]}.py"
DEFAULT_GRACE = drv.DEFAULT_GRACE


class JobStatus(StrEnum):
    """Job states; same names, values and `is_terminal` as `state.status.JobStatus` (LOST is terminal)."""

    PENDING = drv.PENDING
    SETTING_UP = drv.SETTING_UP
    RUNNING = drv.RUNNING
    SUCCEEDED = drv.SUCCEEDED
    FAILED = drv.FAILED
    FAILED_SETUP = drv.FAILED_SETUP
    CANCELLED = drv.CANCELLED
    LOST = drv.LOST

    @property
    def is_terminal(self) -> bool:
        """True when the job will not change any more (LOST included)."""
        return self in _FINISHED


_FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FAILED_SETUP, JobStatus.CANCELLED, JobStatus.LOST}
)


@dataclass(frozen=True)
class JobState:
    """What a poll tells: status, exit code once known, the driver's pid."""

    status: JobStatus
    exit_code: int | None = None
    pid: int | None = None

    @property
    def finished(self) -> bool:
        return self.status.is_terminal

    @classmethod
    def _from_driver(cls, data: Mapping[str, Any]) -> JobState:
        return cls(JobStatus(data["status"]), data.get("exit_code"), data.get("pid"))


@dataclass(frozen=True)
class JobHandle:
    """Where a submitted job lives; JSON-serializable (XCom, task_state_store, deferral kwargs)."""

    job_id: str
    job_dir: str
    log_path: str
    node_ip: str
    task_id: str
    num_nodes: int = 1
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True)
class SetupResult:
    """Outcome of `run_setup`: whether it ran, and the setup job's final state."""

    ran: bool
    state: JobState
    handle: JobHandle | None = None


class JobError(RuntimeError):
    """Base class for job submission and lookup errors."""


class JobExistsError(JobError):
    """A job with this id was already submitted on this node (ids are never reused)."""


class JobNotFoundError(JobError, LookupError):
    """No job with this id on this node."""


class JobSubmitError(JobError):
    """The driver could not be started."""


# ---- paths and small helpers ----
def node_path(runner: CommandRunner, path: str | None) -> str:
    """Absolute node path for `path` (None: the node's home; relative and ``~/`` from home)."""
    if not path or path == "~":
        return runner.home
    if path.startswith("~/"):
        path = path[2:]
    return path if path.startswith("/") else f"{runner.home.rstrip('/')}/{path}"


def job_dir(runner: CommandRunner, job_id: int | str) -> str:
    return f"{runner.home.rstrip('/')}/{drv.SKY_DIR}/{drv.JOBS_DIR}/{job_id}"


def setup_hash(script: str) -> str:
    """Hash recorded in the setup marker: setup re-runs only when the script changes."""
    return hashlib.sha256(script.encode("utf-8")).hexdigest()


def make_task_id(cluster_name: str, job_id: int | str, now: datetime | None = None) -> str:
    """SkyPilot-style unique task id: ``sky-<timestamp>_<cluster>_<job_id>``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d-%H-%M-%S-%f")
    return f"sky-{stamp}_{cluster_name or 'cluster'}_{job_id}"


def _check_job_id(job_id: int | str) -> str:
    text = str(job_id)
    if not _JOB_ID_RE.match(text):
        raise ValueError(f"job id {text!r} is not allowed: use letters, digits, '.', '_' or '-'")
    return text


def _check_env(env: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not _ENV_NAME_RE.match(str(name)):
            raise ValueError(f"environment variable name {name!r} is not valid (letters, digits, '_')")
        if value is None:
            continue
        text = (
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)
        )
        if "\0" in text:
            raise ValueError(f"environment variable {name} contains a NUL byte")
        out[str(name)] = text
    return out


def install_driver(runner: CommandRunner) -> str:
    """Make sure this version of the job driver is on the node; return its path there."""
    path = f"{runner.home.rstrip('/')}/{drv.SKY_DIR}/{drv.BIN_DIR}/{_DRIVER_NAME}"
    try:
        runner.read_bytes(path, 0, 1)
    except FileNotFoundError:
        runner.write_text(path, _DRIVER_SOURCE, mode=0o644)
    return path


def _driver(runner: CommandRunner, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run a driver subcommand on the node and parse its JSON answer."""
    argv = [runner.python, "-I", "-S", install_driver(runner), *args]
    result = runner.run(argv, timeout=timeout)
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    if result.returncode != 0 or not lines:
        raise JobError(
            f"job driver {args[0]!r} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return json.loads(lines[-1])


# ---- submit ----
def submit_job(
    runner: CommandRunner,
    job_id: int | str,
    script: str | None,
    env: Mapping[str, Any] | None = None,
    workdir: str | None = None,
    **kwargs: Any,
) -> JobHandle:
    """Submit a single-node job; see `submit_multinode_job` for the keyword arguments."""
    return submit_multinode_job([runner], job_id, script, env, workdir, **kwargs)


def submit_multinode_job(
    runners: Sequence[CommandRunner],
    job_id: int | str,
    script: str | None,
    env: Mapping[str, Any] | None = None,
    workdir: str | None = None,
    *,
    setup: str | None = None,
    cluster_name: str = "",
    num_gpus_per_node: float = 0,
    gpu_capacity: float | None = None,
    task_id: str | None = None,
    cluster_info: Mapping[str, Any] | None = None,
    fail_fast: bool = True,
    grace_seconds: float = DEFAULT_GRACE,
) -> JobHandle:
    """Start `script` on every node (head first in `runners`) as one detached job.

    `env` (secrets included) is written to the head node's ``env.json`` (0600) and reaches the
    processes only through their environment. Each node also gets ``SKYPILOT_NODE_RANK``,
    ``SKYPILOT_NODE_IPS``, ``SKYPILOT_NUM_NODES``, ``SKYPILOT_NUM_GPUS_PER_NODE``,
    ``SKYPILOT_TASK_ID`` and, when given, ``SKYPILOT_CLUSTER_INFO``. `setup` runs first on every
    node whose setup marker differs from the script's hash. `workdir` is a node path (default:
    home). With `fail_fast`, the first node to fail stops the others; the job's exit code is the
    first non-zero node exit code. `script=None` submits a setup-only job. With `gpu_capacity`
    (accelerators per node of the cluster), a job needing `num_gpus_per_node` waits PENDING until
    that many are free on the cluster: concurrent jobs never oversubscribe the accelerators.
    """
    if not runners:
        raise ValueError("a job needs at least one node")
    jid = _check_job_id(job_id)
    user_env = _check_env(env)
    head = runners[0]
    head_dir = job_dir(head, jid)
    try:
        head.read_bytes(f"{head_dir}/{drv.STATUS_FILE}", 0, 1)
    except FileNotFoundError:
        pass
    else:
        raise JobExistsError(
            f"job {jid} already exists on {head.node_ip} ({head_dir}); job ids are never reused"
        )

    task_id = task_id or make_task_id(cluster_name, jid)
    ips = [r.node_ip for r in runners]
    sky_env = {
        "SKYPILOT_NODE_IPS": "\n".join(ips),
        "SKYPILOT_NUM_NODES": str(len(runners)),
        "SKYPILOT_NUM_GPUS_PER_NODE": str(num_gpus_per_node),
        "SKYPILOT_TASK_ID": task_id,
    }
    if cluster_info is not None:
        sky_env["SKYPILOT_CLUSTER_INFO"] = json.dumps(dict(cluster_info), sort_keys=True)

    nodes = []
    for rank, runner in enumerate(runners):
        ndir = job_dir(runner, jid)
        if script is not None:
            runner.write_text(f"{ndir}/{drv.RUN_SCRIPT}", script)
        if setup is not None:
            runner.write_text(f"{ndir}/{drv.SETUP_SCRIPT}", setup)
        nodes.append(
            {**runner.node_spec(), "rank": rank, "job_dir": ndir, "workdir": node_path(runner, workdir)}
        )
    spec = {
        "job_id": jid,
        "task_id": task_id,
        "nodes": nodes,
        "setup_hash": setup_hash(setup) if setup is not None else None,
        "has_run": script is not None,
        "fail_fast": fail_fast,
        "gpu_demand": num_gpus_per_node,
        "gpu_capacity": gpu_capacity,
        "grace_seconds": grace_seconds,
    }
    head.write_text(f"{head_dir}/{drv.ENV_FILE}", json.dumps({**user_env, **sky_env}))
    head.write_text(f"{head_dir}/{drv.SPEC_FILE}", json.dumps(spec, indent=1))
    head.write_text(f"{head_dir}/{drv.STATUS_FILE}", drv.PENDING + "\n")
    try:
        started = _driver(head, "start", head_dir)
    except JobError as exc:
        raise JobSubmitError(f"could not start job {jid} on {head.node_ip}: {exc}") from exc
    return JobHandle(
        job_id=jid,
        job_dir=head_dir,
        log_path=f"{head_dir}/{drv.LOG_FILE}",
        node_ip=head.node_ip,
        task_id=task_id,
        num_nodes=len(runners),
        pid=started.get("pid"),
    )


# ---- poll, wait, cancel, list ----
def job_status(runner: CommandRunner, job_id: int | str) -> JobState:
    """Current state of a job on the head node (LOST when its driver vanished without an exit code)."""
    data = _driver(runner, "status", job_dir(runner, _check_job_id(job_id)))["jobs"][0]
    if data["status"] is None:
        raise JobNotFoundError(f"no job {job_id} on {runner.node_ip}")
    return JobState._from_driver(data)


def wait_job(
    runner: CommandRunner, job_id: int | str, timeout: float | None = None, poll: float = 0.2
) -> JobState:
    """Poll until the job is finished; raises TimeoutError after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = job_status(runner, job_id)
        if state.finished:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state.status.value} after {timeout:g}s")
        time.sleep(poll)


def cancel_job(runner: CommandRunner, job_id: int | str, grace: float = DEFAULT_GRACE) -> JobState:
    """Stop a job: SIGTERM to every node's process group, SIGKILL after `grace` seconds.

    A job that already finished keeps its status.
    """
    jdir = job_dir(runner, _check_job_id(job_id))
    data = _driver(runner, "cancel", "--grace", str(grace), jdir, timeout=grace + 60)["jobs"][0]
    if data["status"] is None:
        raise JobNotFoundError(f"no job {job_id} on {runner.node_ip}")
    return JobState._from_driver(data)


def list_jobs(runner: CommandRunner) -> dict[str, JobState]:
    """All jobs of a node by id."""
    jobs = _driver(runner, "list", runner.home)["jobs"]
    return {j["job_id"]: JobState._from_driver(j) for j in jobs if j["status"] is not None}


def cancel_all_jobs(runner: CommandRunner, grace: float = DEFAULT_GRACE) -> dict[str, JobState]:
    """Cancel every unfinished job of a node (in parallel); returns the final states."""
    live = [jid for jid, st in list_jobs(runner).items() if not st.finished or st.status is JobStatus.LOST]
    if not live:
        return {}
    dirs = [job_dir(runner, j) for j in live]
    jobs = _driver(runner, "cancel", "--grace", str(grace), *dirs, timeout=grace + 60)["jobs"]
    return {j["job_id"]: JobState._from_driver(j) for j in jobs if j["status"] is not None}


# ---- logs ----
def log_reader(runner: CommandRunner, job_id: int | str) -> ReadBytes:
    """A ``read(offset, max_bytes)`` over the job's combined log, for `LogTailer`."""
    path = f"{job_dir(runner, _check_job_id(job_id))}/{drv.LOG_FILE}"
    return lambda offset, max_bytes: runner.read_bytes(path, offset, max_bytes)


def read_log_tail(runner: CommandRunner, job_id: int | str, max_bytes: int = 8192) -> str:
    """The last complete lines of the job log (at most `max_bytes`), e.g. for a failure message."""
    try:
        data = log_reader(runner, job_id)(-(max_bytes + 1), max_bytes + 1)
    except FileNotFoundError:
        return ""
    if len(data) > max_bytes:  # started mid-line: drop the partial first line
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else data[1:]
    return data.decode("utf-8", "replace")


# ---- setup ----
def _setup_done(runner: CommandRunner, digest: str) -> bool:
    try:
        marker = runner.read_bytes(f"{runner.home.rstrip('/')}/{drv.SKY_DIR}/{drv.SETUP_MARKER}", 0, 256)
    except FileNotFoundError:
        return False
    return marker.decode("ascii", "replace").strip() == digest


def run_setup(
    runners: CommandRunner | Sequence[CommandRunner],
    script: str,
    env: Mapping[str, Any] | None = None,
    workdir: str | None = None,
    *,
    timeout: float | None = None,
    poll: float = 0.2,
    **kwargs: Any,
) -> SetupResult:
    """Run the cluster's setup once: skipped when every node's marker matches the script's hash.

    The setup runs as a detached setup-only job (id ``setup-<hash>-<n>``) and is waited for; a
    failure gives status FAILED_SETUP, with the output in the job's log.
    """
    nodes = [runners] if isinstance(runners, CommandRunner) else list(runners)
    digest = setup_hash(script)
    if all(_setup_done(r, digest) for r in nodes):
        return SetupResult(ran=False, state=JobState(JobStatus.SUCCEEDED, 0))
    jid = f"setup-{digest[:12]}-{time.time_ns()}"
    handle = submit_multinode_job(nodes, jid, None, env, workdir, setup=script, **kwargs)
    state = wait_job(nodes[0], jid, timeout=timeout, poll=poll)
    return SetupResult(ran=True, state=state, handle=handle)
