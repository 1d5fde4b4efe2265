"""SSH node pools: connection parsing, GPU/host leases on real sshd hosts, allocation races."""

from __future__ import annotations

import json
import multiprocessing
import secrets

import pytest

from airflow_provider_sky.clouds.errors import CapacityError, ConfigError, CredentialsError
from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud
from airflow_provider_sky.clouds.ssh_pool_config import (
    PoolHost,
    normalize_gpu_name,
    parse_probe,
    pool_config_from_connection,
)
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.jobs import JobStatus
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.state import pools
from airflow_provider_sky.state.store import StateStore
from tests.services import require_postgres
from tests.sshd import sshd_hosts  # noqa: F401  (fixture)

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretmaterial\n-----END OPENSSH PRIVATE KEY-----\n"


def test_connection_dict_forms_and_no_secrets_in_repr():
    conn = {
        "conn_id": "gpu_pool",
        "conn_type": "sky_ssh_pool",
        "login": "ubuntu",
        "extra": json.dumps(
            {
                "hosts": "10.0.0.5, admin@10.0.0.6:2222 ,10.0.0.7:23",
                "private_key": KEY,
                "price_per_hour": 1.5,
                "known_hosts": "10.0.0.5 ssh-ed25519 AAAA",
                "hosts_spec": {"10.0.0.5": {"cpus": 32, "memory_gb": 256, "gpus": {"nvidia a100": 4}}},
            }
        ),
    }
    cfg = pool_config_from_connection(conn)
    assert cfg.name == "gpu_pool" and cfg.price_per_hour == 1.5
    assert [h.key for h in cfg.hosts] == ["ubuntu@10.0.0.5:22", "admin@10.0.0.6:2222", "ubuntu@10.0.0.7:23"]
    assert cfg.hosts[0].gpus == {"A100": 4} and cfg.hosts[0].complete and not cfg.hosts[1].complete
    assert "secretmaterial" not in repr(cfg) and "secretmaterial" not in repr(cfg.hosts[0])
    listed = pool_config_from_connection(
        {"conn_id": "p", "extra": {"hosts": [{"host": "h", "user": "u", "key_file": "/k", "gpus": {}}]}}
    )
    assert listed.hosts[0] == PoolHost("h", 22, "u", key_file="/k", gpus={})
    with pytest.raises(ConfigError, match="no key"):
        pool_config_from_connection({"conn_id": "p", "extra": {"hosts": "u@h"}})
    with pytest.raises(ConfigError, match="no user"):
        pool_config_from_connection({"conn_id": "p", "extra": {"hosts": "h", "key_file": "/k"}})
    with pytest.raises(ConfigError, match="duplicate"):
        pool_config_from_connection({"conn_id": "p", "extra": {"hosts": "u@h,u@h:22", "key_file": "/k"}})


def test_probe_output_and_gpu_names():
    out = "16\n65842136\nNVIDIA A100-SXM4-80GB\nNVIDIA A100-SXM4-80GB\nTesla T4\n"
    cpus, mem, gpus = parse_probe(out)
    assert (cpus, round(mem), gpus) == (16, 63, {"A100-80GB": 2, "T4": 1})
    assert normalize_gpu_name("NVIDIA H100 80GB HBM3") == "H100"
    assert normalize_gpu_name("NVIDIA GeForce RTX 4090") == "RTX4090"
    assert normalize_gpu_name("a100") == "A100"


def _pool(sshd_hosts, store, **kw):  # noqa: F811
    h = sshd_hosts.hosts
    conn = {
        "conn_id": "lab",
        "conn_type": "sky_ssh_pool",
        "extra": {
            "hosts": ",".join(f"{x.user}@127.0.0.1:{x.port}" for x in h),
            "private_key": sshd_hosts.key_text,
            "known_hosts": sshd_hosts.known_hosts_text,
            "hosts_spec": {
                f"127.0.0.1:{h[0].port}": {"cpus": 8, "memory_gb": 16, "gpus": {"A100": 2}},
                f"127.0.0.1:{h[1].port}": {"cpus": 4, "memory_gb": 8, "gpus": {}},
            },  # host 2 is probed over SSH
        },
    }
    return SshPoolCloud.from_connection(conn, store=store, cancel_grace=1, **kw)


def _res(**kw):
    return Resources.from_dict(kw)


def test_pool_leases_gpu_slots_hosts_and_releases_on_terminate(sshd_hosts, tmp_path):  # noqa: F811
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    cloud = _pool(sshd_hosts, store)
    inv = cloud.inventory()
    assert inv[2].cpus >= 1 and inv[2].memory_gb > 0 and inv[2].gpus == {}  # probed
    a = cloud.launch("gpu-a", 1, _res(accelerators="A100:1"))
    b = cloud.launch("gpu-b", 1, _res(accelerators="A100:1"))
    assert a.node_ids == b.node_ids == (f"{sshd_hosts.hosts[0].user}@127.0.0.1:{sshd_hosts.hosts[0].port}",)
    assert [a.extra["nodes"][0]["env"], b.extra["nodes"][0]["env"]] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]
    assert "PRIVATE KEY" not in a.to_json() and sshd_hosts.key_text.splitlines()[1] not in a.to_json()
    assert cloud.launch("gpu-a", 1, _res(accelerators="A100:1")) == a  # idempotent
    with pytest.raises(CapacityError, match="no 1 free host"):
        cloud.launch("gpu-c", 1, _res(accelerators="A100:1"))
    with pytest.raises(ConfigError, match="no accelerator H100") as missing:
        cloud.launch("gpu-h", 1, _res(accelerators="H100:1"))
    assert missing.value.blocked().cloud == "ssh"
    with pytest.raises(ConfigError, match="cannot fit 1 node"):
        cloud.launch("gpu-x", 1, _res(accelerators="A100:4"))

    # whole hosts: the GPU host is busy, the two CPU hosts serve a 2-node cluster
    cpu = cloud.launch("cpu-2", 2, _res(cpus="2+"))
    assert {n["port"] for n in cpu.extra["nodes"]} == {sshd_hosts.hosts[1].port, sshd_hosts.hosts[2].port}
    with pytest.raises(CapacityError):
        cloud.launch("cpu-1", 1, None)
    assert cloud.find("cpu-2") == cpu and cloud.find("nope") is None

    head = cloud.runners(a)[0]
    jobs.submit_job(head, 1, 'echo "gpus=$CUDA_VISIBLE_DEVICES"; exec sleep 600')
    cloud.terminate(a)  # kills the job, deletes the cluster dir, frees GPU 0
    assert not head.run(["test", "-e", head.home], cwd="/").ok
    assert not head.run("pgrep -u $USER -f 'sleep 600'", cwd="/").ok
    c = cloud.launch("gpu-c", 1, _res(accelerators="A100:1"))
    assert c.extra["nodes"][0]["env"] == {"CUDA_VISIBLE_DEVICES": "0"}
    runner = cloud.runners(c)[0]
    jobs.submit_job(runner, 1, 'echo "gpus=$CUDA_VISIBLE_DEVICES rank=$SKYPILOT_NODE_RANK"')
    assert jobs.wait_job(runner, 1, timeout=20).status is JobStatus.SUCCEEDED
    assert jobs.read_log_tail(runner, 1).strip() == "gpus=0 rank=0"
    for h in (b, c, cpu):
        cloud.terminate(h)
    cloud.terminate(cpu)  # idempotent
    assert pools.taken_slots(store, "lab") == {}


def test_multinode_pool_cluster_runs_across_hosts(sshd_hosts, tmp_path):  # noqa: F811
    cloud = _pool(sshd_hosts, StateStore(f"sqlite:///{tmp_path}/state.db"))
    h = cloud.launch("multi", 3, None)
    runners = cloud.runners(h)
    jobs.submit_multinode_job(
        runners, 1, "echo rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES", cluster_name="multi"
    )
    assert jobs.wait_job(runners[0], 1, timeout=30).status is JobStatus.SUCCEEDED
    log = jobs.read_log_tail(runners[0], 1)
    assert sorted(log.splitlines()) == sorted(
        ["rank=0 of 3", "(worker1, ip=127.0.0.1) rank=1 of 3", "(worker2, ip=127.0.0.1) rank=2 of 3"]
    )
    cloud.terminate(h)


def test_bad_host_key_is_a_credentials_error(sshd_hosts, tmp_path):  # noqa: F811
    wrong = sshd_hosts.hosts[1].host_key_line.replace(
        f":{sshd_hosts.hosts[1].port} ", f":{sshd_hosts.hosts[0].port} "
    )
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    others = [h.host_key_line for h in sshd_hosts.hosts[1:]]
    cloud = _pool(sshd_hosts, store, known_hosts="\n".join([wrong, *others]) + "\n")
    with pytest.raises(CredentialsError, match="HOST KEY MISMATCH"):
        cloud.launch("k", 1, _res(accelerators="A100:1"))
    assert pools.taken_slots(store, "lab") == {}  # nothing leaked


# ---- races: several processes want the last GPU ----
def _race_worker(url, pool, name, barrier, results):
    cloud = SshPoolCloud(pool, [PoolHost("10.9.9.9", 22, "u", key_file="/none", cpus=4, memory_gb=8, gpus={"A100": 2})],
                         store=StateStore(url))  # fmt: skip
    inv = cloud.inventory()
    demands = cloud._demands(_res(accelerators="A100:1"))
    barrier.wait()
    try:
        claims = pools.allocate(cloud.store, pool, name, cloud._chooser(inv, demands, 1))
        results.put((name, [c.slot for c in claims]))
    except CapacityError:
        results.put((name, None))


def _race(url: str, contenders: int = 6) -> None:
    pool = f"race-{secrets.token_hex(4)}"
    store = StateStore(url)
    cloud = SshPoolCloud(pool, [PoolHost("10.9.9.9", 22, "u", key_file="/none", cpus=4, memory_gb=8, gpus={"A100": 2})],
                         store=store)  # fmt: skip
    first = pools.allocate(
        store,
        pool,
        "first",
        cloud._chooser(cloud.inventory(), cloud._demands(_res(accelerators="A100:1")), 1),
    )
    assert [c.slot for c in first] == ["gpu:0"]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(contenders), ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(url, pool, f"c{i}", barrier, results))
        for i in range(contenders)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    winners = [(n, s) for n, s in got if s is not None]
    try:
        assert len(winners) == 1 and winners[0][1] == ["gpu:1"], got
        taken = pools.taken_slots(store, pool)
        assert taken == {("u@10.9.9.9:22", "gpu:0"): "first", ("u@10.9.9.9:22", "gpu:1"): winners[0][0]}
    finally:
        for name in ["first", *(n for n, _ in got)]:
            pools.release(store, pool, name)


def test_allocation_race_sqlite(tmp_path):
    _race(f"sqlite:///{tmp_path}/race.db")


def test_allocation_race_postgres():
    _race(require_postgres())
