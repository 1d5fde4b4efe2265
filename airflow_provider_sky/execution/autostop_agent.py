"""Autostop agent: stops (or tears down) an idle cluster from its head node, with nobody watching.

Standard library only (Python 3.8 compatible), like `job_driver`: `provision.autostop` copies it to
``<home>/.sky/bin/`` and starts it detached with ``python -I -S``. It needs neither Airflow nor the
worker that launched the cluster. Subcommands print one JSON line:

    start <home>       start ``run <home>`` detached unless this version already runs: {"pid", "started"}
    run <home>         the agent loop (one per node home: flock on autostop.lock)
    status <home>      {"running", "pid", "config", "idle_seconds", "busy"}
    stop <home>        stop the agent (autostop disabled): {"stopped": bool}

Files under ``<home>/.sky/``: ``autostop.json`` (config, re-read every tick), ``autostop.pid``,
``autostop.lock``, ``autostop.log`` (its decisions). Config keys: ``idle_seconds``, ``down``,
``interval_seconds``, ``startup_grace_seconds``, ``set_at`` (epoch seconds, stamped by ``start`` with
the node's clock when the installer leaves it null; the idle clock never starts before it, so
re-installing resets the timer), ``cluster_name`` and ``action``:

- ``{"kind": "command", "command": "sudo shutdown -h now", "workers": [node_spec, ...]}``: run the
  command on each ssh worker (through the job driver's ssh files), then on this node. A cloud VM
  turns the shutdown into stop or terminate according to its shutdown behaviour.
- ``{"kind": "release", "grace": s}``: a shared host (SSH pool) is never shut down; end this
  node's jobs and processes and write ``autostopped.json`` for the broker to free the allocation.
- ``{"kind": "local", "cluster_dir": ..., "lock_file": ..., "grace": s}``: the embedded backend.
  Cancel every job of every node, kill the cluster's processes (except this agent), then mark
  ``cluster.json`` STOPPED, or with ``down`` remove the cluster directory.

Idle means: no job directory under ``<home>/.sky/jobs/`` with a non-terminal status whose driver
lives (a just-submitted job without a pid counts as busy for `PENDING_GRACE` seconds), for
``idle_seconds`` since the last job activity (mtime of its status / exit_code / pid files), since
``set_at`` and since ``set_at + startup_grace_seconds``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

SKY_DIR = ".sky"
JOBS_DIR = "jobs"
CONFIG_FILE = "autostop.json"
PID_FILE = "autostop.pid"
LOCK_FILE = "autostop.lock"
LOG_FILE = "autostop.log"
AGENT_OUT = "autostop.out"
RELEASE_MARKER = "autostopped.json"

#: Same marker as `job_driver.NODE_HOME_ENV`: every process started for a node carries it.
NODE_HOME_ENV = "SKY_AIRFLOW_NODE_HOME"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED", "LOST"})
#: A job with a status but no driver pid yet counts as busy for this long (submit in progress).
PENDING_GRACE = 120.0
#: After a failed action, wait at least this long before trying again.
RETRY_SECONDS = 30.0
DEFAULT_INTERVAL = 30.0


# ---- small helpers ----
def _sky(home: str, name: str) -> str:
    return os.path.join(home, SKY_DIR, name)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
                    return False
    except (OSError, ValueError):
        pass
    return True


def load_config(home: str) -> dict[str, Any] | None:
    text = _read(_sky(home, CONFIG_FILE))
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class Log:
    """Append-only decision log with timestamps."""

    def __init__(self, home: str) -> None:
        self.path = _sky(home, LOG_FILE)

    def __call__(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with contextlib.suppress(OSError), open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp}Z [autostop pid {os.getpid()}] {text}\n")


# ---- activity ----
def job_activity(home: str, now: float | None = None) -> tuple[list[str], float | None]:
    """(ids of live jobs, epoch of the last job activity) from the job directories of `home`."""
    now = time.time() if now is None else now
    root = os.path.join(home, SKY_DIR, JOBS_DIR)
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return [], None
    busy: list[str] = []
    last: float | None = None
    for name in names:
        jdir = os.path.join(root, name)
        status = _read(os.path.join(jdir, "status"))
        if status is None:
            continue
        stamps = [t for t in (_mtime(os.path.join(jdir, f)) for f in ("status", "exit_code", "pid")) if t]
        if stamps:
            last = max([last or 0.0, *stamps])
        if status in TERMINAL:
            continue
        pid_text = _read(os.path.join(jdir, "pid"))
        if pid_text and pid_text.isdigit():
            if pid_alive(int(pid_text), jdir):
                busy.append(name)
        elif stamps and now - max(stamps) < PENDING_GRACE:
            busy.append(name)  # submitted, driver not started yet
    return busy, last


def idle_state(home: str, config: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """How long the node has been idle, whether it is busy, and whether autostop is due."""
    now = time.time() if now is None else now
    busy, last_job = job_activity(home, now)
    set_at = float(config.get("set_at") or now)
    since = max(set_at, last_job or 0.0)
    idle_for = 0.0 if busy else max(0.0, now - since)
    threshold = float(config.get("idle_seconds") or 0.0)
    held = now < set_at + float(config.get("startup_grace_seconds") or 0.0)
    return {
        "busy": busy,
        "idle_seconds": idle_for,
        "threshold": threshold,
        "held": held,
        "due": not busy and not held and idle_for >= threshold,
    }


# ---- actions ----
def _ssh_argv(head_home: str, node: dict[str, Any], command: str) -> list[str]:
    """ssh to a worker with the head node's driver files (same options as the job driver)."""
    sshdir = os.path.join(head_home, SKY_DIR, "ssh")
    return [
        "ssh", "-F", "/dev/null", "-T", "-p", str(node.get("port") or 22), "-l", node["user"],
        "-i", os.path.join(sshdir, node.get("key_name") or "id"),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=" + os.path.join(sshdir, "known_hosts"),
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30",
        "--", node["host"], command,
    ]  # fmt: skip


def action_command(home: str, action: dict[str, Any], log: Log) -> bool:
    """Run the shutdown command on every ssh worker, then here; True when this node's command ran."""
    command = action.get("command") or "sudo shutdown -h now"
    for node in action.get("workers") or []:
        if node.get("kind") != "ssh":
            continue
        try:
            res = subprocess.run(
                _ssh_argv(home, node, command), stdin=subprocess.DEVNULL, capture_output=True, timeout=120
            )
            log(f"worker {node.get('host')}: {command!r} exited {res.returncode} {res.stderr[-300:]!r}")
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"worker {node.get('host')}: {command!r} failed: {exc}")
    try:
        res = subprocess.run(
            ["bash", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"head: {command!r} failed: {exc}")
        return False
    log(f"head: {command!r} exited {res.returncode} {res.stderr[-300:]!r}")
    return res.returncode == 0


def _kill_jobs(home: str, grace: float) -> None:
    """Cancel the live jobs of a node: cancel file + SIGTERM to driver, then SIGKILL the groups."""
    root = os.path.join(home, SKY_DIR, JOBS_DIR)
    try:
        names = os.listdir(root)
    except OSError:
        return
    groups: list[tuple[str, list[int]]] = []
    for name in names:
        jdir = os.path.join(root, name)
        status = _read(os.path.join(jdir, "status"))
        if status is None or status in TERMINAL:
            continue
        with contextlib.suppress(OSError):
            write_atomic(os.path.join(jdir, "cancel"), f"{grace}\n")
        pids = []
        pid_text = _read(os.path.join(jdir, "pid"))
        if pid_text and pid_text.isdigit():
            pids.append(int(pid_text))
            if pid_alive(int(pid_text), jdir):  # not a reused pid
                with contextlib.suppress(OSError):
                    os.kill(int(pid_text), signal.SIGTERM)
        with contextlib.suppress(ValueError, TypeError):
            pids += [int(p) for p in json.loads(_read(os.path.join(jdir, "children")) or "[]")]
        groups.append((jdir, pids))
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(
        _read(os.path.join(j, "status")) not in TERMINAL for j, _ in groups
    ):
        time.sleep(0.05)
    for jdir, pids in groups:
        for pgid in pids:
            kill_owned_group(pgid, signal.SIGKILL, home)
        if _read(os.path.join(jdir, "status")) not in TERMINAL:
            with contextlib.suppress(OSError):
                if _read(os.path.join(jdir, "exit_code")) is None:
                    write_atomic(os.path.join(jdir, "exit_code"), "137\n")
                write_atomic(os.path.join(jdir, "status"), "CANCELLED\n")


def kill_owned_group(pgid: int, sig: int, home: str) -> None:
    """Signal the live members of process group `pgid` that were started for node `home`.

    Pids are reused (pid_max may be 32768), so a group id read from a job's files may now name
    someone else's processes: only members whose environment carries this node's marker are hit.
    """
    members = group_members(pgid)
    if members is None:  # no /proc (macOS): cannot tell, fall back to the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
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


def group_members(pgid: int) -> Iterator[int] | None:
    """Live (non-zombie) members of process group `pgid` from /proc; None without /proc. (The same
    as job_driver.group_members: both scripts run on nodes standalone and cannot import each other.)"""
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


def _marked_pids(prefix: str) -> list[int]:
    """Pids (other than ours) whose environment marks them as started for a node under `prefix`."""
    needle = (f"{NODE_HOME_ENV}=").encode()
    base = prefix.rstrip("/") + "/"
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(needle):
                home = var[len(needle) :].decode("utf-8", "replace")
                if home == prefix or home.startswith(base):
                    found.append(int(entry))
                break
    return found


def _kill_marked(prefix: str, grace: float) -> None:
    pids = _marked_pids(prefix)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def action_local(action: dict[str, Any], down: bool, log: Log) -> bool:
    """Stop (or remove) a local-backend cluster under the backend's own per-cluster lock."""
    cdir = action["cluster_dir"]
    grace = float(action.get("grace", 5.0))
    meta_path = os.path.join(cdir, "cluster.json")
    lock_file = action.get("lock_file")
    lock = open(lock_file, "a") if lock_file else None  # noqa: SIM115
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        text = _read(meta_path)
        if text is None:
            log(f"cluster directory {cdir} is gone: nothing to do")
            return True
        try:
            nodes = sorted(n for n in os.listdir(cdir) if n.startswith("node-"))
        except OSError:
            nodes = []
        for node in nodes:
            _kill_jobs(os.path.join(cdir, node), grace)
        _kill_marked(cdir, grace)
        if down:
            log(f"removing {cdir}")
            shutil.rmtree(cdir, ignore_errors=True)
            if lock_file:
                with contextlib.suppress(OSError):
                    os.unlink(lock_file)
        else:
            meta = json.loads(text)
            meta["status"] = "STOPPED"
            meta["stopped_by"] = "autostop"
            meta["stopped_at"] = time.time()
            write_atomic(meta_path, json.dumps(meta, indent=1), 0o644)
            log(f"marked {meta_path} STOPPED")
        return True
    finally:
        if lock is not None:
            lock.close()


def action_release(home: str, action: dict[str, Any], down: bool, log: Log) -> bool:
    """Shared hosts (SSH pools): end this node's jobs and processes, leave a marker for the broker.

    The host itself keeps running; the broker sees ``autostopped.json`` (through the cloud's
    ``status``) and frees the allocation in its state store.
    """
    grace = float(action.get("grace", 5.0))
    _kill_jobs(home, grace)
    _kill_marked(home, grace)
    marker = _sky(home, RELEASE_MARKER)
    write_atomic(marker, json.dumps({"at": time.time(), "down": down}), 0o644)
    log(f"jobs ended, wrote {marker}: the broker frees the allocation")
    return True


def act(home: str, config: dict[str, Any], log: Log) -> bool:
    """Carry out the configured action; True when the node should be (or is) going away."""
    action = config.get("action") or {}
    down = bool(config.get("down"))
    kind = action.get("kind")
    if kind == "local":
        return action_local(action, down, log)
    if kind == "command":
        return action_command(home, action, log)
    if kind == "release":
        return action_release(home, action, down, log)
    log(f"no usable action configured ({kind!r}): not stopping")
    return False


# ---- the loop ----
def _lock_path(home: str) -> str:
    return _sky(home, LOCK_FILE)


def run(home: str) -> int:
    """Agent loop: hold the lock, re-read the config every tick, act once idle long enough."""
    os.makedirs(os.path.join(home, SKY_DIR), exist_ok=True)
    lock = open(_lock_path(home), "a")  # noqa: SIM115 - held for the process lifetime
    deadline = time.monotonic() + 2.0  # `status` probes the lock briefly: do not mistake it for an agent
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                return 0  # another agent runs for this node
            time.sleep(0.05)
    log = Log(home)
    write_atomic(_sky(home, PID_FILE), f"{os.getpid()}\n", 0o644)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    last_key = None
    last_busy = None
    log(f"agent started ({os.path.abspath(__file__)})")
    while not stop:
        config = load_config(home)
        if config is None or config.get("idle_seconds") is None or float(config["idle_seconds"]) < 0:
            log("autostop disabled: agent exits")
            return 0
        key = (config.get("idle_seconds"), bool(config.get("down")), config.get("set_at"))
        if key != last_key:
            mode = "down" if config.get("down") else "stop"
            every = config.get("interval_seconds", DEFAULT_INTERVAL)
            log(
                f"config: idle {config['idle_seconds']}s, {mode}, interval {every}s, set at {config.get('set_at')}"
            )
            last_key = key
        state = idle_state(home, config)
        busy = bool(state["busy"])
        if busy != last_busy:
            log(f"busy: jobs {','.join(state['busy'])}" if busy else "idle: no live job")
            last_busy = busy
        interval = max(0.05, float(config.get("interval_seconds") or DEFAULT_INTERVAL))
        if state["due"]:
            what = "down" if config.get("down") else "stop"
            log(f"idle for {state['idle_seconds']:.1f}s >= {state['threshold']:.1f}s: {what} the cluster")
            if act(home, config, log):
                log(f"autostop done ({what})")
                return 0
            interval = max(interval, RETRY_SECONDS)
        deadline = time.monotonic() + interval
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.2, interval))
    log("agent stopped by signal")
    return 0


def running_pid(home: str) -> int | None:
    """Pid of the live agent of `home` (whose lock is held), else None."""
    try:
        lock = open(_lock_path(home), "a")  # noqa: SIM115
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            text = _read(_sky(home, PID_FILE))
            return int(text) if text and text.isdigit() else -1
        return None


def _is_agent(pid: int) -> bool:
    """Whether `pid` is an autostop agent's ``run`` process (guards against reused pids)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pidfile
    return b"run" in argv and any(os.path.basename(a).startswith(b"autostop_agent") for a in argv)


def cmd_stop(home: str, timeout: float = 10.0) -> dict[str, Any]:
    pid = running_pid(home)
    if pid is None or pid < 0 or not _is_agent(pid):
        return {"stopped": False}
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(home) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if running_pid(home) is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return {"stopped": True, "pid": pid}


def cmd_start(home: str) -> dict[str, Any]:
    """Start the agent unless one of this file's version already runs (an older one is replaced)."""
    home = os.path.abspath(home)
    me = os.path.abspath(__file__)
    config = load_config(home)
    if config is not None and config.get("set_at") is None:  # stamp with the node's own clock
        config["set_at"] = time.time()
        write_atomic(_sky(home, CONFIG_FILE), json.dumps(config, indent=1))
        with contextlib.suppress(OSError):  # a fresh install: the node is in use again
            os.unlink(_sky(home, RELEASE_MARKER))
    pid = running_pid(home)
    if pid is not None and pid > 0 and pid_alive(pid, me):
        return {"pid": pid, "started": False}
    if pid is not None:
        cmd_stop(home)
    out_fd = os.open(_sky(home, AGENT_OUT), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", me, "run", home],
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(out_fd)
    deadline = time.monotonic() + 10.0  # return once it holds the lock: sequential starts never race
    while proc.poll() is None and running_pid(home) != proc.pid and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.returncode is not None:  # lost the lock to a concurrent start: report the winner
        return {"pid": running_pid(home), "started": False}
    proc.returncode = 0  # never waited for: it outlives us
    return {"pid": proc.pid, "started": True}


def cmd_status(home: str) -> dict[str, Any]:
    config = load_config(home)
    pid = running_pid(home)
    result: dict[str, Any] = {"running": pid is not None, "pid": pid, "config": config}
    if config is not None and config.get("idle_seconds") is not None:
        state = idle_state(home, config)
        result.update(idle_seconds=state["idle_seconds"], busy=state["busy"])
    return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, home = args[0], os.path.abspath(args[1])
    if cmd == "run":
        return run(home)
    handlers = {"start": cmd_start, "status": cmd_status, "stop": cmd_stop}
    if cmd not in handlers:
        print(f"unknown subcommand {cmd!r}", file=sys.stderr)
        return 2
    print(json.dumps(handlers[cmd](home)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
