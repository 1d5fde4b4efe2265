"""`SshRunner`: the `CommandRunner` of a remote node, over paramiko.

Connections are shared per host (`ssh_connection.POOL`), kept alive and re-opened after a drop.
Host keys are checked by default (see `ssh_keys`). Commands run through the node's login shell;
`env` values travel on the command line (as the protocol says: no secrets there), while
`write_text` files (0600) carry secrets. Jobs submitted through this runner are started fully
detached by the job driver (own session, stdin closed, output to files), so they outlive the
SSH connection and the submitting process.

Multi-node jobs: the head node's driver reaches the other nodes with the ``ssh`` binary, using
the key and ``known_hosts`` that `install_peer_access` writes under the head's ``.sky/ssh/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shlex
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paramiko

from airflow_provider_sky.execution import job_driver as drv
from airflow_provider_sky.execution import ssh_sftp
from airflow_provider_sky.execution.runner import CommandTimeout, RunResult, StreamCallback
from airflow_provider_sky.execution.ssh_connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE,
    POOL,
    ConnectionPool,
    SshConnection,
    SshTarget,
    parse_jump,
)
from airflow_provider_sky.execution.ssh_keys import (
    HostKeyMode,
    KnownHosts,
    SshError,
    key_fingerprint,
    known_hosts_line,
    load_private_key,
)

log = logging.getLogger(__name__)

#: Seconds the node-side `timeout` waits past the local deadline before killing a command.
_REMOTE_TIMEOUT_SLACK = 2.0

# Kill this user's processes marked with NODE_HOME_ENV at or under a prefix (stdlib only).
_KILL_MARKED = r"""
import os, signal, sys, time
prefix, grace, needle = sys.argv[1].rstrip("/"), float(sys.argv[2]), (sys.argv[3] + "=").encode()
skip = {os.getpid(), os.getppid()}
def find():
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in skip:
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        for v in env:
            if v.startswith(needle):
                h = v[len(needle):].decode("utf-8", "replace").rstrip("/")
                if h == prefix or h.startswith(prefix + "/"):
                    found.append(int(d))
                break
    return found
def kill(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass
pids = find()
kill(pids, signal.SIGTERM)
end = time.time() + grace
while time.time() < end and find():
    time.sleep(0.05)
kill(find(), signal.SIGKILL)
print(len(pids))
"""


class _Lines:
    """Feeds decoded lines of a byte stream to a callback."""

    def __init__(self, stream: StreamCallback | None, lock: threading.Lock) -> None:
        self.stream, self.lock, self.partial = stream, lock, b""

    def feed(self, data: bytes) -> None:
        if self.stream is None:
            return
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            with self.lock:
                self.stream(line.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.stream is not None and self.partial:
            with self.lock:
                self.stream(self.partial.decode("utf-8", "replace"))
        self.partial = b""


class SshRunner:
    """A node reached over SSH with key authentication.

    `home` is the node path under which ``.sky/`` lives: absolute, or relative to the login
    directory (created on first use); default: the login directory. `env` is added to every
    command and job on this node (e.g. ``CUDA_VISIBLE_DEVICES`` of a GPU slot). `known_hosts`
    is a `KnownHosts`, a file path, or None (``~/.ssh/known_hosts``).

    Nodes without a reachable address (a private subnet) are reached through a bastion:
    `jump_host` (``[user@]host[:port]`` or an `SshTarget`; same key and host-key policy) or
    `proxy_command` (OpenSSH ``ProxyCommand`` syntax with ``%h``, ``%p``, ``%r``); see
    `ssh_connection`.
    """

    def __init__(
        self,
        host: str,
        user: str,
        *,
        port: int = 22,
        private_key: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        known_hosts: KnownHosts | str | os.PathLike[str] | None = None,
        strict_host_key_checking: HostKeyMode = True,
        home: str | None = None,
        node_ip: str | None = None,
        python: str = "python3",
        env: Mapping[str, str] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive: int = DEFAULT_KEEPALIVE,
        pool: ConnectionPool | None = None,
        proxy_command: str | None = None,
        jump_host: str | SshTarget | None = None,
    ) -> None:
        if proxy_command and jump_host:
            raise ValueError("set either proxy_command or jump_host, not both")
        jump = parse_jump(jump_host, user) if isinstance(jump_host, str) and jump_host else jump_host or None
        self.target = SshTarget(host, int(port), user, proxy_command or None, jump)
        self._key_text = private_key
        self._key_file = os.fspath(key_file) if key_file is not None else None
        self._pkey: paramiko.PKey | None = None
        if isinstance(known_hosts, KnownHosts):
            self.known_hosts = known_hosts
        elif known_hosts is not None:
            self.known_hosts = KnownHosts(known_hosts)
        else:
            self.known_hosts = KnownHosts.default() if strict_host_key_checking is not False else KnownHosts()
        if strict_host_key_checking not in (True, False, "accept-new"):
            raise ValueError("strict_host_key_checking must be True, False or 'accept-new'")
        if strict_host_key_checking is False:
            log.warning("strict_host_key_checking=False for %s: host keys will NOT be verified", self.target)
        self.host_key_mode: HostKeyMode = strict_host_key_checking
        self._home = home
        self._node_ip = node_ip
        self.python = python
        self.env = dict(env or {})
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.pool = pool or POOL

    def __repr__(self) -> str:
        return f"SshRunner({str(self.target)!r}, home={self._home!r})"

    # ---- identity ----
    @property
    def host(self) -> str:
        return self.target.host

    @property
    def port(self) -> int:
        return self.target.port

    @property
    def user(self) -> str:
        return self.target.user

    @property
    def pkey(self) -> paramiko.PKey:
        if self._pkey is None:
            self._pkey = load_private_key(self._key_text, self._key_file)
        return self._pkey

    def private_key_text(self) -> str:
        """The private key as given (text or file content); for `install_peer_access` only."""
        text = self._key_text
        if text is None and self._key_file is not None:
            with open(os.path.expanduser(self._key_file), encoding="utf-8") as f:
                text = f.read()
        if not text:
            raise ValueError(f"no private key for {self.target}")
        return text if text.endswith("\n") else text + "\n"

    @property
    def key_name(self) -> str:
        """File name of this node's key in the head's ``.sky/ssh/`` (by fingerprint, not secret)."""
        return "id-" + hashlib.sha256(key_fingerprint(self.pkey).encode()).hexdigest()[:16]

    @property
    def node_ip(self) -> str:
        if self._node_ip is None:
            try:
                self._node_ip = socket.gethostbyname(self.host)
            except OSError:
                self._node_ip = self.host
        return self._node_ip

    @property
    def home(self) -> str:
        if self._home is None or not self._home.startswith("/"):
            with self.connection().sftp() as sftp:
                login = sftp.normalize(".")
                home = posixpath.normpath(posixpath.join(login, self._home)) if self._home else login
                ssh_sftp.mkdirs(sftp, home)
            self._home = home
        return self._home

    # ---- connection ----
    def connection(self) -> SshConnection:
        return self.pool.get(
            self.target, self.pkey, self.known_hosts, self.host_key_mode, self.connect_timeout, self.keepalive
        )

    def close(self) -> None:
        """Drop this host's shared connection (the next call reconnects)."""
        self.pool.close(self.target)

    def host_key_line(self) -> str:
        """The verified host key as a known_hosts line."""
        return known_hosts_line(self.host, self.port, self.connection().host_key)

    def resolve(self, path: str | os.PathLike[str]) -> str:
        p = os.fspath(path)
        if p == "~" or p.startswith("~/"):
            p = p[2:]
        return p if p.startswith("/") else posixpath.join(self.home, p)

    def node_spec(self) -> dict[str, Any]:
        """How the head node reaches this node (behind a bastion: by its node IP, directly)."""
        return {
            "kind": "ssh",
            "ip": self.node_ip,
            "home": self.home,
            "host": self.node_ip if self.target.indirect else self.host,
            "port": self.port,
            "user": self.user,
            "python": self.python,
            "key_name": self.key_name,
            "env": dict(self.env),
        }

    # ---- commands ----
    def command_line(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        mark: bool = True,
    ) -> str:
        """The shell command line sent to the node for `run`."""
        inner = ["bash", "-c", cmd] if isinstance(cmd, str) else [os.fspath(a) for a in cmd]
        full_env = {**({drv.NODE_HOME_ENV: self.home} if mark else {}), **self.env, **(env or {})}
        argv = ["env", *(f"{k}={v}" for k, v in full_env.items()), *inner]
        if timeout is not None:
            argv = ["timeout", "-k", "5", f"{timeout + _REMOTE_TIMEOUT_SLACK:g}", *argv]
        return f"cd {shlex.quote(self.resolve(cwd) if cwd else self.home)} && exec {shlex.join(argv)}"

    def run(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
        *,
        mark: bool = True,
    ) -> RunResult:
        line = self.command_line(cmd, env, cwd, timeout, mark)
        chan = self.connection().transport.open_session(timeout=self.connect_timeout)
        try:
            chan.exec_command(line)
            chan.shutdown_write()
            return self._collect(chan, cmd, timeout, stream)
        finally:
            chan.close()

    def _collect(
        self,
        chan: paramiko.Channel,
        cmd: str | Sequence[str],
        timeout: float | None,
        stream: StreamCallback | None,
    ) -> RunResult:
        lock = threading.Lock()
        out, err = _Lines(stream, lock), _Lines(stream, lock)
        out_buf: list[bytes] = []
        err_buf: list[bytes] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            got = False
            if chan.recv_ready():
                data = chan.recv(65536)
                out_buf.append(data)
                out.feed(data)
                got = True
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                err_buf.append(data)
                err.feed(data)
                got = True
            if got:
                delay = 0.001
                continue
            if chan.exit_status_ready() or chan.closed:
                break
            if deadline is not None and time.monotonic() > deadline:
                out.close()
                err.close()
                raise CommandTimeout(cmd, timeout or 0, _dec(out_buf), _dec(err_buf))
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        out.close()
        err.close()
        code = chan.recv_exit_status()
        if code < 0:
            raise SshError(f"connection to {self.target} was lost while running a command")
        return RunResult(code, _dec(out_buf), _dec(err_buf))

    # ---- files ----
    def put(self, local_src: str | os.PathLike[str], remote_dst: str) -> None:
        dst = self.resolve(remote_dst)
        with self.connection().sftp() as sftp:
            copied = ssh_sftp.sync(sftp, Path(local_src).expanduser(), dst)
        log.debug("synced %s to %s:%s (%d files copied)", local_src, self.target, dst, copied)

    def read_bytes(self, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> bytes:
        with self.connection().sftp() as sftp:
            return ssh_sftp.read_range(sftp, self.resolve(path), offset, max_bytes)

    def write_text(self, path: str, text: str, mode: int = 0o600) -> None:
        with self.connection().sftp() as sftp:
            ssh_sftp.write_atomic(sftp, self.resolve(path), text.encode("utf-8"), mode)

    # ---- cleanup ----
    def kill_processes_under(self, prefix: str | None = None, grace: float = 5.0) -> int:
        """Kill this user's processes started for nodes at or under `prefix` (default: home)."""
        argv = [
            self.python,
            "-I",
            "-S",
            "-c",
            _KILL_MARKED,
            prefix or self.home,
            str(grace),
            drv.NODE_HOME_ENV,
        ]
        result = self.run(argv, cwd="/", timeout=grace + 30, mark=False).check("killing node processes")
        return int(result.stdout.strip() or 0)


def _dec(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def install_peer_access(runners: Sequence[SshRunner]) -> None:
    """Let the head node's job driver reach the other nodes with the ``ssh`` binary.

    Writes each worker's private key (0600, named by fingerprint) and the workers' verified host
    keys (``known_hosts``) under the head's ``.sky/ssh/``. No-op for single-node clusters.
    """
    if len(runners) < 2:
        return
    head, workers = runners[0], runners[1:]
    sshdir = f"{head.home}/{drv.SKY_DIR}/{drv.SSH_DIR}"
    written: set[str] = set()
    for worker in workers:
        if worker.key_name not in written:
            head.write_text(f"{sshdir}/{worker.key_name}", worker.private_key_text(), 0o600)
            written.add(worker.key_name)
    lines = sorted({w.host_key_line() for w in workers})
    head.write_text(f"{sshdir}/{drv.SSH_KNOWN_HOSTS}", "\n".join(lines) + "\n", 0o644)
