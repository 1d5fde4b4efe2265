"""Reader for SkyPilot-catalog v8 directories: ``<dir>/<cloud>/vms.csv``.

The three clouds share column names but differ in order; AWS and GCP have an ``AvailabilityZone``
column, Azure has none (regions only). GCP prices GPUs and TPUs separately from their host VM:
those rows have an empty ``InstanceType`` and are joined here with the host types that can carry
them (see :mod:`airflow_provider_sky.catalog.gcp_hosts`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from airflow_provider_sky.catalog.gcp_hosts import join_gcp_accelerators
from airflow_provider_sky.catalog.gpus import gpu_memory_gib
from airflow_provider_sky.catalog.offerings import OfferingTable

KNOWN_CLOUDS = ("aws", "gcp", "azure")
_NAN = float("nan")


class CatalogFormatError(ValueError):
    """A catalog file is missing or malformed."""


def _float(text: str) -> float:
    if not text:
        return _NAN
    try:
        return float(text)
    except ValueError:
        return _NAN


def read_vms_csv(path: str | os.PathLike, cloud: str) -> OfferingTable:
    """Read one ``vms.csv`` of ``cloud`` into an :class:`OfferingTable`."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration as exc:
            raise CatalogFormatError(f"{path}: empty file") from exc
        col = {name: i for i, name in enumerate(header)}
        required = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice", "Region")
        missing = [c for c in required if c not in col]
        if missing:
            raise CatalogFormatError(f"{path}: not a SkyPilot v8 vms.csv (missing columns {missing}); header is {header}")
        i_it, i_an, i_ac = col["InstanceType"], col["AcceleratorName"], col["AcceleratorCount"]
        i_cpu, i_mem, i_p, i_sp, i_r = col["vCPUs"], col["MemoryGiB"], col["Price"], col["SpotPrice"], col["Region"]
        i_z = col.get("AvailabilityZone")
        i_gi = col.get("GpuInfo")
        width = len(header)
        rows = [r for r in reader if len(r) >= width]
    n = len(rows)
    it = [r[i_it] for r in rows]
    acc = [r[i_an] for r in rows]
    region = [r[i_r] for r in rows]
    zone = [r[i_z] for r in rows] if i_z is not None else [""] * n
    num = np.array(
        [(_float(r[i_cpu]), _float(r[i_mem]), _float(r[i_ac]), _float(r[i_p]), _float(r[i_sp])) for r in rows],
        dtype=np.float64,
    ).reshape(n, 5)
    mem_cache: dict[str, float] = {}
    gpu_mem = np.full(n, _NAN)
    for k, name in enumerate(acc):
        if name:
            if name not in mem_cache:
                mem_cache[name] = gpu_memory_gib(name, rows[k][i_gi] if i_gi is not None else "")
            gpu_mem[k] = mem_cache[name]
    count = num[:, 2]
    count = np.where(np.array([bool(a) for a in acc], dtype=bool), count, 0.0) if n else count
    table = OfferingTable(
        cloud=[cloud] * n,
        region=region,
        zone=zone,
        instance_type=it,
        accelerator=acc,
        vcpus=num[:, 0],
        memory_gib=num[:, 1],
        accelerator_count=np.nan_to_num(count, nan=0.0),
        gpu_memory_gib=gpu_mem,
        price=num[:, 3],
        spot_price=num[:, 4],
    )
    if cloud == "gcp":
        table = join_gcp_accelerators(table)
    return table


def load_v8_dir(path: str | os.PathLike, clouds: tuple[str, ...] | None = None) -> OfferingTable:
    """Read every ``<path>/<cloud>/vms.csv`` (or just ``clouds``) into one table."""
    root = Path(path)
    if not root.is_dir():
        raise CatalogFormatError(f"catalog directory {root} does not exist")
    wanted = clouds or tuple(sorted(p.name for p in root.iterdir() if (p / "vms.csv").is_file()))
    if not wanted:
        raise CatalogFormatError(f"{root} has no <cloud>/vms.csv files (expected e.g. {root}/aws/vms.csv)")
    tables = []
    for cloud in wanted:
        f = root / cloud / "vms.csv"
        if not f.is_file():
            raise CatalogFormatError(f"{f} does not exist")
        tables.append(read_vms_csv(f, cloud))
    return OfferingTable.concat(tables)
