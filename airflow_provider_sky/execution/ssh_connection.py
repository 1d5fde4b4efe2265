"""Shared, keep-alive paramiko connections: one authenticated Transport per (host, port, user, key).

Runners of the same host share the Transport (paramiko multiplexes channels over it, thread-safe)
and one SFTP session guarded by a lock. A dead Transport is replaced on the next use; a forked
child never reuses its parent's connections.

A target may be reached indirectly, like OpenSSH's ``ProxyJump`` / ``ProxyCommand``:

* ``jump``: a bastion `SshTarget`; the pool logs into it (same key, same host-key policy) and
  opens a ``direct-tcpip`` channel to the target through it (shared by every node behind it);
* ``proxy_command``: a shell command whose stdin/stdout is the connection, with ``%h`` (host),
  ``%p`` (port), ``%r`` (user) and ``%%`` substituted (e.g. ``ssh -W %h:%p bastion``,
  ``nc %h %p``). It runs on a socket pair, so timeouts and EOF behave like a TCP socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paramiko

from airflow_provider_sky.execution.ssh_keys import (
    HostKeyError,
    HostKeyMode,
    KnownHosts,
    SshAuthError,
    SshConnectError,
    key_fingerprint,
)

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 20.0
DEFAULT_KEEPALIVE = 15


@dataclass(frozen=True)
class SshTarget:
    """Where to log in, and how to get there (`jump` or `proxy_command`); no secrets."""

    host: str
    port: int
    user: str
    proxy_command: str | None = None
    jump: SshTarget | None = None

    def __str__(self) -> str:
        via = f" via {self.jump}" if self.jump else " via proxy command" if self.proxy_command else ""
        return f"{self.user}@{self.host}:{self.port}{via}"

    @property
    def indirect(self) -> bool:
        return bool(self.jump or self.proxy_command)


def expand_proxy_command(command: str, host: str, port: int, user: str) -> str:
    """OpenSSH-style ``%h`` / ``%p`` / ``%r`` / ``%%`` substitution (values shell-quoted)."""
    values = {"h": shlex.quote(host), "p": str(int(port)), "r": shlex.quote(user), "%": "%"}
    out, i = [], 0
    while i < len(command):
        ch = command[i]
        if ch == "%" and i + 1 < len(command) and command[i + 1] in values:
            out.append(values[command[i + 1]])
            i += 2
            continue
        if ch == "%":
            raise ValueError(
                f"ssh_proxy_command: unknown token {command[i : i + 2]!r} in {command!r}; "
                "use %h (host), %p (port), %r (user) or %% (a literal %)"
            )
        out.append(ch)
        i += 1
    return "".join(out)


def parse_jump(text: str, default_user: str, default_port: int = 22) -> SshTarget:
    """A bastion from ``[user@]host[:port]`` (OpenSSH ``ProxyJump`` form, one hop)."""
    spec = text.strip()
    if not spec or "," in spec or " " in spec:
        raise ValueError(f"ssh_jump_host: {text!r} is not [user@]host[:port] (one bastion)")
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, default_port
    if hostport.startswith("["):  # [v6]:port
        host, _, rest = hostport[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif hostport.count(":") == 1:
        host, raw = hostport.split(":")
        if not raw.isdigit():
            raise ValueError(f"ssh_jump_host: port {raw!r} in {text!r} is not a number")
        port = int(raw)
    return SshTarget(host, port, user or default_user)


class _ProxyProcess:
    """A ProxyCommand running on one end of a socket pair; the other end is the SSH socket."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        ours, theirs = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                stdin=theirs,
                stdout=theirs,
                stderr=self.stderr,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            ours.close()
            self.stderr.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(timeout)
        self.sock = ours

    def error_text(self) -> str:
        """What the command printed on stderr (the end of it)."""
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-500:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


class SshConnection:
    """One authenticated Transport and its shared SFTP session."""

    def __init__(
        self,
        target: SshTarget,
        transport: paramiko.Transport,
        proxy: _ProxyProcess | None = None,
        via: SshConnection | None = None,
    ) -> None:
        self.target = target
        self.transport = transport
        self.proxy = proxy
        self.via = via  # the bastion's connection this one is tunnelled through
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.RLock()

    @property
    def alive(self) -> bool:
        own = self.transport.is_active() and self.transport.is_authenticated()
        return own and (self.via is None or self.via.alive)

    @property
    def peer_ip(self) -> str:
        if self.target.indirect:
            return self.target.host
        return str(self.transport.getpeername()[0])

    @property
    def host_key(self) -> paramiko.PKey:
        return self.transport.get_remote_server_key()

    @contextmanager
    def sftp(self) -> Iterator[paramiko.SFTPClient]:
        """The shared SFTP session, used by one thread at a time."""
        with self._sftp_lock:
            if self._sftp is None or self._sftp.sock.closed:
                self._sftp = paramiko.SFTPClient.from_transport(self.transport)
                if self._sftp is None:  # pragma: no cover - paramiko returns None on channel failure
                    raise SshConnectError(f"cannot open an SFTP session on {self.target}")
            yield self._sftp

    def close(self) -> None:
        """Close the SFTP session, the transport and the proxy (a dead link's errors are ignored)."""
        with self._sftp_lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):  # EOFError/OSError when the link is already gone
                    self._sftp.close()
                self._sftp = None
        self.transport.close()
        if self.proxy is not None:
            self.proxy.close()


def open_connection(
    target: SshTarget,
    pkey: paramiko.PKey,
    known_hosts: KnownHosts,
    host_key_mode: HostKeyMode = True,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    keepalive: int = DEFAULT_KEEPALIVE,
    via: SshConnection | None = None,
) -> SshConnection:
    """Connect, verify the host key, authenticate with `pkey`; errors are `SshError` subclasses.

    `via` is the live connection to ``target.jump`` (the bastion) when the target has one.
    """
    proxy: _ProxyProcess | None = None
    sock: Any
    try:
        if target.jump is not None:
            if via is None:
                raise SshConnectError(f"cannot connect to {target}: no connection to the bastion")
            sock = via.transport.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=timeout
            )
        elif target.proxy_command:
            line = expand_proxy_command(target.proxy_command, target.host, target.port, target.user)
            proxy = _ProxyProcess(line, timeout)
            sock = proxy.sock
        else:
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise SshConnectError(f"cannot connect to {target}: {exc}") from exc
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        if proxy is not None:
            proxy.close()
        raise
    try:
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        preferred = known_hosts.preferred_key_types(target.host, target.port)
        if preferred:
            opts = transport.get_security_options()
            offered = list(opts.key_types)
            opts.key_types = [k for k in preferred if k in offered] + [
                k for k in offered if k not in preferred
            ]
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            said = proxy.error_text() if proxy is not None else ""
            detail = f"; the proxy command said: {said}" if said else ""
            raise SshConnectError(f"SSH handshake with {target} failed: {exc}{detail}") from exc
        known_hosts.check(target.host, target.port, transport.get_remote_server_key(), host_key_mode)
        try:
            transport.auth_publickey(target.user, pkey)
        except paramiko.AuthenticationException as exc:
            raise SshAuthError(
                f"{target} refused the key {key_fingerprint(pkey)}: {exc}; fix: add its public key to "
                f"~{target.user}/.ssh/authorized_keys on {target.host}, or check the user name"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshConnectError(f"authentication with {target} failed: {exc}") from exc
        if not transport.is_authenticated():
            raise SshAuthError(f"{target} did not accept the key {key_fingerprint(pkey)}")
        transport.set_keepalive(keepalive)
        sock.settimeout(None)
    except BaseException:
        transport.close()
        if proxy is not None:
            proxy.close()
        raise
    log.debug("connected to %s", target)
    return SshConnection(target, transport, proxy, via)


class ConnectionPool:
    """Process-wide cache of live connections, keyed by target, key and host-key policy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[tuple[object, ...], SshConnection] = {}
        self._key_locks: dict[tuple[object, ...], threading.Lock] = {}
        self._pid = os.getpid()

    def _fork_check(self) -> None:
        if self._pid != os.getpid():  # never touch the parent's sockets
            self._conns.clear()
            self._key_locks.clear()
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def get(
        self,
        target: SshTarget,
        pkey: paramiko.PKey,
        known_hosts: KnownHosts,
        host_key_mode: HostKeyMode = True,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive: int = DEFAULT_KEEPALIVE,
    ) -> SshConnection:
        """A live connection for these parameters (reused, or opened now)."""
        self._fork_check()
        key = (target, key_fingerprint(pkey), known_hosts.identity(), host_key_mode)
        with self._lock:
            conn = self._conns.get(key)
            if conn is not None and conn.alive:
                return conn
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            conn = self._conns.get(key)
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                log.info("SSH connection to %s was lost; reconnecting", target)
                conn.close()
            via = None
            if target.jump is not None:  # the bastion's connection is shared by the nodes behind it
                via = self.get(target.jump, pkey, known_hosts, host_key_mode, timeout, keepalive)
            conn = open_connection(target, pkey, known_hosts, host_key_mode, timeout, keepalive, via)
            with self._lock:
                self._conns[key] = conn
            return conn

    def close(self, target: SshTarget | None = None) -> None:
        """Close the connections to `target` (all when None); the next use reconnects."""
        self._fork_check()
        with self._lock:
            keys = [k for k in self._conns if target is None or k[0] == target]
            conns = [self._conns.pop(k) for k in keys]
        for conn in conns:
            conn.close()


#: The process-wide pool every `SshRunner` uses unless given its own.
POOL = ConnectionPool()

__all__ = [
    "POOL",
    "ConnectionPool",
    "HostKeyError",
    "SshConnection",
    "SshTarget",
    "expand_proxy_command",
    "open_connection",
    "parse_jump",
]
