"""Reaching nodes without a direct route: ``proxy_command`` (OpenSSH ProxyCommand) and ``jump_host``
(a bastion), against real sshd hosts on 127.0.0.1; host keys recorded by ``accept-new`` persist and
a changed key is refused; the VM clouds' SSH settings are validated."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_sky.clouds.aws import AwsCloud
from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.execution.ssh_connection import ConnectionPool, expand_proxy_command, parse_jump
from airflow_provider_sky.execution.ssh_keys import HostKeyError, SshConnectError
from airflow_provider_sky.execution.ssh_runner import SshRunner
from tests.sshd import SshdHosts, start_hosts, stop_hosts

pytestmark = pytest.mark.timeout(90)
RELAY = Path(__file__).with_name("tcp_relay.py")
UNROUTABLE = "10.255.0.7"  # a private-subnet address: only reachable through the proxy


def relay_to(port: int | str = "%p") -> str:
    return f"{sys.executable} {RELAY} 127.0.0.1 {port}"


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    state = start_hosts(2)
    try:
        yield state
    finally:
        stop_hosts(state)


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    pool = ConnectionPool()
    try:
        yield pool
    finally:
        pool.close()


def test_expand_proxy_command_substitutes_like_openssh() -> None:
    assert expand_proxy_command("ssh -W %h:%p -l %r bastion # 100%%", "10.0.0.5", 2222, "ubuntu") == (
        "ssh -W 10.0.0.5:2222 -l ubuntu bastion # 100%"
    )
    assert expand_proxy_command("nc %h %p", "a b", 22, "u") == "nc 'a b' 22"  # values are shell-quoted
    with pytest.raises(ValueError, match=r"unknown token '%x'.*%h \(host\)"):
        expand_proxy_command("nc %x %p", "h", 22, "u")


def test_parse_jump() -> None:
    jump = parse_jump("ec2-user@bastion.example.com:2200", "ubuntu")
    assert (jump.host, jump.port, jump.user) == ("bastion.example.com", 2200, "ec2-user")
    jump = parse_jump("10.0.0.1", "ubuntu")
    assert (jump.host, jump.port, jump.user) == ("10.0.0.1", 22, "ubuntu")
    with pytest.raises(ValueError, match="one bastion"):
        parse_jump("a,b", "u")
    with pytest.raises(ValueError, match="not a number"):
        parse_jump("host:ssh", "u")


def test_proxy_command_reaches_an_unroutable_address_and_records_its_host_key(
    hosts: SshdHosts, pool: ConnectionPool, tmp_path: Path
) -> None:
    h0, h1 = hosts.hosts
    known = tmp_path / "aws_known_hosts"
    runner = SshRunner(
        UNROUTABLE, h0.user, port=h0.port, key_file=hosts.key_file, known_hosts=str(known),
        strict_host_key_checking="accept-new", proxy_command=relay_to(), pool=pool,
    )  # fmt: skip
    result = runner.run("echo $USER; echo ok >&2")
    assert (result.returncode, result.stdout.strip(), result.stderr.strip()) == (0, h0.user, "ok")
    runner.write_text("probe.txt", "through the proxy")
    assert runner.read_bytes("probe.txt") == b"through the proxy"
    assert runner.node_spec()["host"] == runner.node_ip == UNROUTABLE
    # accept-new persisted the key under the node's address, with h0's real key
    line = known.read_text().strip()
    assert line.startswith(f"[{UNROUTABLE}]:{h0.port} ") and line.split()[1:] == h0.host_key_line.split()[1:]
    # A new process (fresh pool) trusts the recorded key ...
    fresh = ConnectionPool()
    try:
        again = SshRunner(
            UNROUTABLE, h0.user, port=h0.port, key_file=hosts.key_file, known_hosts=str(known),
            strict_host_key_checking="accept-new", proxy_command=relay_to(), pool=fresh,
        )  # fmt: skip
        assert again.run(["true"]).returncode == 0
        # ... and refuses another machine answering at that address (h1 has a different host key).
        impostor = SshRunner(
            UNROUTABLE, h0.user, port=h0.port, key_file=hosts.key_file, known_hosts=str(known),
            strict_host_key_checking="accept-new", proxy_command=relay_to(h1.port), pool=fresh,
        )  # fmt: skip
        with pytest.raises(HostKeyError, match="HOST KEY MISMATCH"):
            impostor.run(["true"])
    finally:
        fresh.close()
    assert known.read_text().count(UNROUTABLE) == 1  # the impostor's key was not recorded


def test_failing_proxy_command_is_a_connect_error_with_its_output(
    hosts: SshdHosts, pool: ConnectionPool
) -> None:
    h0 = hosts.hosts[0]
    runner = SshRunner(
        UNROUTABLE, h0.user, port=h0.port, key_file=hosts.key_file, known_hosts=hosts.known_hosts_file,
        proxy_command="echo 'bastion refused us' >&2; exit 3", pool=pool, connect_timeout=5,
    )  # fmt: skip
    with pytest.raises(SshConnectError, match="bastion refused us"):
        runner.run(["true"])


def test_jump_host_tunnels_through_a_bastion(hosts: SshdHosts, pool: ConnectionPool) -> None:
    target, bastion = hosts.hosts
    runner = SshRunner(
        target.host, target.user, port=target.port, key_file=hosts.key_file, known_hosts=hosts.known_hosts_file,
        jump_host=f"{bastion.user}@{bastion.host}:{bastion.port}", pool=pool,
    )  # fmt: skip
    assert runner.run("echo $USER").stdout.strip() == target.user
    opened = {key[0] for key in pool._conns}
    assert runner.target in opened and runner.target.jump in opened  # the bastion carried the tunnel
    assert runner.target.jump.user == bastion.user and "via" in str(runner.target)
    pool.close(runner.target.jump)  # the bastion drops: the next command reconnects through it again
    assert runner.run("echo again").stdout.strip() == "again"
    with pytest.raises(ValueError, match="not both"):
        SshRunner("h", "u", key_file=hosts.key_file, jump_host="b", proxy_command="nc %h %p")


def test_vm_cloud_ssh_settings_are_validated(tmp_path: Path) -> None:
    options = AwsCloud.settings_options(
        {"aws_ssh_user": "ec2-user", "aws_ssh_port": "2222", "aws_ssh_proxy_command": "nc %h %p",
         "aws_use_private_ips": "true", "aws_ssh_cidrs": "10.0.0.0/8, 192.168.0.0/16", "aws_image_id": "x"}
    )  # fmt: skip
    assert options == {
        "ssh_user": "ec2-user", "ssh_port": 2222, "ssh_proxy_command": "nc %h %p", "use_private_ips": True,
        "ssh_cidrs": ("10.0.0.0/8", "192.168.0.0/16"),
    }  # fmt: skip
    cloud = AwsCloud({}, key_dir=tmp_path, **options)
    assert (cloud.ssh_user, cloud.ssh_port, cloud.ssh_proxy_command) == ("ec2-user", 2222, "nc %h %p")
    with pytest.raises(ConfigError, match=r"aws_ssh_port: 'x'.*1-65535"):
        AwsCloud.settings_options({"aws_ssh_port": "x"})
    with pytest.raises(ConfigError, match="both set"):
        AwsCloud({}, key_dir=tmp_path, ssh_jump_host="bastion", ssh_proxy_command="nc %h %p")
    with pytest.raises(ConfigError, match=r"aws_ssh_proxy_command: unknown token '%q'") as info:
        AwsCloud({}, key_dir=tmp_path, ssh_proxy_command="nc %q")
    assert "docs/clouds.md" in (info.value.fix or "")
    with pytest.raises(ConfigError, match="aws_ssh_port"):
        AwsCloud({}, key_dir=tmp_path, ssh_port=70000)
