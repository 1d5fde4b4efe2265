"""Command runners: how the execution layer touches a node.

A `CommandRunner` is the only channel between this process and a node. Everything above it
(jobs, logs, clouds) is written against the protocol, so the local backend
(`SubprocessRunner`) and a remote backend (an SSH runner on paramiko) are interchangeable.

Path rules shared by every runner: a relative path or one starting with ``~/`` is relative to the
node's ``home``; an absolute path is used as is. Secrets never travel on a command line: write
them with `write_text` (mode 0600) and let the node read them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from airflow_provider_sky.execution.job_driver import NODE_HOME_ENV
from airflow_provider_sky.execution.sync import SyncFilter, iter_sync_files

StreamCallback = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    """Outcome of one command: exit code and captured output (decoded UTF-8, with replacement)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self, what: str = "command") -> RunResult:
        """Return self, or raise `CommandError` when the command failed."""
        if self.returncode != 0:
            raise CommandError(what, self)
        return self


class CommandError(RuntimeError):
    """A command on a node exited non-zero."""

    def __init__(self, what: str, result: RunResult) -> None:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"{what} failed with exit code {result.returncode}: {tail}")
        self.result = result


class CommandTimeout(TimeoutError):
    """A command did not finish in time; it (and its process group) was killed."""

    def __init__(self, cmd: str | Sequence[str], timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"command timed out after {timeout:g}s: {cmd!r}")
        self.stdout = stdout
        self.stderr = stderr


@runtime_checkable
class CommandRunner(Protocol):
    """What the execution layer needs from a node (local directory or remote host)."""

    #: IP address of the node as other nodes of the cluster see it.
    node_ip: str
    #: Absolute path of the node's home: the root under which `.sky/` lives.
    home: str
    #: Python interpreter on the node (used to run the stdlib-only job driver).
    python: str

    def run(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
    ) -> RunResult:
        """Run `cmd` (a string is a bash script, a list is an argv) and wait for it.

        `env` is added to the node's environment; do not put secrets in it (a remote runner may
        pass it on a command line). `stream` is called with each output line as it arrives.
        Raises `CommandTimeout` after `timeout` seconds.
        """
        ...

    def put(self, local_src: str | os.PathLike[str], remote_dst: str) -> None:
        """Copy a local file, or a directory tree into `remote_dst` (no deletions).

        Directories skip `.git` and the simple top-level globs of `.skyignore` (or, without it,
        `.gitignore`).
        """
        ...

    def read_bytes(self, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> bytes:
        """Read up to `max_bytes` from `offset` (negative: from the end). Missing file: FileNotFoundError."""
        ...

    def write_text(self, path: str, text: str, mode: int = 0o600) -> None:
        """Atomically write a file with `mode`, creating parent directories (0700)."""
        ...

    def node_spec(self) -> dict[str, Any]:
        """JSON description that lets the head node's job driver start processes on this node."""
        ...


def _normalize_returncode(code: int) -> int:
    """Map "killed by signal N" (negative in Python) to the shell's 128+N."""
    return 128 - code if code < 0 else code


class SubprocessRunner:
    """A node that is a directory on this machine; commands are local subprocesses.

    Commands run in their own process group (killed as a whole on timeout) with cwd inside
    `root_dir` unless told otherwise.
    """

    def __init__(self, root_dir: str | os.PathLike[str], node_ip: str = "127.0.0.1") -> None:
        root = Path(root_dir).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.home = str(root)
        self.node_ip = node_ip
        self.python = sys.executable

    def __repr__(self) -> str:
        return f"SubprocessRunner({self.home!r}, node_ip={self.node_ip!r})"

    def resolve(self, path: str | os.PathLike[str]) -> str:
        """Map a node path (relative, ``~/...`` or absolute) to a local absolute path."""
        p = os.fspath(path)
        if p == "~" or p.startswith("~/"):
            p = p[2:]
        return p if os.path.isabs(p) else os.path.join(self.home, p)

    def node_spec(self) -> dict[str, Any]:
        # A local node is its own little machine: `~` in a job is the node's directory, so jobs
        # neither see nor litter the Airflow user's home, as on a fresh cloud VM.
        return {"kind": "local", "ip": self.node_ip, "home": self.home, "env": {"HOME": self.home}}

    def run(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
    ) -> RunResult:
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else [os.fspath(a) for a in cmd]
        # NODE_HOME_ENV marks every process of this node (the local backend's teardown finds them by it).
        full_env = {**os.environ, NODE_HOME_ENV: self.home, **(env or {})}
        proc = subprocess.Popen(
            argv,
            cwd=self.resolve(cwd) if cwd else self.home,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        lock = threading.Lock()
        out: list[bytes] = []
        err: list[bytes] = []
        threads = [
            threading.Thread(target=_pump, args=(proc.stdout, out, stream, lock), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, err, stream, lock), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            for t in threads:
                t.join(timeout=2)
            raise CommandTimeout(cmd, timeout or 0, _decode(out), _decode(err)) from None
        for t in threads:
            t.join()
        return RunResult(_normalize_returncode(proc.returncode), _decode(out), _decode(err))

    def put(self, local_src: str | os.PathLike[str], remote_dst: str) -> None:
        src = Path(local_src)
        dst = Path(self.resolve(remote_dst))
        if not src.exists():
            raise FileNotFoundError(f"cannot sync {src}: no such file or directory")
        if src.is_file():
            if dst.is_dir():
                dst = dst / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_file(src, dst)
            return
        dst.mkdir(parents=True, exist_ok=True)
        for rel in iter_sync_files(src, SyncFilter.from_dir(src)):
            s, d = src / rel, dst / rel
            if s.is_symlink():
                d.parent.mkdir(parents=True, exist_ok=True)
                if d.is_symlink() or d.exists():
                    d.unlink()
                d.symlink_to(os.readlink(s))
            elif s.is_dir():
                d.mkdir(parents=True, exist_ok=True)
            else:
                d.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(s, d)

    def read_bytes(self, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> bytes:
        with open(self.resolve(path), "rb") as f:
            if offset < 0:
                size = f.seek(0, os.SEEK_END)
                offset = max(0, size + offset)
            f.seek(offset)
            return f.read(max_bytes)

    def write_text(self, path: str, text: str, mode: int = 0o600) -> None:
        target = self.resolve(path)
        parent = os.path.dirname(target)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _copy_file(src: Path, dst: Path) -> None:
    if dst.is_symlink():
        dst.unlink()
    shutil.copy2(src, dst)


def _pump(
    pipe: IO[bytes] | None, sink: list[bytes], stream: StreamCallback | None, lock: threading.Lock
) -> None:
    """Collect a pipe's bytes, calling `stream` once per complete line."""
    if pipe is None:
        return
    partial = b""
    with pipe:
        while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
            sink.append(chunk)
            if stream is None:
                continue
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                with lock:
                    stream(line.decode("utf-8", "replace"))
    if stream is not None and partial:
        with lock:
            stream(partial.decode("utf-8", "replace"))


def _decode(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
