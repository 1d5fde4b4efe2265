"""`sky-airflow gc`: find (and terminate) clusters tagged as ours that have no live owner."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.cli.common import core_from_args

if TYPE_CHECKING:
    from rich.console import Console

# reaper.DEFAULT_GRACE / DEFAULT_MIN_AGE in minutes, repeated so that building the parser does
# not import the reaper (and the broker behind it); tests/test_cli_transfer.py keeps them equal.
DEFAULT_GRACE_MIN = 30.0
DEFAULT_MIN_AGE_MIN = 5.0


def cmd_gc(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from airflow_provider_sky.provision import reaper

    core = core_from_args(args)
    report = reaper.reap(
        core.store,
        core.clouds,
        grace=timedelta(minutes=args.grace),
        dry_run=args.dry_run,
        min_age=timedelta(minutes=args.min_age),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 1 if report.errors else 0
    verb = "would terminate" if args.dry_run else "terminate"
    table = Table(title=f"Orphaned clusters ({'dry run' if args.dry_run else 'reaped'})")
    for column in ("cloud", "cluster", "dag / task", "reason", "result"):
        table.add_column(column)
    for orphan in report.orphans:
        name = orphan.cluster.name
        labels = orphan.cluster.labels
        owner = "/".join(x for x in (labels.get("sky-dag-id"), labels.get("sky-task-id")) if x) or "-"
        if args.dry_run:
            result = verb
        elif name in report.terminated:
            result = "[green]terminated[/green]"
        else:
            result = f"[red]failed[/red]: {report.errors.get(name, '?')}"
        table.add_row(orphan.cluster.cloud, name, owner, orphan.reason, result)
    if report.orphans:
        console.print(table)
    else:
        console.print("no orphaned clusters")
    for cloud in report.skipped_clouds:
        console.print(f"[yellow]skipped[/yellow] {cloud}: it cannot list its managed clusters")
    return 1 if report.errors else 0


def add_gc_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``gc`` on the ``sky-airflow`` sub-command parsers (handler: ``func(args, console)``)."""
    gc = subparsers.add_parser("gc", help="terminate clusters tagged as ours with no live owner")
    gc.add_argument("--dry-run", action="store_true", help="list what would be terminated, touch nothing")
    gc.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_MIN,
        metavar="MIN",
        help="minutes after its task's last job ended before a cluster counts as orphaned (default: 30)",
    )
    gc.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_MIN_AGE_MIN,
        metavar="MIN",
        help="ignore clusters unknown to the state DB younger than this (default: 5)",
    )
    gc.add_argument("--json", action="store_true", help="machine-readable report")
    gc.set_defaults(func=cmd_gc)
    return gc
