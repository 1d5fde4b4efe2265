"""Job driver: runs one job on a cluster's head node, detached from whoever submitted it.

Standard library only (and Python 3.8 compatible), so the file can be copied to any node and run
by its python3 (the execution layer ships it to ``<home>/.sky/bin/``). It also works as
``python -m airflow_provider_sky.execution.job_driver``. Subcommands print one JSON line:

    start <jobdir>                    start ``run <jobdir>`` fully detached, print {"pid": N}
    run <jobdir>                      the driver: setup, run on every node, log, exit code, status
    status <jobdir>...                print {"jobs": [state, ...]}
    cancel [--grace S] <jobdir>...    stop jobs (SIGTERM to their process groups, then SIGKILL)
    list <home>                       print {"jobs": [state, ...]} for every job of a node

Job directory (on the head node): job.json (what to run where), env.json (0600, environment
including secrets), run.sh / setup.sh, log, pid, exit_code, status. Worker nodes hold their own
run.sh / setup.sh in a job directory of the same name. Environment values reach the job only
through the process environment, never through a command line or the script text.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

# ---- layout (the single source of truth; jobs.py imports these) ----
SKY_DIR = ".sky"
JOBS_DIR = "jobs"
BIN_DIR = "bin"
SETUP_MARKER = "setup_done"
SETUP_LOCK = "setup.lock"

SPEC_FILE = "job.json"
ENV_FILE = "env.json"
RUN_SCRIPT = "run.sh"
SETUP_SCRIPT = "setup.sh"
LOG_FILE = "log"
PID_FILE = "pid"
EXIT_CODE_FILE = "exit_code"
STATUS_FILE = "status"
CANCEL_FILE = "cancel"
ADMITTED_FILE = "admitted"  # written when the job got its accelerators on the cluster
SCHED_LOCK = "sched.lock"
CHILDREN_FILE = "children"
DRIVER_OUT = "driver.out"

#: Head-node files through which the driver reaches "ssh" worker nodes (written by the SSH runner).
SSH_DIR = "ssh"
SSH_KNOWN_HOSTS = "known_hosts"
#: Extra seconds the driver waits for an ssh node to stop after its own grace period.
SSH_STOP_SLACK = 5.0

#: Marks every process started on a node with the node's home (found again at teardown).
NODE_HOME_ENV = "SKY_AIRFLOW_NODE_HOME"

PENDING = "PENDING"
SETTING_UP = "SETTING_UP"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
FAILED_SETUP = "FAILED_SETUP"
CANCELLED = "CANCELLED"
LOST = "LOST"
TERMINAL = frozenset({SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED})

DEFAULT_GRACE = 10.0
POLL = 0.05


# ---- small file helpers ----
def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Write `text` to a temp file next to `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def normalize_returncode(code: int) -> int:
    """Map Python's "-N: killed by signal N" to the shell convention 128+N."""
    return 128 - code if code < 0 else code


# ---- liveness ----
def pid_alive(pid: int, needle: str | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, when /proc tells, its command line holds `needle`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z":
            return False
        if needle is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle.encode() not in f.read().split(b"\0"):
                    return False  # the pid was reused by another program
    except (OSError, ValueError):
        pass  # no /proc (macOS): trust kill(0)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = group_members(pgid)
    return True if members is None else any(True for _ in members)  # no /proc: cannot tell zombies


def group_members(pgid: int) -> Iterator[int] | None:
    """Pids of the live (non-zombie) members of process group `pgid`, read from /proc; None when
    there is no /proc (macOS)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None

    def scan() -> Iterator[int]:
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                fields = stat[stat.rindex(b")") + 2 :].split()
                if int(fields[2]) == pgid and fields[0] != b"Z":
                    yield int(entry)
            except (OSError, ValueError, IndexError):
                continue

    return scan()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_owned_group(pgid: int, sig: int, home: str) -> None:
    """Signal the live members of process group `pgid` that were started for node `home`.

    Pids are reused (pid_max may be 32768), so a group id read from a job's files may now name
    someone else's processes: only members whose environment carries this node's marker are hit.
    """
    members = group_members(pgid)
    if members is None:  # no /proc (macOS): cannot tell, fall back to the group
        _killpg(pgid, sig)
        return
    needle, base = f"{NODE_HOME_ENV}=".encode(), home.rstrip("/") + "/"
    for pid in members:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                marks = [v[len(needle) :].decode("utf-8", "replace") for v in f.read().split(b"\0") if v.startswith(needle)]
        except OSError:
            continue
        if marks and (marks[0] == home or marks[0].startswith(base)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


# ---- state ----
def job_state(jobdir: str) -> dict[str, Any]:
    """Status, exit code and pid of a job, reading its files (LOST when the driver vanished)."""
    job_id = os.path.basename(os.path.normpath(jobdir))
    status = _read(os.path.join(jobdir, STATUS_FILE))
    if status is None:
        return {"job_id": job_id, "status": None, "exit_code": None, "pid": None}
    exit_code = _read_int(os.path.join(jobdir, EXIT_CODE_FILE))
    pid = _read_int(os.path.join(jobdir, PID_FILE))
    if status not in TERMINAL and pid is not None and not pid_alive(pid, jobdir):
        if exit_code is None:
            status = LOST
        elif os.path.exists(os.path.join(jobdir, CANCEL_FILE)):
            status = CANCELLED  # the driver died between writing exit_code and status
        elif exit_code == 0:
            status = SUCCEEDED
        else:
            status = FAILED_SETUP if status == SETTING_UP else FAILED
    return {"job_id": job_id, "status": status, "exit_code": exit_code, "pid": pid}


# ---- ssh worker nodes ----
def _is_remote(node: dict[str, Any]) -> bool:
    """An ssh node other than the head (the driver runs on the head: rank 0 is local to it)."""
    return node.get("kind") == "ssh" and node.get("rank") != 0


# Runs on an ssh worker (python3 -I -S -c, stdlib only, Python 3.6+). argv[1]: JSON {script, cwd,
# grace, marker?, hash?}; stdin: one JSON line of environment, then the lifeline (EOF = stop).
_SSH_NODE_MAIN = r"""
import json, os, signal, subprocess, sys, threading, time
a = json.loads(sys.argv[1])
env = dict(os.environ)
env.update(json.loads(sys.stdin.buffer.readline().decode() or "{}"))
out = sys.stdout.buffer
def rd(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None
if a.get("marker") and rd(a["marker"]) == a["hash"]:
    sys.exit(0)
if not os.path.isdir(a["cwd"]):
    os.makedirs(a["cwd"])
p = subprocess.Popen(["bash", a["script"]], cwd=a["cwd"], env=env, stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
def watch():
    try:
        sys.stdin.buffer.read()
    except Exception:
        pass
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except OSError:
        return
    end = time.time() + float(a.get("grace", 10))
    while time.time() < end and p.poll() is None:
        time.sleep(0.05)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
def pump():
    fd = p.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out.write(chunk)
        out.flush()
threading.Thread(target=watch, daemon=True).start()
t = threading.Thread(target=pump, daemon=True)
t.start()
code = p.wait()
t.join(2.0)
code = 128 - code if code < 0 else code
if code == 0 and a.get("marker"):
    tmp = a["marker"] + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(a["hash"] + "\n")
    os.replace(tmp, a["marker"])
out.flush()
os._exit(code)
"""


# ---- the driver ----
class _Log:
    """The job's combined log: appended line by line, flushed after every write."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f: BinaryIO = os.fdopen(fd, "ab", buffering=0)
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._f.write(data)

    def note(self, text: str) -> None:
        self.write(f"[sky] {text}\n".encode())


def _pump(fd: int, log: _Log, prefix: bytes, line_mode: bool) -> None:
    """Copy a node's output into the log; in line mode prefix and write whole lines."""
    partial = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        if not line_mode:
            log.write(chunk)
            continue
        partial += chunk
        cut = partial.rfind(b"\n") + 1
        if cut:
            log.write(b"".join(prefix + line + b"\n" for line in partial[: cut - 1].split(b"\n")))
            partial = partial[cut:]
        if len(partial) > 65536:
            log.write(prefix + partial)
            partial = b""
    if partial:
        log.write(prefix + partial + (b"\n" if line_mode else b""))
    with contextlib.suppress(OSError):
        os.close(fd)


class Driver:
    """Runs setup (where needed) and then the job on every node of the cluster."""

    def __init__(self, jobdir: str) -> None:
        self.jobdir = jobdir
        with open(os.path.join(jobdir, SPEC_FILE), encoding="utf-8") as f:
            self.spec: dict[str, Any] = json.load(f)
        with open(os.path.join(jobdir, ENV_FILE), encoding="utf-8") as f:
            self.env: dict[str, str] = json.load(f)
        self.nodes: list[dict[str, Any]] = self.spec["nodes"]
        self.grace = float(self.spec.get("grace_seconds", DEFAULT_GRACE))
        self.cancelled = False
        self.log = _Log(os.path.join(jobdir, LOG_FILE))

    def _path(self, name: str) -> str:
        return os.path.join(self.jobdir, name)

    def set_status(self, status: str) -> None:
        write_atomic(self._path(STATUS_FILE), status + "\n")

    def finish(self, exit_code: int, status: str) -> int:
        write_atomic(self._path(EXIT_CODE_FILE), f"{exit_code}\n")
        self.set_status(status)
        return exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.cancelled = True

    def _cancel_requested(self) -> bool:
        if not self.cancelled and os.path.exists(self._path(CANCEL_FILE)):
            self.cancelled = True
        if self.cancelled:
            with contextlib.suppress(ValueError, TypeError):
                self.grace = float(_read(self._path(CANCEL_FILE)) or self.grace)
        return self.cancelled

    def _node_env(self, node: dict[str, Any], setup: bool, base: Any = os.environ) -> dict[str, str]:
        env = {**base, **self.env, **(node.get("env") or {})}
        env[NODE_HOME_ENV] = node["home"]
        env["SKYPILOT_NODE_RANK"] = str(node["rank"])
        if setup:
            env["SKYPILOT_SETUP_NODE_RANK"] = str(node["rank"])
            env["SKYPILOT_SETUP_NODE_IPS"] = env.get("SKYPILOT_NODE_IPS", "")
        return env

    def _spawn(self, node: dict[str, Any], script: str, setup: bool) -> subprocess.Popen[bytes]:
        kind = node.get("kind", "local")
        if _is_remote(node):
            return self._spawn_ssh(node, script, setup)
        if kind not in ("local", "ssh"):  # an ssh head node (rank 0) is this machine
            raise RuntimeError(f"job driver cannot reach node kind {kind!r}")
        workdir = node["workdir"]
        os.makedirs(workdir, exist_ok=True)
        return subprocess.Popen(
            ["bash", os.path.join(node["job_dir"], script)],
            cwd=workdir,
            env=self._node_env(node, setup),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,  # own process group: cancel kills the node's whole tree
        )

    def _spawn_ssh(self, node: dict[str, Any], script: str, setup: bool) -> subprocess.Popen[bytes]:
        """Start `script` on a worker over the ``ssh`` binary; its stdin pipe is the node's lifeline.

        The environment travels as one JSON line on stdin (never on a command line). The remote
        helper runs the script in its own process group and stops it (SIGTERM, SIGKILL after the
        grace period) when its stdin reaches EOF: this driver closed it, or died.
        """
        sshdir = os.path.join(self.nodes[0]["home"], SKY_DIR, SSH_DIR)
        args = {
            "script": os.path.join(node["job_dir"], script),
            "cwd": node["workdir"],
            "grace": self.grace,
        }
        if setup and self.spec.get("setup_hash"):
            args["marker"] = os.path.join(node["home"], SKY_DIR, SETUP_MARKER)
            args["hash"] = self.spec["setup_hash"]
        remote = shlex.join(
            [node.get("python") or "python3", "-I", "-S", "-c", _SSH_NODE_MAIN, json.dumps(args)]
        )
        argv = [
            "ssh", "-F", "/dev/null", "-T", "-p", str(node.get("port") or 22), "-l", node["user"],
            "-i", os.path.join(sshdir, node.get("key_name") or "id"),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + os.path.join(sshdir, SSH_KNOWN_HOSTS),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "CheckHostIP=no", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "--", node["host"], "exec " + remote,
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            cwd=self.jobdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        assert proc.stdin is not None
        payload = self._node_env(node, setup, base={})
        proc.stdin.write((json.dumps(payload) + "\n").encode())
        proc.stdin.flush()
        return proc

    def _run_phase(self, nodes: list[dict[str, Any]], script: str, setup: bool) -> int | None:
        """Run `script` on `nodes` in parallel; first non-zero exit code (0), None if cancelled."""
        multinode = len(self.nodes) > 1
        procs: dict[int, subprocess.Popen[bytes]] = {}
        pumps = []
        children = self._path(CHILDREN_FILE)
        try:
            for node in nodes:
                proc = self._spawn(node, script, setup)
                procs[node["rank"]] = proc
                # Recorded at once: if the driver dies, `cancel` kills these groups itself.
                write_atomic(children, json.dumps([p.pid for p in procs.values()]))
                prefix = f"(worker{node['rank']}, ip={node['ip']}) ".encode() if node["rank"] else b""
                assert proc.stdout is not None
                fd = os.dup(proc.stdout.fileno())
                proc.stdout.close()
                t = threading.Thread(target=_pump, args=(fd, self.log, prefix, multinode), daemon=True)
                t.start()
                pumps.append(t)
        except BaseException:
            self._terminate(procs)
            raise
        codes: dict[int, int] = {}
        first_failure: int | None = None
        while len(codes) < len(procs):
            if self._cancel_requested():
                self._terminate(procs)
                self._join(pumps, timeout=0.5)
                return None
            for rank, proc in procs.items():
                if rank in codes or proc.poll() is None:
                    continue
                codes[rank] = normalize_returncode(proc.returncode)
                if codes[rank] != 0 and first_failure is None:
                    first_failure = codes[rank]
                    if multinode and len(codes) < len(procs) and self.spec.get("fail_fast", True):
                        self.log.note(f"node {rank} exited with code {codes[rank]}; stopping the other nodes")
                        self._terminate(procs)
            time.sleep(POLL)
        self._join(pumps)
        return first_failure or 0

    @staticmethod
    def _join(pumps: list[threading.Thread], timeout: float = 2.0) -> None:
        # A background process left behind may hold the pipe open: do not wait for it forever.
        deadline = time.monotonic() + timeout
        for t in pumps:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _terminate(self, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        """SIGTERM every node's process group, SIGKILL what is left after the grace period.

        An ssh node is stopped through its lifeline (EOF on stdin): its remote helper applies
        the same grace period, and the local ssh client exits once the remote side is done.
        """
        remote = False
        for proc in procs.values():
            if proc.stdin is not None:
                remote = True
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            else:
                _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace + (SSH_STOP_SLACK if remote else 0.0)
        while time.monotonic() < deadline:
            if all(proc.poll() is not None and not group_alive(proc.pid) for proc in procs.values()):
                break
            time.sleep(POLL)
        for proc in procs.values():
            _killpg(proc.pid, signal.SIGKILL)
        for proc in procs.values():
            proc.wait()

    def _setup(self) -> int | None:
        """Run setup on nodes whose marker is stale; exit code, or None if cancelled."""
        want = self.spec.get("setup_hash")
        if not want:
            return 0
        lock_path = os.path.join(self.nodes[0]["home"], SKY_DIR, SETUP_LOCK)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one setup at a time per cluster
            # ssh workers check (and write) their own marker remotely: always handed to the phase.
            stale = [
                n
                for n in self.nodes
                if _is_remote(n) or _read(os.path.join(n["home"], SKY_DIR, SETUP_MARKER)) != want
            ]
            if not stale:
                return 0
            self.set_status(SETTING_UP)
            code = self._run_phase(stale, SETUP_SCRIPT, setup=True)
            if code == 0:
                for node in (n for n in stale if not _is_remote(n)):
                    write_atomic(os.path.join(node["home"], SKY_DIR, SETUP_MARKER), want + "\n", 0o644)
            return code

    def _gpus_in_use(self, jobs_root: str) -> tuple[float, list[str]]:
        """Accelerators held by the cluster's other admitted, unfinished jobs."""
        used, holders = 0.0, []
        for name in os.listdir(jobs_root):
            other = os.path.join(jobs_root, name)
            if other == self.jobdir or not os.path.exists(os.path.join(other, ADMITTED_FILE)):
                continue
            if job_state(other)["status"] in TERMINAL or job_state(other)["status"] == LOST:
                continue
            try:
                with open(os.path.join(other, SPEC_FILE), encoding="utf-8") as f:
                    used += float(json.load(f).get("gpu_demand") or 0)
            except (OSError, ValueError):
                continue
            holders.append(name)
        return used, holders

    def _admit(self) -> bool:
        """Queue until the job's accelerators are free on the cluster (no oversubscription).

        Jobs without an accelerator demand, or on clusters of unknown capacity, start at once.
        Returns False when the job was cancelled while waiting.
        """
        demand = float(self.spec.get("gpu_demand") or 0)
        capacity = self.spec.get("gpu_capacity")
        if demand <= 0 or capacity is None:
            return True
        jobs_root = os.path.dirname(self.jobdir)
        noted = False
        while not self._cancel_requested():
            with open(os.path.join(jobs_root, SCHED_LOCK), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                used, holders = self._gpus_in_use(jobs_root)
                if used + demand <= float(capacity) + 1e-9:
                    write_atomic(self._path(ADMITTED_FILE), f"{demand}\n", 0o644)
                    if noted:
                        self.log.note(f"accelerators free: starting ({demand:g} of {float(capacity):g})")
                    return True
            if not noted:
                self.log.note(
                    f"queued: needs {demand:g} accelerator(s), {used:g} of {float(capacity):g} held by job(s) "
                    + ", ".join(sorted(holders))
                )
                noted = True
            time.sleep(0.5)
        return False

    def main(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            if not self._admit():
                return self.finish(130, CANCELLED)
            code = self._setup()
            if code is None:
                return self.finish(130, CANCELLED)
            if code != 0:
                self.log.note(f"setup failed with exit code {code}")
                return self.finish(code, FAILED_SETUP)
            if not self.spec.get("has_run", True):
                return self.finish(0, SUCCEEDED)
            if self._cancel_requested():
                return self.finish(130, CANCELLED)
            self.set_status(RUNNING)
            code = self._run_phase(self.nodes, RUN_SCRIPT, setup=False)
            if code is None:
                return self.finish(130, CANCELLED)
            return self.finish(code, SUCCEEDED if code == 0 else FAILED)
        except Exception as exc:
            self.log.note(f"job driver error: {type(exc).__name__}: {exc}")
            return self.finish(255, FAILED)


# ---- subcommands ----
def cmd_start(jobdir: str) -> dict[str, Any]:
    jobdir = os.path.abspath(jobdir)
    out_fd = os.open(os.path.join(jobdir, DRIVER_OUT), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "run", jobdir],
            cwd=jobdir,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(out_fd)
    write_atomic(os.path.join(jobdir, PID_FILE), f"{proc.pid}\n")
    proc.returncode = 0  # never waited for here: it outlives us, keep Popen.__del__ quiet
    return {"pid": proc.pid}


def cancel_jobs(jobdirs: list[str], grace: float = DEFAULT_GRACE) -> list[dict[str, Any]]:
    """Ask each live job's driver to stop, wait, and force it when the driver does not answer."""
    live = []
    for jobdir in jobdirs:
        state = job_state(jobdir)
        if state["status"] is None or state["status"] in TERMINAL:
            continue
        write_atomic(os.path.join(jobdir, CANCEL_FILE), f"{grace}\n")
        if state["pid"] is not None and state["status"] != LOST:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(state["pid"], signal.SIGTERM)
        live.append(jobdir)
    deadline = time.monotonic() + grace + 5.0
    pending = list(live)
    while pending and time.monotonic() < deadline:
        pending = [j for j in pending if job_state(j)["status"] not in TERMINAL | {LOST}]
        if pending:
            time.sleep(POLL)
    for jobdir in live:
        state = job_state(jobdir)
        if state["status"] in TERMINAL:
            continue
        # The driver is gone or stuck: kill its group and its children's groups ourselves.
        pids = [state["pid"]] if state["pid"] else []
        with contextlib.suppress(ValueError, TypeError):
            pids += json.loads(_read(os.path.join(jobdir, CHILDREN_FILE)) or "[]")
        home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(jobdir))))
        for pgid in pids:
            kill_owned_group(pgid, signal.SIGKILL, home)
        if _read(os.path.join(jobdir, EXIT_CODE_FILE)) is None:
            write_atomic(os.path.join(jobdir, EXIT_CODE_FILE), "137\n")
        write_atomic(os.path.join(jobdir, STATUS_FILE), CANCELLED + "\n")
    return [job_state(j) for j in jobdirs]


def list_jobs(home: str) -> list[dict[str, Any]]:
    root = os.path.join(home, SKY_DIR, JOBS_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [job_state(os.path.join(root, n)) for n in names if os.path.isdir(os.path.join(root, n))]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = args[0], args[1:]
    if cmd == "run":
        return Driver(os.path.abspath(rest[0])).main()
    if cmd == "start":
        result: Any = cmd_start(rest[0])
    elif cmd == "status":
        result = {"jobs": [job_state(os.path.abspath(j)) for j in rest]}
    elif cmd == "cancel":
        grace = DEFAULT_GRACE
        if rest[:1] == ["--grace"]:
            grace, rest = float(rest[1]), rest[2:]
        result = {"jobs": cancel_jobs([os.path.abspath(j) for j in rest], grace)}
    elif cmd == "list":
        result = {"jobs": list_jobs(rest[0])}
    else:
        print(f"unknown subcommand {cmd!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
