"""Shared, keep-alive paramiko connections: one authenticated Transport per (host, port, user, key).

Runners of the same host share the Transport (paramiko multiplexes channels over it, thread-safe)
and one SFTP session guarded by a lock. A dead Transport is replaced on the next use; a forked
child never reuses its parent's connections.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
    """Where to log in; no secrets (safe to log and to store)."""

    host: str
    port: int
    user: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class SshConnection:
    """One authenticated Transport and its shared SFTP session."""

    def __init__(self, target: SshTarget, transport: paramiko.Transport) -> None:
        self.target = target
        self.transport = transport
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.RLock()

    @property
    def alive(self) -> bool:
        return self.transport.is_active() and self.transport.is_authenticated()

    @property
    def peer_ip(self) -> str:
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
        with self._sftp_lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
        self.transport.close()


def open_connection(
    target: SshTarget,
    pkey: paramiko.PKey,
    known_hosts: KnownHosts,
    host_key_mode: HostKeyMode = True,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    keepalive: int = DEFAULT_KEEPALIVE,
) -> SshConnection:
    """Connect, verify the host key, authenticate with `pkey`; errors are `SshError` subclasses."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise SshConnectError(f"cannot connect to {target}: {exc}") from exc
    transport = paramiko.Transport(sock)
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
            raise SshConnectError(f"SSH handshake with {target} failed: {exc}") from exc
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
        raise
    log.debug("connected to %s", target)
    return SshConnection(target, transport)


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
            conn = open_connection(target, pkey, known_hosts, host_key_mode, timeout, keepalive)
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

__all__ = ["POOL", "ConnectionPool", "HostKeyError", "SshConnection", "SshTarget", "open_connection"]
