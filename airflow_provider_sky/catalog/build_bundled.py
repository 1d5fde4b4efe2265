"""Build the small bundled catalog (``catalog/data``) from a full SkyPilot v8 catalog directory.

The bundled catalog is a curated subset: common CPU families and the mainstream GPUs (T4, L4, A10G/A10,
V100, A100, A100-80GB, H100) in a few regions per cloud with up to three zones each, with the
public on-demand and spot prices of the source snapshot. Run::

    python -m airflow_provider_sky.catalog.build_bundled SRC_V8_DIR [--date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path

from airflow_provider_sky.catalog.loader import DEFAULT_CATALOG_DIR


def _sizes(family: str, sizes: str) -> list[str]:
    return [f"{family}.{s}" for s in sizes.split()]


SELECTION: dict[str, dict[str, list[str]]] = {
    "aws": {
        "regions": ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"],
        "types": [
            *_sizes("m6i", "large xlarge 2xlarge 4xlarge 8xlarge 16xlarge"),
            *_sizes("c6i", "large xlarge 2xlarge 4xlarge 8xlarge"),
            *_sizes("r6i", "large xlarge 2xlarge 4xlarge 8xlarge"),
            *_sizes("t3", "medium large xlarge 2xlarge"),
            *_sizes("g4dn", "xlarge 2xlarge 12xlarge"),
            *_sizes("g6", "xlarge 2xlarge 12xlarge 48xlarge"),
            *_sizes("g5", "xlarge 2xlarge 12xlarge 48xlarge"),
            *_sizes("p3", "2xlarge 8xlarge 16xlarge"),
            "p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge",
        ],
    },
    "gcp": {
        "regions": ["us-central1", "us-east1", "us-west1", "europe-west1", "europe-west4", "asia-east1"],
        "types": [
            *[f"n2-standard-{n}" for n in (2, 4, 8, 16, 32)],
            *[f"e2-standard-{n}" for n in (2, 4, 8, 16)],
            *[f"n2-highmem-{n}" for n in (2, 4, 8, 16)],
            *[f"n1-standard-{n}" for n in (1, 2, 4, 8, 16, 32)],
            *[f"n1-highmem-{n}" for n in (2, 4, 8, 16)],
            "a2-highgpu-1g", "a2-highgpu-8g", "a2-ultragpu-1g", "a2-ultragpu-8g", "a3-highgpu-8g",
            *[f"g2-standard-{n}" for n in (4, 8, 12, 16, 24, 32, 48)],
        ],
        "accelerators": ["T4", "L4", "V100", "A100", "A100-80GB", "H100"],
    },
    "azure": {
        "regions": ["eastus", "eastus2", "westus2", "westeurope", "northeurope", "japaneast"],
        "types": [
            *[f"Standard_D{n}s_v5" for n in (2, 4, 8, 16, 32)],
            *[f"Standard_E{n}s_v5" for n in (2, 4, 8, 16)],
            *[f"Standard_F{n}s_v2" for n in (4, 8, 16)],
            "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC64as_T4_v3",
            "Standard_NC6s_v3", "Standard_NC24s_v3", "Standard_NV36ads_A10_v5",
            "Standard_NC24ads_A100_v4", "Standard_NC96ads_A100_v4", "Standard_ND96asr_v4",
            "Standard_ND96amsr_A100_v4", "Standard_NC40ads_H100_v5", "Standard_ND96isr_H100_v5",
        ],
    },
}  # fmt: skip
MAX_ZONES_PER_REGION = 3


def build(src: Path, dst: Path, date: str) -> dict[str, int]:
    """Write the curated subset of ``src`` into ``dst``; returns rows written per cloud."""
    written: dict[str, int] = {}
    for cloud, sel in SELECTION.items():
        regions, types = set(sel["regions"]), set(sel["types"])
        accs = set(sel.get("accelerators", []))
        with (src / cloud / "vms.csv").open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            col = {h: i for i, h in enumerate(header)}
            zone_col = col.get("AvailabilityZone")
            keep = [
                r for r in reader
                if len(r) == len(header) and r[col["Region"]] in regions
                and (r[col["InstanceType"]] in types or (not r[col["InstanceType"]] and r[col["AcceleratorName"]] in accs))
            ]  # fmt: skip
        if zone_col is not None:
            zones: dict[str, set[str]] = defaultdict(set)
            for r in keep:
                zones[r[col["Region"]]].add(r[zone_col])
            allowed = {z for zs in zones.values() for z in sorted(zs)[:MAX_ZONES_PER_REGION]}
            keep = [r for r in keep if r[zone_col] in allowed]
        keep.sort(key=lambda r: (r[col["InstanceType"]], r[col["AcceleratorName"]], r[col["Region"]], r[zone_col] if zone_col is not None else ""))
        out = dst / cloud / "vms.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            w.writerows(keep)
        written[cloud] = len(keep)
    (dst / "DATE").write_text(date + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="a SkyPilot v8 catalog directory (<dir>/<cloud>/vms.csv)")
    p.add_argument("--dst", type=Path, default=DEFAULT_CATALOG_DIR)
    p.add_argument("--date", default=dt.date.today().isoformat(), help="date of the price snapshot")
    args = p.parse_args(argv)
    print(build(args.src, args.dst, args.date))


if __name__ == "__main__":
    main()
