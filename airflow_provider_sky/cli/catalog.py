"""`sky-airflow catalog refresh`: rebuild v8 catalog CSVs from the clouds' public price APIs."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_AWS_REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1")


def cmd_catalog_refresh(args: argparse.Namespace, console: Console) -> int:
    from airflow_provider_sky.catalog import refresh

    regions = [r for r in (args.regions or "").split(",") if r] or None
    try:
        if args.cloud == "aws":
            summary = refresh.refresh_aws(
                args.out, regions or DEFAULT_AWS_REGIONS, endpoint=args.endpoint or refresh.AWS_PRICING_ENDPOINT,
                ec2_endpoint=args.ec2_endpoint,
            )  # fmt: skip
        elif args.cloud == "azure":
            summary = refresh.refresh_azure(
                args.out, endpoint=args.endpoint or refresh.AZURE_PRICES_ENDPOINT, regions=regions
            )
        else:
            key = args.api_key or os.environ.get("GOOGLE_API_KEY")
            summary = refresh.refresh_gcp(
                args.out, endpoint=args.endpoint or refresh.GCP_BILLING_ENDPOINT, api_key=key
            )
    except (OSError, ValueError, refresh.RefreshError) as exc:
        console.print(f"[red]catalog refresh for {args.cloud} failed:[/red] {exc}")
        return 1
    skipped = ", ".join(f"{n} x {what}" for what, n in sorted(summary.skipped.items()))
    console.print(
        f"wrote {summary.rows} rows to {summary.path}" + (f" (skipped: {skipped})" if skipped else "")
    )
    return 0


def add_catalog_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``catalog refresh`` on the ``sky-airflow`` sub-command parsers (handler: ``func(args, console)``)."""
    parser = subparsers.add_parser("catalog", help="price catalogs")
    sub = parser.add_subparsers(dest="catalog_command", required=True)
    r = sub.add_parser(
        "refresh", help="rebuild <out>/<cloud>/vms.csv (SkyPilot v8 layout) from the live price APIs"
    )
    r.add_argument("--cloud", required=True, choices=("aws", "gcp", "azure"))
    r.add_argument("--out", required=True, help="catalog directory to write (use it with --catalog DIR)")
    r.add_argument("--endpoint", help="price API base URL (default: the cloud's public endpoint)")
    r.add_argument(
        "--regions", help="comma-separated regions (aws: default a few common ones; azure: default all)"
    )
    r.add_argument("--ec2-endpoint", help="aws only: EC2 endpoint URL for zones and spot price history")
    r.add_argument(
        "--api-key", help="gcp only: API key for the Cloud Billing Catalog API (or GOOGLE_API_KEY)"
    )
    r.set_defaults(func=cmd_catalog_refresh)
    return parser
