"""`sky-airflow`: inspect and manage the broker from a shell (works without airflow-core).

Start-up is kept short: building the parser imports only argparse-level modules; each command
imports what it uses (rich, the broker core, spec, optimizer, catalog) when it runs, and `cp` /
`verify` (`cli/transfer.py`) import only the storage layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_sky.cli.catalog import add_catalog_parser
from airflow_provider_sky.cli.common import core_from_args
from airflow_provider_sky.cli.gc import add_gc_parser
from airflow_provider_sky.cli.pools import add_pools_parser
from airflow_provider_sky.cli.transfer import add_transfer_parser

if TYPE_CHECKING:
    from rich.console import Console


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    import dataclasses

    from rich.table import Table

    core = core_from_args(args)
    clusters = core.store.list_clusters()
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in clusters], default=str, indent=2))
        return 0
    table = Table(title="Sky clusters")
    for column in ("name", "cloud", "region", "instance", "nodes", "status", "owner", "last used", "cost $"):
        table.add_column(column)
    for c in clusters:
        owner = "/".join(x for x in (c.owner_dag_id, c.owner_task_id) if x) or "-"
        table.add_row(
            c.name,
            c.cloud or "-",
            c.region or "-",
            c.instance_type or "-",
            str(c.num_nodes),
            c.status.value,
            owner,
            str(c.last_used_at or "-")[:19],
            f"{c.cost_so_far or 0:.4f}",
        )
    console.print(table)
    if args.jobs:
        jobs = core.store.list_jobs()
        jtable = Table(title="Jobs")
        for column in ("cluster", "job", "status", "exit", "submitted", "log"):
            jtable.add_column(column)
        for j in jobs:
            jtable.add_row(
                j.cluster_name,
                str(j.job_id),
                j.status.value,
                "-" if j.exit_code is None else str(j.exit_code),
                str(j.submitted_at)[:19],
                j.log_path or "-",
            )
        console.print(jtable)
    return 0


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    core = core_from_args(args)
    for name in args.clusters:
        core.down(name)
        console.print(f"[green]terminated[/green] {name}")
    return 0


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    core = core_from_args(args)
    text, _ = core.read_log(args.cluster, args.job_id, 0, final=True)
    sys.stdout.write(text)
    return 0


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from airflow_provider_sky.spec import SpecError, load_tasks

    try:
        tasks = load_tasks(args.file)
    except SpecError as err:
        console.print(f"[red]invalid[/red] {args.file}: {err}")
        return 2
    for task in tasks:
        console.print(
            f"[green]ok[/green] {task.name or '(unnamed)'}: {task.resources.to_dict() or 'any resources'}"
        )
    return 0


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from airflow_provider_sky.spec import SpecError

    try:
        from airflow_provider_sky.optimizer.cli_support import plan_file
    except ImportError as exc:  # pragma: no cover - optimizer is part of the package
        console.print(f"[red]optimizer unavailable[/red]: {exc}")
        return 1
    try:
        plan = plan_file(args.file, catalog_dir=args.catalog, minimize=args.minimize)
    except (SpecError, ValueError, FileNotFoundError) as err:
        console.print(f"[red]cannot plan[/red] {args.file}: {err}")
        return 2
    if not args.no_share:
        plan = _with_cluster_groups(plan, args.file, args.catalog)
    if args.json:
        print(json.dumps(plan.to_json_dict(), indent=2))
    else:
        console.print(plan.render_table())
    return 0


def _with_cluster_groups(plan: object, path: str, catalog_dir: str | None) -> object:
    """The plan with its cluster groups (consecutive tasks sharing a cluster; default cold start)."""
    from pathlib import Path

    from airflow_provider_sky.catalog import load_catalog
    from airflow_provider_sky.optimizer.dag_yaml import load_dag
    from airflow_provider_sky.provision.cluster_groups import decide_groups

    dag = load_dag(path)
    tasks = {t.name: t for t in dag.tasks if t.name}
    edges = list(dag.edges) + [(up, t.name) for t in dag.tasks if t.name for up in t.depends_on]
    data = plan.to_json_dict()  # type: ignore[attr-defined]
    grouping = decide_groups(
        tasks, edges, data["tasks"], dag_id=dag.name or Path(path).stem, run_id="plan",
        egress=data["egress"], catalog=load_catalog(catalog_dir),
    )  # fmt: skip
    return grouping.apply(plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sky-airflow", description="Sky broker for Apache Airflow")
    parser.add_argument(
        "--state-db", help="SQLAlchemy URL of the state DB (default: $AIRFLOW_HOME/sky/state.db)"
    )
    parser.add_argument("--clouds", help="comma-separated enabled clouds (default: local)")
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="clusters (and jobs) in the state DB")
    status.add_argument("--jobs", action="store_true", help="also list jobs")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="terminate clusters")
    down.add_argument("clusters", nargs="+")
    down.set_defaults(func=cmd_down)

    logs = sub.add_parser("logs", help="print a job's log")
    logs.add_argument("cluster")
    logs.add_argument("job_id", type=int)
    logs.set_defaults(func=cmd_logs)

    validate = sub.add_parser("validate", help="check a SkyPilot task YAML")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser("plan", help="plan placement for a task YAML or DAG YAML")
    plan.add_argument("file")
    plan.add_argument("--catalog", help="SkyPilot v8 catalog directory (default: bundled catalog)")
    plan.add_argument("--minimize", choices=("cost", "time"), default=None)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument(
        "--no-share", action="store_true", help="do not group consecutive tasks onto shared clusters"
    )
    plan.set_defaults(func=cmd_plan)
    add_gc_parser(sub)
    add_pools_parser(sub)
    add_catalog_parser(sub)
    add_transfer_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "plain", False):  # cp / verify print plain lines: no rich import
        return int(args.func(args, None))
    from rich.console import Console

    return int(args.func(args, Console()))


if __name__ == "__main__":
    sys.exit(main())
