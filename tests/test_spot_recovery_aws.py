"""Managed spot jobs on EC2 (moto server on 127.0.0.1): the cloud reclaims the instance mid-job,
the preemption is detected (LOST, not a user failure), the cluster is relaunched (same region first
for ``failover``, the next region for ``eager_next_region``), the job restarts under the same
SKYPILOT_TASK_ID and resumes from its checkpoint, and nothing is left running.

Jobs really run: every moto instance "is" the real sshd on 127.0.0.1, reached through the
``ssh_proxy_command`` setting (`tests/tcp_relay.py`, like ``nc 127.0.0.1 %p``), so the instance's
address only names it. A preemption is what a spot reclaim does: the instance is terminated through
the EC2 API with ``Server.SpotInstanceTermination`` and every process on the node dies at once.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider_sky.clouds.aws import AwsCloud
from airflow_provider_sky.provision import recovery
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import ClusterStatus, JobStatus, StateStore
from airflow_provider_sky.state import recovery as chains
from tests.moto_server import MotoEc2, moto_ec2, moto_server  # noqa: F401 - fixtures
from tests.sshd import SshdHosts, start_hosts, stop_hosts
from tests.test_recovery_local import CHECKPOINTING_RUN

pytestmark = pytest.mark.timeout(150)

REGIONS = ("us-east-1", "us-west-2")
TYPE = "m5.large"
RELAY = Path(__file__).with_name("tcp_relay.py")
PROXY = f"{sys.executable} {RELAY} 127.0.0.1 %p"
OWNER = Owner("spot", "manual__1", "train")
STEPS = 16  # checkpointed steps of the job (0.1 s each)
AT_STEP = 5  # the cloud reclaims the instance once this step is checkpointed


@pytest.fixture(scope="module")
def node() -> Iterator[SshdHosts]:
    """The one real machine behind every moto instance."""
    state = start_hosts(1)
    try:
        yield state
    finally:
        stop_hosts(state)


def node_key_dir(node: SshdHosts, tmp_path: Path) -> Path:
    """A key directory whose ``sky-key`` is the key the sshd authorizes (what the key pair installs)."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(node.key_file, keys / "sky-key")
    (keys / "sky-key").chmod(0o600)
    return keys


@pytest.fixture
def aws(moto_ec2: MotoEc2, node: SshdHosts, tmp_path: Path) -> AwsCloud:  # noqa: F811
    h = node.hosts[0]
    kill_node_processes(h.user)
    shutil.rmtree(Path(h.home) / ".sky", ignore_errors=True)  # a fresh machine (job ids restart at 1)
    return moto_ec2.cloud(
        node_key_dir(node, tmp_path), regions=REGIONS, ssh_user=h.user, ssh_port=h.port,
        ssh_proxy_command=PROXY, list_all_regions=False,
    )  # fmt: skip


@pytest.fixture
def core(aws: AwsCloud, tmp_path: Path) -> SkyCore:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    settings = SkySettings(state_db_url=url, enabled_clouds=("aws",), log_dir=str(tmp_path / "logs"))
    return SkyCore(StateStore(url), {"aws": aws}, settings)


@pytest.fixture
def cluster(moto_ec2: MotoEc2) -> Iterator[str]:  # noqa: F811
    name = f"spot-{uuid.uuid4().hex[:8]}"
    yield name
    moto_ec2.clear_faults()
    left = moto_ec2.live_instances(name, REGIONS)
    for inst in left:
        moto_ec2.client(inst["Placement"]["AvailabilityZone"][:-1]).terminate_instances(
            InstanceIds=[inst["InstanceId"]]
        )
    assert not left, f"instances of {name} left running: {[i['InstanceId'] for i in left]}"


def _task(ckpt: Path, strategy: str, steps: int = STEPS) -> Task:
    return Task.from_dict(
        {
            "name": "train",
            "resources": {
                "ordered": [{"infra": "aws/us-east-1"}, {"infra": "aws/us-west-2"}],
                "instance_type": TYPE,
                "use_spot": True,
                "job_recovery": {"strategy": strategy, "max_restarts_on_errors": 0},
            },
            "envs": {"CKPT": str(ckpt), "STEPS": str(steps)},
            "run": CHECKPOINTING_RUN,
        }
    )


def node_processes(user: str) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                pids.append(int(entry))
    return pids


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_node_processes(user: str) -> None:
    """Every process of the node's user dies at once (frozen first, so no driver sees a child exit)."""
    pids = node_processes(user)
    signal_all(pids, signal.SIGSTOP)
    signal_all(pids, signal.SIGKILL)


def preempt_when(
    moto: MotoEc2,
    name: str,
    node: SshdHosts,
    ckpt: Path,
    at_step: int,
    before: Callable[[], None] | None = None,
) -> tuple[threading.Thread, dict[str, list[str]]]:
    """Once the job checkpointed `at_step`: the cloud reclaims the cluster's instances, the node dies."""
    reclaimed: dict[str, list[str]] = {}

    def run() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            steps = list(ckpt.glob("*.step"))
            if steps and int(steps[0].read_text().strip() or 0) >= at_step:
                frozen = node_processes(node.hosts[0].user)  # the node stops in its tracks ...
                signal_all(frozen, signal.SIGSTOP)
                if before is not None:
                    before()
                for inst in moto.live_instances(name, REGIONS):  # ... the cloud reclaims it ...
                    region = inst["Placement"]["AvailabilityZone"][:-1]
                    reclaimed.setdefault(region, []).append(inst["InstanceId"])
                for region, ids in reclaimed.items():
                    moto.preempt(region, ids)
                signal_all(frozen, signal.SIGKILL)  # ... and everything on it is gone
                kill_node_processes(node.hosts[0].user)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, reclaimed


def run_preempted(
    core: SkyCore,
    moto: MotoEc2,
    node: SshdHosts,
    name: str,
    strategy: str,
    before: Callable[[], None] | None = None,
) -> tuple[recovery.FollowResult, int, str, dict[str, list[str]], str, Path]:
    """Launch, submit a managed job, reclaim the instance at AT_STEP, follow it to the end."""
    ckpt = Path(node.hosts[0].home) / f"ckpt-{name}"
    task = _task(ckpt, strategy)
    launched = core.launch(task, name, OWNER)
    assert (launched.cluster.cloud, launched.cluster.region) == ("aws", "us-east-1")
    assert launched.cluster.use_spot
    job_id = recovery.submit_managed(core, task, name, OWNER)
    task_id = chains.get_job(core.store, name, job_id).task_id
    killer, reclaimed = preempt_when(moto, name, node, ckpt, at_step=AT_STEP, before=before)
    lines: list[str] = []
    result = recovery.follow_with_recovery(core, task, name, OWNER, job_id, lines.append, poll_interval=0.1)
    killer.join(timeout=10)
    return result, job_id, task_id, reclaimed, "".join(lines), ckpt


def check_recovered(
    core: SkyCore, result: recovery.FollowResult, job_id: int, task_id: str, text: str, ckpt: Path, name: str
) -> None:
    assert result.status is JobStatus.SUCCEEDED
    assert (result.preemptions, result.restarts_on_errors) == (1, 0)  # a preemption is not a user failure
    assert result.to_xcom()["preemptions"] == 1
    assert result.job_id != job_id and result.task_id == task_id
    starts = (ckpt / "starts.txt").read_text().splitlines()
    assert [s.split()[0] for s in starts] == [task_id, task_id]  # restarted under the same task id
    assert int(starts[1].split("start=")[1]) >= AT_STEP, starts  # ... and resumed from its checkpoint
    assert "[sky recovery] preempted" in text and f"finished at step {STEPS}" in text
    assert "Server.SpotInstanceTermination" in text  # the cloud's reason, from the EC2 state reason
    jobs = {j.job_id: j.status for j in core.store.list_jobs(cluster_name=name)}
    assert jobs == {job_id: JobStatus.LOST, result.job_id: JobStatus.SUCCEEDED}
    assert core.store.get_cluster(name).status is ClusterStatus.UP
    [entry] = result.history
    assert entry["reason"] == chains.PREEMPTION and entry["previous_job_id"] == job_id
    assert "SpotInstanceTermination" in entry["placement"]["preempted"]["reason"]


def test_failover_relaunches_in_the_same_region_and_resumes(
    core: SkyCore,
    moto_ec2: MotoEc2,  # noqa: F811
    node: SshdHosts,
    cluster: str,
) -> None:
    result, job_id, task_id, reclaimed, text, ckpt = run_preempted(core, moto_ec2, node, cluster, "failover")
    check_recovered(core, result, job_id, task_id, text, ckpt, cluster)
    assert list(reclaimed) == ["us-east-1"] and len(reclaimed["us-east-1"]) == 1
    assert result.history[0]["placement"]["region"] == "us-east-1"  # same region first
    [live] = moto_ec2.live_instances(cluster, REGIONS)
    assert live["InstanceId"] not in reclaimed["us-east-1"] and live["InstanceLifecycle"] == "spot"
    [old] = moto_ec2.client("us-east-1").describe_instances(InstanceIds=reclaimed["us-east-1"])[
        "Reservations"
    ]
    assert old["Instances"][0]["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert core.down(cluster)
    assert moto_ec2.live_instances(cluster, REGIONS) == []


def test_failover_moves_to_the_next_region_when_the_preempted_one_has_no_capacity(
    core: SkyCore,
    moto_ec2: MotoEc2,  # noqa: F811
    node: SshdHosts,
    cluster: str,
) -> None:
    def no_spot_left() -> None:  # the reclaim comes with a spot stockout in the whole region
        moto_ec2.add_fault(region="us-east-1", instance_type=TYPE, market="spot")

    result, job_id, task_id, _, text, ckpt = run_preempted(
        core, moto_ec2, node, cluster, "failover", before=no_spot_left
    )
    check_recovered(core, result, job_id, task_id, text, ckpt, cluster)
    assert result.history[0]["placement"]["region"] == "us-west-2"
    relaunch = core.store.list_attempts(cluster)[1:]
    assert relaunch[0].region == "us-east-1" and relaunch[0].error_class == "CapacityError"  # tried first
    assert (relaunch[-1].region, relaunch[-1].outcome) == ("us-west-2", "launched")
    assert [i["Placement"]["AvailabilityZone"][:-1] for i in moto_ec2.live_instances(cluster, REGIONS)] == [
        "us-west-2"
    ]
    assert core.down(cluster)
    assert moto_ec2.live_instances(cluster, REGIONS) == []


def test_eager_next_region_relaunches_elsewhere_at_once(
    core: SkyCore,
    moto_ec2: MotoEc2,  # noqa: F811
    node: SshdHosts,
    cluster: str,
) -> None:
    result, job_id, task_id, _, text, ckpt = run_preempted(core, moto_ec2, node, cluster, "eager_next_region")
    check_recovered(core, result, job_id, task_id, text, ckpt, cluster)
    assert result.history[0]["placement"]["region"] == "us-west-2"
    relaunch = core.store.list_attempts(cluster)[1:]
    assert [a.region for a in relaunch] == ["us-west-2"]  # the preempted region was not tried
    assert core.down(cluster)
    assert moto_ec2.live_instances(cluster, REGIONS) == []


def test_operator_recovers_a_reclaimed_spot_cluster_configured_from_connections(
    moto_ec2: MotoEc2,  # noqa: F811
    node: SshdHosts,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SkyTaskOperator end to end: aws and the SSH proxy come from AIRFLOW_CONN_* (sky extras)."""
    import json

    from airflow_provider_sky.hooks.sky import SkyHook
    from airflow_provider_sky.operators.sky import SkyTaskOperator
    from airflow_provider_sky.provision.naming import cluster_name_for
    from tests.moto_server import KEY
    from tests.test_operator_lifecycle import TaskStateStore, _context

    h = node.hosts[0]
    kill_node_processes(h.user)
    shutil.rmtree(Path(h.home) / ".sky", ignore_errors=True)
    for region in REGIONS:
        moto_ec2.ensure_image(region)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("SKY_KEY_DIR", str(node_key_dir(node, tmp_path)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_MOTO_AWS",
        json.dumps(
            {"conn_type": "aws", "login": KEY, "password": KEY, "extra": {"endpoint_url": moto_ec2.endpoint}}
        ),
    )
    extra = {
        "enabled_clouds": "aws", "aws_conn_id": "moto_aws", "region_preferences": ",".join(REGIONS),
        "aws_image_owners": "self", "state_db_url": f"sqlite:///{tmp_path / 'state.db'}",
        "aws_ssh_user": h.user, "aws_ssh_port": str(h.port), "aws_ssh_proxy_command": PROXY,
    }  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_SKY_DEFAULT", json.dumps({"conn_type": "sky", "extra": extra}))
    core = SkyHook().core
    assert (core.clouds["aws"].ssh_user, core.clouds["aws"].ssh_proxy_command) == (h.user, PROXY)

    name = cluster_name_for("lifecycle", "managed", "manual__1")
    ckpt = Path(h.home) / f"ckpt-op-{uuid.uuid4().hex[:6]}"
    op = SkyTaskOperator(
        task_id="managed",
        run=CHECKPOINTING_RUN,
        envs={"CKPT": str(ckpt), "STEPS": str(STEPS)},
        resources={"infra": "aws/us-east-1", "instance_type": TYPE, "use_spot": True,
                   "job_recovery": {"strategy": "failover"}},
        poll_interval=0.1,
        deferrable=False,
    )  # fmt: skip
    killer, reclaimed = preempt_when(moto_ec2, name, node, ckpt, at_step=AT_STEP)
    try:
        result = op.execute(_context("managed", TaskStateStore()))
    finally:
        killer.join(timeout=10)
        left = moto_ec2.live_instances(name, REGIONS)
        for inst in left:
            moto_ec2.client(inst["Placement"]["AvailabilityZone"][:-1]).terminate_instances(
                InstanceIds=[inst["InstanceId"]]
            )
    assert (
        result["status"] == "SUCCEEDED" and result["preemptions"] == 1 and result["restarts_on_errors"] == 0
    )
    assert (result["cloud"], result["region"]) == ("aws", "us-east-1") and reclaimed.get("us-east-1")
    starts = (ckpt / "starts.txt").read_text().splitlines()
    assert [s.split()[0] for s in starts] == [result["skypilot_task_id"]] * 2
    assert "SpotInstanceTermination" in result["recoveries"][0]["placement"]["preempted"]["reason"]
    assert result["torn_down"] is True and left == []  # auto-named: down at the end, nothing left
