"""SSH credentials and host-key checking for the SSH runner (paramiko).

Private keys are held in memory only; nothing here logs or formats key material. Host keys are
checked against an OpenSSH ``known_hosts`` (a file, or text from a connection) in one of three
modes, like OpenSSH's ``StrictHostKeyChecking``:

    True          (default) unknown or changed keys are refused
    "accept-new"  unknown keys are recorded (in the file, when there is one); changed ones refused
    False         anything is accepted, with a warning (explicit opt-in for throwaway hosts)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import logging
import os
import threading
from pathlib import Path
from typing import Literal

import paramiko
from paramiko.hostkeys import HostKeyEntry

log = logging.getLogger(__name__)

HostKeyMode = bool | Literal["accept-new"]
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SshError(ConnectionError):
    """Base class of the SSH runner's connection-level errors."""


class SshConnectError(SshError):
    """The host could not be reached (refused, timeout, unreachable, handshake failed)."""


class SshAuthError(SshError):
    """The host refused our key."""


class HostKeyError(SshError):
    """The host's key is unknown or differs from the recorded one; the connection was refused."""


def load_private_key(text: str | None = None, path: str | os.PathLike[str] | None = None) -> paramiko.PKey:
    """Parse an unencrypted private key (OpenSSH or PEM; ed25519, ECDSA, RSA) from text or a file."""
    if path is not None:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    if not text:
        raise ValueError("no private key given (set private_key or key_file)")
    for cls in _KEY_CLASSES:
        with contextlib.suppress(paramiko.SSHException, ValueError, TypeError):
            return cls.from_private_key(io.StringIO(text))
    # Never echo the key back: only say what it is not.
    raise ValueError("the private key is not an unencrypted ed25519, ECDSA or RSA key")


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a (public part of a) key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_id(host: str, port: int) -> str:
    """The name known_hosts uses: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(host: str, port: int, key: paramiko.PKey) -> str:
    return f"{host_id(host, port)} {key.get_name()} {key.get_base64()}"


class KnownHosts:
    """An OpenSSH known_hosts (hashed entries understood) that can check and record host keys."""

    def __init__(self, path: str | os.PathLike[str] | None = None, text: str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self._text = text or ""
        self._lock = threading.Lock()
        self._keys = paramiko.HostKeys()
        self._loaded = False

    @classmethod
    def default(cls) -> KnownHosts:
        """The user's ``~/.ssh/known_hosts`` (as the ssh client would use)."""
        return cls(Path.home() / ".ssh" / "known_hosts")

    def __repr__(self) -> str:
        return f"KnownHosts(path={str(self.path) if self.path else None!r})"

    def _load(self) -> None:
        if self._loaded:
            return
        lines = self._text.splitlines()
        if self.path is not None and self.path.exists():
            lines += self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "@")):
                continue
            with contextlib.suppress(Exception):
                entry = HostKeyEntry.from_line(line)
                if entry is not None and entry.key is not None:
                    for name in entry.hostnames:
                        self._keys.add(name, entry.key.get_name(), entry.key)
        self._loaded = True

    def lookup(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """Recorded keys of ``host:port`` by key type (empty when unknown)."""
        with self._lock:
            self._load()
            found = self._keys.lookup(host_id(host, port))
            return dict(found) if found else {}

    def record(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Remember a key (and append it to the file, when there is one)."""
        with self._lock:
            self._load()
            self._keys.add(host_id(host, port), key.get_name(), key)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path, "a", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(known_hosts_line(host, port, key) + "\n")

    def identity(self) -> str:
        """Stable id for connection caching (file path or a hash of the text)."""
        return f"{self.path}|{hashlib.sha256(self._text.encode()).hexdigest()[:16]}"

    def check(self, host: str, port: int, key: paramiko.PKey, mode: HostKeyMode = True) -> None:
        """Accept `key` for ``host:port`` or raise `HostKeyError` (see the module doc for modes)."""
        where = host_id(host, port)
        if mode is False:
            log.warning("host key checking is OFF for %s: accepting %s key unverified", where, key.get_name())
            return
        known = self.lookup(host, port)
        fingerprint = key_fingerprint(key)
        if not known:
            if mode == "accept-new":
                log.info("recording new host key of %s (%s %s)", where, key.get_name(), fingerprint)
                self.record(host, port, key)
                return
            raise HostKeyError(
                f"host key of {where} ({key.get_name()} {fingerprint}) is not in known_hosts "
                f"({self.path or 'connection text'}); refusing to connect. Fix: add the host's key "
                f"(ssh-keyscan -p {port} {host}) to known_hosts, or set strict_host_key_checking="
                "'accept-new' to record keys on first use"
            )
        recorded = known.get(key.get_name())
        if recorded is not None and recorded.asbytes() == key.asbytes():
            return
        expected = ", ".join(f"{k.get_name()} {key_fingerprint(k)}" for k in known.values())
        raise HostKeyError(
            f"HOST KEY MISMATCH for {where}: the server presented {key.get_name()} {fingerprint}, "
            f"known_hosts has {expected}. Someone may be intercepting the connection, or the host "
            "was reinstalled; refusing to connect. Fix: verify the new key out of band and update "
            f"known_hosts ({self.path or 'the connection extra known_hosts'})"
        )

    def preferred_key_types(self, host: str, port: int) -> list[str]:
        """Host-key algorithms to offer first so the server shows the key type we know."""
        types: list[str] = []
        for name in self.lookup(host, port):
            types += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
        return types
