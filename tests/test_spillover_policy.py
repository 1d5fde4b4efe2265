"""Spillover policy, pool fit, expected wait and the shared queue (no services needed)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_sky.clouds.ssh_pool_config import PoolHost
from airflow_provider_sky.provision import spillover as sp
from airflow_provider_sky.spec import Task
from airflow_provider_sky.state import pool_queue, pools
from airflow_provider_sky.state.pools import SlotClaim
from airflow_provider_sky.state.store import StateStore

NOW = 1_750_000_000.0
HOSTS = [
    PoolHost("a", 22, "u", key_file="/k", cpus=8, memory_gb=32, gpus={"V100": 2}),
    PoolHost("b", 22, "u", key_file="/k", cpus=4, memory_gb=16, gpus={}),
]


def task(**res) -> Task:
    return Task.from_dict({"name": "t", "run": "true", "resources": res})


def view(wait: float, runtime: float = 600.0, **kw) -> sp.OnPremView:
    return sp.OnPremView(True, expected_wait_s=wait, runtime_s=runtime, units_total=2, **kw)


CLOUD = sp.CloudQuote(True, hourly_price=3.0, runtime_s=600.0, provision_s=120.0, source="given")


def test_free_pool_wins_and_impossible_task_goes_to_cloud_with_reason():
    for policy in (sp.prefer_onprem(0), sp.deadline(NOW), sp.cost_of_delay(1e6)):
        assert sp.decide(policy, view(0, free_now=True), CLOUD, now=NOW).choice == "onprem"
    fit = sp.pool_fit(task(accelerators="H100:1"), HOSTS, pool_name="lab")
    assert not fit.can_run and "no accelerator H100 (the pool has V100)" in fit.reason
    d = sp.decide(sp.prefer_onprem(1e9), sp.OnPremView(False, fit.reason), CLOUD, now=NOW)
    assert d.choice == "cloud" and "never run" in d.reason and "H100" in d.reason
    big = sp.pool_fit(task(memory="64+"), HOSTS)
    assert not big.can_run and "largest host has 8 CPUs / 32 GB" in big.reason
    assert sp.pool_fit(task(accelerators="V100:1"), HOSTS).demand == "V100:1"
    assert not sp.pool_fit(Task.from_dict({"run": "x", "num_nodes": 3}), HOSTS).can_run


def test_prefer_onprem_waits_within_max_wait_then_spills():
    p = sp.prefer_onprem(timedelta(minutes=30))
    assert sp.decide(p, view(600), CLOUD, now=NOW).choice == "wait"
    assert sp.decide(p, view(600), CLOUD, now=NOW, waited_s=1500).choice == "cloud"  # waited too long
    d = sp.decide(p, view(3600), CLOUD, now=NOW)
    assert d.choice == "cloud" and "exceeds max_wait 1800s" in d.reason
    assert d.expected_wait_s == 3600 and d.inputs["max_wait_left_s"] == 1800


def test_deadline_spills_only_when_onprem_finish_misses():
    due = NOW + 1800
    assert sp.decide(sp.deadline(due), view(600), CLOUD, now=NOW).choice == "wait"  # 600 + 600 <= 1800
    d = sp.decide(sp.deadline(due), view(1500), CLOUD, now=NOW)  # 1500 + 600 > 1800; cloud 720 s
    assert d.choice == "cloud" and "misses the deadline" in d.reason and "meets it" in d.reason
    slow_cloud = sp.CloudQuote(True, hourly_price=3.0, runtime_s=600.0, provision_s=5000.0)
    assert sp.decide(sp.deadline(due), view(1500), slow_cloud, now=NOW).choice == "wait"  # cloud even later


def test_cost_of_delay_compares_waiting_with_cloud_cost():
    # cloud: 3 $/h x (120 + 600) s = 0.60 $; + 120 s of delay
    cheap_time = sp.decide(sp.cost_of_delay(1.0), view(1800), CLOUD, now=NOW)
    assert cheap_time.choice == "wait" and cheap_time.inputs["wait_cost_usd"] == 0.5
    dear_time = sp.decide(sp.cost_of_delay(10.0), view(1800), CLOUD, now=NOW)
    assert dear_time.choice == "cloud" and dear_time.inputs["cloud_total_cost_usd"] == pytest.approx(
        0.9333, abs=1e-3
    )


def test_no_cloud_means_wait_and_decision_is_json():
    d = sp.decide(sp.deadline(NOW), view(math.inf), sp.CloudQuote(False, "no cloud"), now=NOW)
    assert d.choice == "wait" and d.expected_wait_s is None
    d2 = sp.decide(sp.cost_of_delay(5), view(900), CLOUD, now=NOW, heterogeneity=["note"])
    text = json.dumps(d2.to_dict())
    back = sp.SpillDecision.from_dict(json.loads(text))
    assert back == d2 and "note: note" in d2.log_line()


def test_policy_from_operator_params():
    assert sp.policy_from_params("off") is None and sp.policy_from_params(None) is None
    assert sp.policy_from_params("prefer_onprem", max_wait=60).max_wait_s == 60
    due = datetime(2030, 1, 1, tzinfo=UTC)
    pol = sp.policy_from_params("deadline", deadline_at=due)
    assert sp.SpillPolicy.from_dict(json.loads(json.dumps(pol.to_dict()))) == pol
    with pytest.raises(ValueError, match="needs cost_of_delay"):
        sp.policy_from_params("cost_of_delay")
    with pytest.raises(ValueError, match="unknown policy"):
        sp.policy_from_params("yolo")


def test_expected_wait_list_scheduling():
    assert pool_queue.expected_wait([0, 0], [], 1) == 0
    assert pool_queue.expected_wait([0, 10], [(1, 5), (1, 5)], 1) == 10
    assert pool_queue.expected_wait([3, 10], [(1, 100)], 1) == 10
    assert pool_queue.expected_wait([3, 10], [], 2) == 10  # two nodes: both units
    assert pool_queue.expected_wait([0], [], 2) == math.inf


def test_units_of_gpu_and_host_demands():
    taken = {("u@a:22", "gpu:0"): "c1", ("u@b:22", "host"): "c2"}
    rem = {"c1": 100.0, "c2": 50.0}
    gpu = sp.pool_fit(task(accelerators="V100:1"), HOSTS)
    assert sorted(sp.unit_free_in(HOSTS, taken, rem, gpu)) == [0.0, 100.0]
    host = sp.pool_fit(task(cpus="2+"), HOSTS)
    assert sp.unit_free_in(HOSTS, taken, rem, host) == [100.0, 50.0]


def test_heterogeneity_report():
    t = Task.from_dict(
        {"run": "x", "inputs": {"s3://bucket/data": 10}, "resources": {"accelerators": "V100:1"}}
    )
    fit = sp.pool_fit(t, HOSTS)
    cloud = sp.CloudQuote(True, accelerator="A100:1")
    notes = sp.heterogeneity(t, fit, cloud, bucket_access=False)
    assert any("no bucket access" in n and "s3://bucket/data" in n for n in notes)
    assert any("accelerator differs" in n and "A100:1" in n for n in notes)
    assert sp.heterogeneity(t, fit, None, bucket_access=True) == []
    q = sp.quote_cloud(t, ["aws"], 3600, hourly_price=2.0, provision_s=60)
    assert q.egress_usd == 0.0  # s3 -> aws: same cloud
    q2 = sp.quote_cloud(t, ["gcp"], 3600, hourly_price=2.0, provision_s=60)
    assert q2.egress_usd > 0.5  # 10 GB out of AWS to the internet


def test_cloud_quote_from_the_optimizer():
    t = Task.from_dict(
        {"name": "g", "run": "x", "resources": {"accelerators": "V100:1"}, "estimated_hours": 1}
    )
    q = sp.quote_cloud(t, ["aws"], 3600)
    assert q.available and q.source == "optimizer" and q.placement["cloud"] == "aws" and q.hourly_price > 0
    assert q.provision_s == sp.DEFAULT_CLOUD_PROVISION_S
    assert not sp.quote_cloud(t, [], 3600).available


def test_shared_queue_positions_stale_entries_holds_and_learned_runtimes(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/q.db")
    assert pool_queue.enqueue(store, "p", "a", runtime_s=60) < pool_queue.enqueue(store, "p", "b")
    pool_queue.enqueue(store, "p", "g", demand="V100:1")
    assert [pool_queue.position(store, "p", n) for n in ("a", "b", "g")] == [0, 1, 0]
    assert pool_queue.enqueue(store, "p", "a") == 1  # idempotent
    time.sleep(0.05)
    pool_queue.heartbeat(store, "p", "b")
    assert pool_queue.position(store, "p", "b", stale_after=0.04) == 0  # a went stale
    assert pool_queue.purge_stale(store, "p", stale_after=0.04) == 2
    assert [e.cluster_name for e in pool_queue.queue(store, "p")] == ["b"]
    assert pool_queue.dequeue(store, "p", "b") and not pool_queue.dequeue(store, "p", "b")

    est = pool_queue.learned_runtime(store, "d", "t", declared_hours=0.5)
    assert (est.seconds, est.source) == (1800, "declared")
    pools.allocate(store, "p", "c1", lambda taken: [SlotClaim("h", "host", 0)])
    pool_queue.start_hold(store, "p", "c1", 1800, "d", "t")
    assert pool_queue.settle_holds(store, "p") == []  # still leased
    pools.release(store, "p", "c1")
    ((hold, seconds),) = pool_queue.settle_holds(store, "p")
    assert hold.cluster_name == "c1" and seconds >= 0
    pool_queue.record_runtime(store, "d", "t", 100.0)
    pool_queue.record_runtime(store, "d", "t", 300.0)
    est = pool_queue.learned_runtime(store, "d", "t", declared_hours=0.5)
    assert est.source == "learned" and est.samples == 3 and est.seconds == 100.0
    pool_queue.record_decision(store, "p", "c1", {"choice": "cloud", "reason": "r"}, "d", "t")
    assert pool_queue.recent_decisions(store, "p")[0].choice == "cloud"
    assert "p" in pool_queue.pools_known(store)


def test_pools_cli_shows_capacity_queue_and_decisions(tmp_path, capsys):
    import argparse

    from rich.console import Console

    from airflow_provider_sky.cli.pools import add_pools_parser, pool_status
    from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud

    url = f"sqlite:///{tmp_path}/cli.db"
    store = StateStore(url)
    cloud = SshPoolCloud("lab", HOSTS, store=store)
    pools.allocate(store, "lab", "c1", lambda taken: [SlotClaim("u@a:22", "gpu:0", 0)])
    pool_queue.enqueue(store, "lab", "c2", dag_id="d", task_id="t", runtime_s=60)
    pool_queue.record_decision(
        store, "lab", "c2", {"choice": "wait", "reason": "full", "expected_wait_s": 30.0}
    )
    (st,) = pool_status(store, {"lab": cloud})
    assert (st["hosts"], st["hosts_free"], st["gpus"], st["gpus_free"]) == (2, 1, 2, 1)
    assert st["queue"][0]["cluster"] == "c2" and st["decisions"][0]["choice"] == "wait"
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-db")
    add_pools_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--state-db", url, "pools"])
    console = Console(width=200)
    assert args.func(args, console) == 0
    text = capsys.readouterr().out
    assert "lab" in text and "c2" in text and "full" in text
    args = parser.parse_args(["--state-db", url, "pools", "--json"])
    assert args.func(args, console) == 0
    assert json.loads(capsys.readouterr().out)[0]["pool"] == "lab"
