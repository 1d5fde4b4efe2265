"""Rebuild v8 ``vms.csv`` files from the clouds' live public price APIs (no airflow imports).

* AWS: the Price List bulk offer file per region (``/offers/v1.0/aws/AmazonEC2/current/<region>/
  index.json``: ``products`` + ``terms.OnDemand``) for on-demand Linux prices, and EC2 through boto3
  (``DescribeAvailabilityZones``, ``DescribeSpotPriceHistory``) for zone ids and spot prices.
* Azure: the Retail Prices REST API (``/api/retail/prices?$filter=...``), following
  ``NextPageLink``; Linux consumption meters, spot meters by their ``Spot`` SKU name.
* GCP: the Cloud Billing Catalog API (``/v1/services/6F81-5844-456A/skus``, ``nextPageToken``);
  VM prices are per-vCPU and per-GiB SKUs of a machine family times the machine shape; GPUs are
  written as accelerator-only rows (empty ``InstanceType``), as in SkyPilot's v8 GCP catalog.

Every endpoint is a parameter, so tests point them at local servers. Shapes the price APIs do not
carry (vCPUs/memory of Azure and GCP sizes, GPUs per AWS family) come from small tables here;
sizes outside them are skipped and counted in the returned summary.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import re
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AWS_PRICING_ENDPOINT = "https://pricing.us-east-1.amazonaws.com"
AZURE_PRICES_ENDPOINT = "https://prices.azure.com"
GCP_BILLING_ENDPOINT = "https://cloudbilling.googleapis.com"
GCP_COMPUTE_SERVICE = "6F81-5844-456A"

AWS_HEADER = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price", "SpotPrice", "Region", "AvailabilityZone", "Arch"]  # fmt: skip
GCP_HEADER = ["InstanceType", "vCPUs", "MemoryGiB", "AcceleratorName", "AcceleratorCount", "GpuInfo", "Region", "AvailabilityZone", "Price", "SpotPrice"]  # fmt: skip
AZURE_HEADER = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price", "SpotPrice", "Region", "Generation"]  # fmt: skip


class RefreshError(RuntimeError):
    """A price API answered with something this module cannot use."""


@dataclass
class RefreshSummary:
    cloud: str
    path: Path
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, what: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1


def get_json(url: str, timeout: float = 60.0) -> Any:
    """GET ``url`` and decode JSON (urllib; no retries: the caller reruns the refresh)."""
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "airflow-provider-sky"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _write(path: Path, header: list[str], rows: Iterable[list[Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    n = 0
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
            n += 1
    tmp.replace(path)
    return n


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


# ---------------------------------------------------------------------------------------- AWS
# GPU per instance family (the offer file gives the GPU count, not the model)
AWS_GPU_FAMILIES = {
    "p3": ("V100", 16), "p3dn": ("V100-32GB", 32), "p4d": ("A100", 40), "p4de": ("A100-80GB", 80),
    "p5": ("H100", 80), "p5e": ("H200", 141), "g4dn": ("T4", 16), "g5": ("A10G", 24), "g6": ("L4", 24),
    "g6e": ("L40S", 48), "g5g": ("T4g", 16),
}  # fmt: skip


def _aws_memory(text: str) -> float | None:
    m = re.match(r"([\d.,]+)\s*GiB", text or "")
    return float(m.group(1).replace(",", "")) if m else None


def parse_aws_offer(offer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{instance_type: {vcpus, memory, gpus, price, arch}}`` for shared-tenancy Linux on-demand."""
    on_demand = offer.get("terms", {}).get("OnDemand", {})
    out: dict[str, dict[str, Any]] = {}
    for sku, prod in offer.get("products", {}).items():
        a = prod.get("attributes", {})
        if prod.get("productFamily") != "Compute Instance" or a.get("operatingSystem") != "Linux":
            continue
        if a.get("tenancy") != "Shared" or a.get("preInstalledSw", "NA") != "NA" or a.get("capacitystatus", "Used") != "Used":
            continue
        price = None
        for term in on_demand.get(sku, {}).values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") == "Hrs":
                    price = float(dim["pricePerUnit"]["USD"])
        if not price:
            continue
        arch = "arm64" if "Graviton" in a.get("physicalProcessor", "") else "x86_64"
        out[a["instanceType"]] = {
            "vcpus": float(a.get("vcpu", "nan")), "memory": _aws_memory(a.get("memory", "")),
            "gpus": int(a.get("gpu", "0") or 0), "price": price, "arch": arch,
        }  # fmt: skip
    return out


def aws_spot_and_zones(ec2: Any) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    """(zone name -> zone id, (instance type, zone name) -> latest Linux spot price) via boto3."""
    zones = {
        z["ZoneName"]: z.get("ZoneId", z["ZoneName"])
        for z in ec2.describe_availability_zones()["AvailabilityZones"]
        if z.get("State", "available") == "available"
    }
    latest: dict[tuple[str, str], tuple[_dt.datetime | str, float]] = {}
    kwargs: dict[str, Any] = {"ProductDescriptions": ["Linux/UNIX"], "StartTime": _dt.datetime.now(_dt.UTC)}
    while True:
        page = ec2.describe_spot_price_history(**kwargs)
        for h in page.get("SpotPriceHistory", []):
            key = (h["InstanceType"], h["AvailabilityZone"])
            stamp = h.get("Timestamp", "")
            if key not in latest or str(stamp) > str(latest[key][0]):
                latest[key] = (stamp, float(h["SpotPrice"]))
        token = page.get("NextToken")
        if not token:
            break
        kwargs["NextToken"] = token
    return zones, {k: v for k, (_, v) in latest.items()}


def refresh_aws(
    out_dir: str | Path,
    regions: Iterable[str],
    *,
    endpoint: str = AWS_PRICING_ENDPOINT,
    ec2_client: Callable[[str], Any] | None = None,
    ec2_endpoint: str | None = None,
) -> RefreshSummary:
    """Write ``<out>/aws/vms.csv``: one row per instance type and zone of each region.

    ``ec2_client(region)`` returns a boto3 EC2 client (default: ``boto3.client("ec2", region,
    endpoint_url=ec2_endpoint)``, credentials from the usual boto3 chain).
    """
    if ec2_client is None:
        import boto3

        def ec2_client(region: str) -> Any:
            return boto3.client("ec2", region_name=region, endpoint_url=ec2_endpoint)

    summary = RefreshSummary("aws", Path(out_dir) / "aws" / "vms.csv")
    rows: list[list[Any]] = []
    for region in regions:
        offer = get_json(f"{endpoint.rstrip('/')}/offers/v1.0/aws/AmazonEC2/current/{region}/index.json")
        types = parse_aws_offer(offer)
        zones, spot = aws_spot_and_zones(ec2_client(region))
        for itype, t in sorted(types.items()):
            acc, count, info = None, None, None
            if t["gpus"]:
                family = itype.split(".")[0]
                if family not in AWS_GPU_FAMILIES:
                    summary.skip(f"unknown GPU family {family}")
                    continue
                acc, mem = AWS_GPU_FAMILIES[family]
                count = t["gpus"]
                info = json.dumps({"Gpus": [{"Name": acc, "Count": count, "MemoryInfo": {"SizeInMiB": mem * 1024}}]})
            for zname, zid in sorted(zones.items()):
                rows.append([itype, acc, _num(count), _num(t["vcpus"]), _num(t["memory"]), info, _num(t["price"]),
                             _num(spot.get((itype, zname))), region, zid, t["arch"]])  # fmt: skip
    summary.rows = _write(summary.path, AWS_HEADER, rows)
    return summary


# -------------------------------------------------------------------------------------- Azure
# vCPUs from the size name; GiB per vCPU and GPU by family (letters before the number)
_AZURE_MEM_PER_CPU = {"D": 4.0, "Ds": 4.0, "Das": 4.0, "Dads": 4.0, "Dds": 4.0, "E": 8.0, "Es": 8.0, "Eas": 8.0,
                      "Eds": 8.0, "Eads": 8.0, "F": 2.0, "Fs": 2.0, "B": 4.0, "Bs": 4.0, "M": 28.0, "Ms": 28.0}  # fmt: skip
AZURE_GPU_SIZES = {
    # size (without Standard_): (GPU, count, vCPUs, GiB)
    "NC6s_v3": ("V100", 1, 6, 112), "NC12s_v3": ("V100", 2, 12, 224), "NC24s_v3": ("V100", 4, 24, 448),
    "NC4as_T4_v3": ("T4", 1, 4, 28), "NC8as_T4_v3": ("T4", 1, 8, 56), "NC16as_T4_v3": ("T4", 1, 16, 110),
    "NC64as_T4_v3": ("T4", 4, 64, 440), "NC24ads_A100_v4": ("A100-80GB", 1, 24, 220),
    "NC48ads_A100_v4": ("A100-80GB", 2, 48, 440), "NC96ads_A100_v4": ("A100-80GB", 4, 96, 880),
    "ND96asr_v4": ("A100", 8, 96, 900), "ND96amsr_A100_v4": ("A100-80GB", 8, 96, 1900),
    "ND96isr_H100_v5": ("H100", 8, 96, 1900), "NV36ads_A10_v5": ("A10", 1, 36, 440),
}  # fmt: skip


def azure_shape(arm_sku: str) -> tuple[str | None, int | None, float, float] | None:
    """(GPU, count, vCPUs, GiB) of an Azure size, or None when not known here."""
    size = arm_sku.removeprefix("Standard_")
    if size in AZURE_GPU_SIZES:
        g, n, c, m = AZURE_GPU_SIZES[size]
        return g, n, float(c), float(m)
    m = re.match(r"([A-Z])(\d+)([a-z]*)(?:_v(\d+))?$", size)
    if not m:
        return None
    family, cpus, feats = m.group(1), int(m.group(2)), m.group(3)
    per = _AZURE_MEM_PER_CPU.get(family + feats, _AZURE_MEM_PER_CPU.get(family))
    if per is None:
        return None
    return None, None, float(cpus), cpus * per


def azure_items(endpoint: str, query: str) -> Iterable[dict[str, Any]]:
    """Every item of a Retail Prices query, following ``NextPageLink``."""
    url: str | None = f"{endpoint.rstrip('/')}/api/retail/prices?{urllib.parse.urlencode({'$filter': query})}"
    while url:
        page = get_json(url)
        if "Items" not in page:
            raise RefreshError(f"Azure Retail Prices answered without Items: {str(page)[:200]}")
        yield from page["Items"]
        url = page.get("NextPageLink") or None


def refresh_azure(out_dir: str | Path, *, endpoint: str = AZURE_PRICES_ENDPOINT, regions: Iterable[str] | None = None) -> RefreshSummary:
    """Write ``<out>/azure/vms.csv`` from Linux consumption prices (spot from the ``Spot`` meters)."""
    summary = RefreshSummary("azure", Path(out_dir) / "azure" / "vms.csv")
    query = "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and currencyCode eq 'USD'"
    wanted = set(regions) if regions else None
    price: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for it in azure_items(endpoint, query):
        region, sku = it.get("armRegionName", ""), it.get("armSkuName", "")
        if not sku or (wanted and region not in wanted) or "Windows" in it.get("productName", ""):
            continue
        if it.get("unitOfMeasure") != "1 Hour" or "Low Priority" in it.get("skuName", ""):
            continue
        kind = "spot" if it.get("skuName", "").endswith(" Spot") else "ondemand"
        price[(sku, region)][kind] = float(it["retailPrice"])
    rows = []
    for (sku, region), p in sorted(price.items()):
        shape = azure_shape(sku)
        if shape is None or "ondemand" not in p:
            summary.skip("unknown size" if shape is None else "spot only")
            continue
        g, n, cpus, mem = shape
        info = json.dumps({"Gpus": [{"Name": g, "Count": n}]}) if g else None
        rows.append([sku, g, _num(n), _num(cpus), _num(mem), info, _num(p["ondemand"]), _num(p.get("spot")), region, "V1,V2"])
    summary.rows = _write(summary.path, AZURE_HEADER, rows)
    return summary


# ---------------------------------------------------------------------------------------- GCP
# machine family -> (billing resourceGroup / description key, shapes: name -> (vCPUs, GiB))
def _series(prefix: str, sizes: Iterable[int], gib_per_cpu: float) -> dict[str, tuple[float, float]]:
    return {f"{prefix}-{n}": (float(n), n * gib_per_cpu) for n in sizes}


GCP_FAMILIES: dict[str, dict[str, tuple[float, float]]] = {
    "N1": {**_series("n1-standard", (1, 2, 4, 8, 16, 32, 64, 96), 3.75), **_series("n1-highmem", (2, 4, 8, 16, 32, 64, 96), 6.5),
           **_series("n1-highcpu", (2, 4, 8, 16, 32, 64, 96), 0.9)},
    "N2": {**_series("n2-standard", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128), 4.0), **_series("n2-highmem", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128), 8.0),
           **_series("n2-highcpu", (2, 4, 8, 16, 32, 48, 64, 80, 96), 1.0)},
    "E2": {**_series("e2-standard", (2, 4, 8, 16, 32), 4.0), **_series("e2-highmem", (2, 4, 8, 16), 8.0)},
}  # fmt: skip
_GCP_GPU_WORDS = {"Tesla T4": "T4", "Tesla V100": "V100", "Tesla P100": "P100", "L4": "L4", "A100 80GB": "A100-80GB", "A100": "A100", "H100": "H100"}  # fmt: skip


def _gcp_price(sku: dict[str, Any]) -> float | None:
    try:
        rates = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
    except (KeyError, IndexError):
        return None
    rate = rates[-1]["unitPrice"]
    return int(rate.get("units") or 0) + int(rate.get("nanos") or 0) / 1e9


def gcp_skus(endpoint: str, api_key: str | None = None) -> Iterable[dict[str, Any]]:
    """Every Compute Engine SKU, following ``nextPageToken``."""
    token = ""
    while True:
        params = {"pageSize": "5000", **({"key": api_key} if api_key else {}), **({"pageToken": token} if token else {})}
        page = get_json(f"{endpoint.rstrip('/')}/v1/services/{GCP_COMPUTE_SERVICE}/skus?{urllib.parse.urlencode(params)}")
        yield from page.get("skus", [])
        token = page.get("nextPageToken") or ""
        if not token:
            return


def refresh_gcp(
    out_dir: str | Path,
    *,
    endpoint: str = GCP_BILLING_ENDPOINT,
    api_key: str | None = None,
    zones: dict[str, list[str]] | None = None,
) -> RefreshSummary:
    """Write ``<out>/gcp/vms.csv``: VM rows (family core + RAM price x shape) and GPU-only rows.

    ``zones`` maps region -> zones (the billing API is per region); default ``<region>-a/b/c``.
    """
    summary = RefreshSummary("gcp", Path(out_dir) / "gcp" / "vms.csv")
    unit: dict[tuple[str, str, str, str], float] = {}  # (family, core|ram|gpu name, usage, region)
    for sku in gcp_skus(endpoint, api_key):
        cat = sku.get("category", {})
        usage = {"OnDemand": "ondemand", "Preemptible": "spot"}.get(cat.get("usageType", ""))
        desc = sku.get("description", "")
        price = _gcp_price(sku)
        if usage is None or price is None or "Custom" in desc or "Sole Tenancy" in desc or "Commitment" in desc:
            continue
        if cat.get("resourceFamily") != "Compute":
            continue
        group = cat.get("resourceGroup", "")
        if group == "GPU":
            name = next((v for k, v in _GCP_GPU_WORDS.items() if f"Nvidia {k} GPU" in desc), None)
            what, family = ("gpu", name) if name else (None, None)
        else:
            family = next((f for f in GCP_FAMILIES if desc.startswith(f"{f} ") or f" {f} " in f" {desc}"), None)
            what = "core" if "Core" in desc else ("ram" if "Ram" in desc else None)
        if what is None or family is None:
            continue
        for region in sku.get("serviceRegions", []):
            unit[(family, what, usage, region)] = price
    rows = []
    regions = sorted({k[3] for k in unit})
    for region in regions:
        zs = (zones or {}).get(region) or [f"{region}-{z}" for z in "abc"]
        for family, shapes in GCP_FAMILIES.items():
            core, ram = unit.get((family, "core", "ondemand", region)), unit.get((family, "ram", "ondemand", region))
            if core is None or ram is None:
                continue
            score, sram = unit.get((family, "core", "spot", region)), unit.get((family, "ram", "spot", region))
            for name, (cpus, mem) in shapes.items():
                p = cpus * core + mem * ram
                sp = cpus * score + mem * sram if score is not None and sram is not None else None
                rows.extend([name, _num(cpus), _num(mem), None, None, None, region, z, _num(p), _num(sp)] for z in zs)
        for gpu in sorted({k[0] for k in unit if k[1] == "gpu" and k[3] == region}):
            p = unit.get((gpu, "gpu", "ondemand", region))
            if p is None:
                continue
            sp = unit.get((gpu, "gpu", "spot", region))
            for n in (1, 2, 4, 8):
                info = json.dumps({"Gpus": [{"Name": gpu, "Count": n}]})
                rows.extend(["", None, None, gpu, _num(n), info, region, z, _num(n * p), _num(None if sp is None else n * sp)] for z in zs)
    summary.rows = _write(summary.path, GCP_HEADER, rows)
    return summary
