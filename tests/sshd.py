"""Real sshd "hosts" on free 127.0.0.1 ports for the SSH tests.

Each host is its own sshd process with its own host key, port and (generated) user whose home is
in a throwaway directory, so node homes never collide. One client key is authorized for all.
Needs root (useradd, sshd privilege separation) and /usr/sbin/sshd (`.ci/services.d/20-sshd.sh`);
otherwise the tests skip (or fail under SKY_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services import require

SSHD = "/usr/sbin/sshd"


@dataclass
class SshdHost:
    host: str
    port: int
    user: str
    home: str
    host_key_line: str  # known_hosts line for this host
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def as_pool_host(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "user": self.user}


@dataclass
class SshdHosts:
    root: Path
    hosts: list[SshdHost]
    key_file: str
    key_text: str
    known_hosts_file: str

    @property
    def known_hosts_text(self) -> str:
        return Path(self.known_hosts_file).read_text()

    def runner(self, i: int = 0, **kwargs: object):
        from airflow_provider_sky.execution.ssh_runner import SshRunner

        h = self.hosts[i]
        kwargs.setdefault("known_hosts", self.known_hosts_file)
        return SshRunner(h.host, h.user, port=h.port, key_file=self.key_file, **kwargs)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_banner(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if s.recv(4) == b"SSH-":
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on port {port} did not answer within {timeout}s")


def _kill_user_processes(uid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        os.kill(int(entry), sig)
        time.sleep(0.2)


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the sshd fixture needs root (useradd, sshd privilege separation)"
    for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("ssh"), shutil.which("useradd")):
        if not tool or not os.path.exists(tool):
            return False, f"{tool or 'ssh tools'} missing: run .ci/services.d/20-sshd.sh"
    return True, ""


def start_hosts(count: int) -> SshdHosts:
    """Start `count` sshd hosts; call `stop_hosts` to remove them (users included)."""
    ok, reason = available()
    require(ok, reason)
    root = Path(tempfile.mkdtemp(prefix="sky-sshd-"))
    root.chmod(0o755)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(3)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sky-test", "-f", str(root / "client_key")],
        check=True,
    )
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    (root / "authorized_keys").chmod(0o644)
    hosts: list[SshdHost] = []
    known: list[str] = []
    state = SshdHosts(root, hosts, str(root / "client_key"), (root / "client_key").read_text(), "")
    try:
        for i in range(count):
            hdir = root / f"host{i}"
            hdir.mkdir()
            user = f"skyt{token}h{i}"
            home = root / f"home{i}"
            subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/bash", user], check=True)
            subprocess.run(["usermod", "-p", "*", user], check=True)
            home.mkdir(mode=0o700)
            pw = pwd.getpwnam(user)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hdir / "hostkey")], check=True
            )
            port = _free_port()
            (hdir / "sshd_config").write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hdir / 'hostkey'}\n"
                f"PidFile {hdir / 'sshd.pid'}\nAllowUsers {user}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
                "AuthenticationMethods publickey\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "UsePAM no\nPermitRootLogin no\nStrictModes no\nMaxSessions 100\nMaxStartups 100:30:200\n"
                "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
            )
            log = open(hdir / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the daemon
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(hdir / "sshd_config")],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            kind, blob = (hdir / "hostkey.pub").read_text().split()[:2]
            line = f"[127.0.0.1]:{port} {kind} {blob}"
            hosts.append(SshdHost("127.0.0.1", port, user, str(home), line, proc))
            known.append(line)
            _wait_banner(port, proc)
        state.known_hosts_file = str(root / "known_hosts")
        Path(state.known_hosts_file).write_text("\n".join(known) + "\n")
    except BaseException:
        stop_hosts(state)
        raise
    return state


def stop_hosts(state: SshdHosts) -> None:
    """Stop the daemons, kill the users' processes, delete the users and the directory."""
    from airflow_provider_sky.execution.ssh_connection import POOL

    POOL.close()
    for h in state.hosts:
        if h.proc is not None and h.proc.poll() is None:
            h.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                h.proc.wait(5)
        with contextlib.suppress(KeyError):
            _kill_user_processes(pwd.getpwnam(h.user).pw_uid)
        subprocess.run(["userdel", h.user], check=False, capture_output=True)
    shutil.rmtree(state.root, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd_hosts() -> Iterator[SshdHosts]:
    """Three sshd hosts for the module (import this fixture into a test module to use it)."""
    state = start_hosts(3)
    try:
        yield state
    finally:
        stop_hosts(state)
