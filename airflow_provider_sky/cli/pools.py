"""`sky-airflow pools`: per on-prem pool its capacity, free slots, queue and recent spill decisions."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _store_and_pool_clouds(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The state store, and the configured pool clouds by pool name (none without a pool connection)."""
    from airflow_provider_sky.provision.settings import SkySettings
    from airflow_provider_sky.state.store import StateStore

    values: dict[str, object] = {}
    if getattr(args, "state_db", None):
        values["state_db_url"] = args.state_db
    settings = SkySettings.from_mapping(values)
    store = StateStore(settings.state_db_url)
    clouds: dict[str, Any] = {}
    if settings.ssh_pool:
        from airflow_provider_sky.clouds.ssh_pool import SshPoolCloud

        cloud = SshPoolCloud.from_connection(settings.ssh_pool, store=store)
        clouds[cloud.pool_name] = cloud
    return store, clouds


def pool_status(store: Any, clouds: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """JSON-ready status of every known pool (capacity only where the pool's hosts are configured)."""
    from airflow_provider_sky.state import pool_queue, pools

    now = datetime.now(UTC)
    out = []
    for name in sorted(set(pool_queue.pools_known(store)) | set(clouds)):
        cloud = clouds.get(name)
        hosts = list(cloud.hosts) if cloud is not None else []
        taken = pools.taken_slots(store, name)
        busy_hosts = {h for h, _ in taken}
        gpus_total = sum(sum((h.gpus or {}).values()) for h in hosts) if hosts else None
        gpus_taken = sum(1 for _, slot in taken if slot.startswith("gpu:"))
        holds = {h.cluster_name: h for h in pool_queue.holds(store, name)}
        out.append(
            {
                "pool": name,
                "hosts": len(hosts) if cloud is not None else None,
                "hosts_free": (
                    len([h for h in hosts if h.key not in busy_hosts]) if cloud is not None else None
                ),
                "gpus": gpus_total,
                "gpus_free": None if gpus_total is None else gpus_total - gpus_taken,
                "slots_taken": len(taken),
                "clusters": [
                    {
                        "cluster": lease.cluster_name,
                        "hosts": sorted({c.host for c in lease.claims}),
                        "expected_left_s": round(holds[lease.cluster_name].remaining_s(now), 1)
                        if lease.cluster_name in holds
                        else None,
                    }
                    for lease in pools.leases(store, name)
                ],
                "queue": [
                    {
                        "ticket": e.ticket,
                        "cluster": e.cluster_name,
                        "task": "/".join(x for x in (e.dag_id, e.task_id) if x) or None,
                        "demand": e.demand,
                        "waiting_s": round((now - e.enqueued_at).total_seconds(), 1),
                        "runtime_s": e.runtime_s,
                    }
                    for e in pool_queue.queue(store, name)
                ],
                "decisions": [
                    {
                        "at": d.at.isoformat(),
                        "cluster": d.cluster_name,
                        "task": "/".join(x for x in (d.dag_id, d.task_id) if x) or None,
                        "choice": d.choice,
                        "expected_wait_s": d.decision.get("expected_wait_s"),
                        "reason": d.reason,
                    }
                    for d in pool_queue.recent_decisions(store, name, limit)
                ],
            }
        )
    return out


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def cmd_pools(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    store, clouds = _store_and_pool_clouds(args)
    status = pool_status(store, clouds, args.limit)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    if not status:
        console.print("no on-prem pools known (configure ssh_pool_conn_id, or launch on a pool first)")
        return 0
    summary = Table(title="On-prem pools")
    for column in ("pool", "hosts free/total", "GPUs free/total", "clusters", "queued"):
        summary.add_column(column)
    for p in status:
        summary.add_row(
            p["pool"],
            f"{_n(p['hosts_free'])}/{_n(p['hosts'])}",
            f"{_n(p['gpus_free'])}/{_n(p['gpus'])}",
            str(len(p["clusters"])),
            str(len(p["queue"])),
        )
    console.print(summary)
    for p in status:
        if p["queue"]:
            q = Table(title=f"Queue of {p['pool']}")
            for column in ("#", "cluster", "task", "demand", "waiting s", "runtime s"):
                q.add_column(column)
            for e in p["queue"]:
                q.add_row(str(e["ticket"]), e["cluster"], e["task"] or "-", e["demand"],
                          f"{e['waiting_s']:.0f}", f"{e['runtime_s']:.0f}")  # fmt: skip
            console.print(q)
        if p["decisions"]:
            d = Table(title=f"Recent spill decisions of {p['pool']}")
            for column in ("at", "cluster", "task", "choice", "exp. wait s", "reason"):
                d.add_column(column)
            for row in p["decisions"]:
                wait = row["expected_wait_s"]
                d.add_row(row["at"][:19], row["cluster"], row["task"] or "-", row["choice"],
                          "-" if wait is None else f"{wait:.0f}", row["reason"])  # fmt: skip
            console.print(d)
    return 0


def add_pools_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``pools`` on the ``sky-airflow`` sub-command parsers (handler: ``func(args, console)``)."""
    parser = subparsers.add_parser(
        "pools", help="on-prem pools: capacity, free slots, queue, spill decisions"
    )
    parser.add_argument("--limit", type=int, default=10, help="recent decisions per pool (default: 10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_pools)
    return parser
