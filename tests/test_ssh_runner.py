"""SshRunner against real sshd processes: commands, file sync, host keys, connection reuse."""

from __future__ import annotations

import logging
import os
import time

import pytest

from airflow_provider_sky.execution import ssh_sftp
from airflow_provider_sky.execution.runner import CommandRunner, CommandTimeout
from airflow_provider_sky.execution.ssh_keys import HostKeyError, KnownHosts, SshAuthError
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)


def test_run_env_cwd_stream_and_exit_codes(sshd_hosts):  # noqa: F811
    r = sshd_hosts.runner(0)
    assert isinstance(r, CommandRunner)
    lines: list[str] = []
    res = r.run("echo out-$A; echo err >&2; pwd; exit 3", env={"A": "it's ok"}, stream=lines.append)
    assert res.returncode == 3
    assert res.stdout.splitlines() == ["out-it's ok", sshd_hosts.hosts[0].home]
    assert res.stderr == "err\n"
    assert sorted(lines) == sorted(["out-it's ok", "err", sshd_hosts.hosts[0].home])
    r.run(["mkdir", "-p", "sub dir"]).check()
    assert r.run(["pwd"], cwd="sub dir").stdout.strip() == f"{sshd_hosts.hosts[0].home}/sub dir"
    assert r.run(["whoami"]).stdout.strip() == sshd_hosts.hosts[0].user
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        r.run("echo started; sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_put_syncs_changed_files_only_and_respects_ignore_rules(sshd_hosts, tmp_path):  # noqa: F811
    r = sshd_hosts.runner(0)
    src = tmp_path / "wd"
    (src / "pkg").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    (src / "pkg" / "a.py").write_text("print('a')\n")
    (src / "big.log").write_text("ignored\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / ".skyignore").write_text("*.log\n")
    os.symlink("pkg/a.py", src / "link.py")
    r.put(src, "workdir")
    listing = r.run("cd workdir && find . | sort && ./run.sh && readlink link.py").stdout.split()
    assert "./pkg/a.py" in listing and "./big.log" not in listing and "./.git" not in listing
    assert listing[-2:] == ["hi", "pkg/a.py"]
    home = r.home
    with r.connection().sftp() as sftp:
        assert ssh_sftp.sync(sftp, src, f"{home}/workdir") == 0  # nothing changed
        (src / "pkg" / "a.py").write_text("print('b')\n")
        os.utime(src / "pkg" / "a.py", (time.time() + 5, time.time() + 5))
        assert ssh_sftp.sync(sftp, src, f"{home}/workdir") == 1
    assert r.read_bytes("workdir/pkg/a.py") == b"print('b')\n"
    single = tmp_path / "one.txt"
    single.write_text("single")
    r.put(single, "workdir")  # into an existing directory
    assert r.read_bytes("~/workdir/one.txt") == b"single"
    with pytest.raises(FileNotFoundError):
        r.put(tmp_path / "missing", "x")


def test_read_and_atomic_write(sshd_hosts):  # noqa: F811
    r = sshd_hosts.runner(1)
    r.write_text("deep/dir/secret.json", '{"k": "v"}')
    assert r.run(["stat", "-c", "%a", "deep/dir/secret.json"]).stdout.strip() == "600"
    assert r.run(["stat", "-c", "%a", "deep/dir"]).stdout.strip() == "700"
    assert r.read_bytes("deep/dir/secret.json", 2, 3) == b'k":'
    assert r.read_bytes(f"{r.home}/deep/dir/secret.json", -4) == b'"v"}'
    r.write_text("deep/dir/secret.json", "new", mode=0o644)
    assert r.read_bytes("deep/dir/secret.json") == b"new"
    assert r.run("ls -a deep/dir | grep -c tmp || true").stdout.strip() == "0"
    with pytest.raises(FileNotFoundError):
        r.read_bytes("deep/nope")


def test_connection_is_shared_and_reopened(sshd_hosts):  # noqa: F811
    a, b = sshd_hosts.runner(2), sshd_hosts.runner(2, home="elsewhere")
    assert a.connection() is b.connection()
    assert b.home == f"{sshd_hosts.hosts[2].home}/elsewhere"
    first = a.connection()
    first.transport.close()  # the connection drops
    assert a.run(["true"]).ok
    assert a.connection() is not first and a.connection().alive


def test_host_key_mismatch_is_refused(sshd_hosts, tmp_path):  # noqa: F811
    h0, h1 = sshd_hosts.hosts[0], sshd_hosts.hosts[1]
    forged = tmp_path / "known_hosts"
    # host 0's port recorded with host 1's key: what a man in the middle looks like
    forged.write_text(h1.host_key_line.replace(f"]:{h1.port} ", f"]:{h0.port} ") + "\n")
    r = sshd_hosts.runner(0, known_hosts=str(forged))
    with pytest.raises(HostKeyError, match=r"HOST KEY MISMATCH for \[127\.0\.0\.1\]:\d+.*refusing"):
        r.run(["true"])
    unknown = sshd_hosts.runner(0, known_hosts=str(tmp_path / "empty"))
    with pytest.raises(HostKeyError, match="not in known_hosts"):
        unknown.run(["true"])


def test_accept_new_records_and_opt_out_warns(sshd_hosts, tmp_path, caplog):  # noqa: F811
    path = tmp_path / "kh"
    r = sshd_hosts.runner(1, known_hosts=str(path), strict_host_key_checking="accept-new")
    assert r.run(["true"]).ok
    assert path.read_text().strip() == sshd_hosts.hosts[1].host_key_line
    assert KnownHosts(path).lookup("127.0.0.1", sshd_hosts.hosts[1].port)
    with caplog.at_level(logging.WARNING):
        loose = sshd_hosts.runner(1, known_hosts=None, strict_host_key_checking=False)
        assert loose.run(["true"]).ok
    assert "NOT be verified" in caplog.text
    assert sshd_hosts.key_text.splitlines()[1] not in caplog.text  # no key material in logs


def test_wrong_key_is_refused(sshd_hosts, tmp_path):  # noqa: F811
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    from airflow_provider_sky.execution.ssh_runner import SshRunner

    h = sshd_hosts.hosts[0]
    r = SshRunner(
        h.host, h.user, port=h.port, key_file=tmp_path / "k", known_hosts=sshd_hosts.known_hosts_file
    )
    with pytest.raises(SshAuthError, match="refused the key SHA256:"):
        r.run(["true"])
