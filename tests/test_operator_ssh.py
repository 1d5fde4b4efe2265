"""SkyTaskOperator on an on-prem SSH node pool (real sshd hosts on 127.0.0.1), configured via connections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.operators.sky import SkyTaskOperator
from airflow_provider_sky.state import ClusterStatus
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)
from tests.test_operator_lifecycle import TaskStateStore, _context


@pytest.fixture
def pool_connections(sshd_hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    hosts = sshd_hosts.hosts
    monkeypatch.setenv(
        "AIRFLOW_CONN_LAB_POOL",
        json.dumps(
            {
                "conn_type": "sky_ssh_pool",
                "extra": {
                    "hosts": ",".join(f"{h.user}@127.0.0.1:{h.port}" for h in hosts[:2]),
                    "private_key": sshd_hosts.key_text,
                    "known_hosts": sshd_hosts.known_hosts_text,
                },
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKY_DEFAULT",
        json.dumps(
            {
                "conn_type": "sky",
                "extra": {
                    "enabled_clouds": "ssh,local",
                    "ssh_pool_conn_id": "lab_pool",
                    "state_db_url": f"sqlite:///{tmp_path / 'state.db'}",
                    "log_dir": str(tmp_path / "logs"),
                },
            }
        ),
    )
    return sshd_hosts


def test_two_node_task_runs_on_the_pool_hosts(pool_connections, caplog: pytest.LogCaptureFixture) -> None:
    op = SkyTaskOperator(
        task_id="onprem",
        run='echo "rank $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES home=$HOME"',
        resources={"infra": "ssh"},
        num_nodes=2,
        poll_interval=0.2,
    )
    with caplog.at_level("INFO"):
        result = op.execute(_context("onprem", TaskStateStore()))
    assert result["cloud"] == "ssh" and result["num_nodes"] == 2 and result["exit_code"] == 0
    core = SkyHook().core
    job_log = "\n".join(core.log_tail(result["cluster"], result["job_id"]))  # archived at teardown
    assert "rank 0 of 2" in job_log and "rank 1 of 2" in job_log
    assert pool_connections.key_text.strip().splitlines()[1] not in caplog.text  # the key never reaches logs
    assert core.store.get_cluster(result["cluster"]).status is ClusterStatus.TERMINATED
    # The hosts were released: a second 2-node task gets them again.
    again = SkyTaskOperator(task_id="again", run="true", resources={"infra": "ssh"}, num_nodes=2, poll_interval=0.2)
    assert again.execute(_context("again", TaskStateStore()))["exit_code"] == 0


def test_ssh_enabled_without_pool_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKY_DEFAULT",
        json.dumps({"conn_type": "sky", "extra": {"enabled_clouds": "ssh", "state_db_url": f"sqlite:///{tmp_path / 's.db'}"}}),
    )
    op = SkyTaskOperator(task_id="x", run="true", resources={"infra": "ssh"})
    with pytest.raises(Exception, match=r"no node pool is configured.*ssh_pool_conn_id"):
        op.execute(_context("x", TaskStateStore()))


def test_spillover_to_the_cloud_when_the_pool_is_busy(pool_connections) -> None:
    """Two-host pool: a 2-node task holds both hosts, the next task spills to the other cloud."""
    hold = SkyTaskOperator(
        task_id="hold", run="true", resources={"infra": "ssh"}, num_nodes=2, cluster_name="pool-hold", poll_interval=0.2
    )
    hold.execute(_context("hold", TaskStateStore()))  # named => kept up, both hosts leased
    spill = SkyTaskOperator(
        task_id="burst",
        run="echo ran-in-the-cloud",
        spillover="prefer_onprem",
        max_wait=0,
        poll_interval=0.2,
    )
    result = spill.execute(_context("burst", TaskStateStore()))
    assert result["cloud"] == "local" and result["exit_code"] == 0
    assert result["spillover"]["choice"] == "cloud"
    assert "pool" in result["spillover"]["reason"].lower() or result["spillover"]["inputs"]["pool_free_now"] is False
    SkyHook().core.down("pool-hold")


def test_spillover_parameters_are_checked_at_parse_time() -> None:
    from airflow_provider_sky.spec import SpecError

    with pytest.raises(SpecError, match="spillover"):
        SkyTaskOperator(task_id="x", run="true", spillover="deadline")


def test_ssh_pool_task_end_to_end_under_airflow_dags_test(sshd_hosts, tmp_path_factory) -> None:  # noqa: F811
    from tests.airflow_runner import make_home

    dags = tmp_path_factory.mktemp("ssh_dags")
    (dags / "ssh_pool_dag.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from airflow_provider_sky.operators.sky import SkyTaskOperator\n"
        "with DAG('sky_ssh_pool', start_date=pendulum.datetime(2026, 1, 1), schedule=None):\n"
        "    SkyTaskOperator(task_id='onprem', resources={'infra': 'ssh'}, num_nodes=2,\n"
        "                    setup='echo setup-on-$(hostname)',\n"
        "                    run='echo \"pool rank $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES\"')\n"
    )
    home = make_home(tmp_path_factory.mktemp("ssh_home"), dags)
    hosts = sshd_hosts.hosts
    env = {
        "AIRFLOW_CONN_LAB_POOL": json.dumps(
            {
                "conn_type": "sky_ssh_pool",
                "extra": {
                    "hosts": ",".join(f"{h.user}@127.0.0.1:{h.port}" for h in hosts[:2]),
                    "private_key": sshd_hosts.key_text,
                    "known_hosts": sshd_hosts.known_hosts_text,
                },
            }
        ),
        "AIRFLOW_CONN_SKY_DEFAULT": json.dumps(
            {"conn_type": "sky", "extra": {"enabled_clouds": "ssh", "ssh_pool_conn_id": "lab_pool"}}
        ),
    }
    result = home.airflow("dags", "test", "sky_ssh_pool", extra_env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "pool rank 0 of 2" in out and "pool rank 1 of 2" in out
    assert sshd_hosts.key_text.strip().splitlines()[1] not in out
