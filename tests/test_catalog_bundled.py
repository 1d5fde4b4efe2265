"""The bundled catalog, the v8 loader (incl. GCP host joins) and the indexed lookup."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from airflow_provider_sky.catalog import CatalogFormatError, OfferingQuery, default_catalog, load_catalog
from airflow_provider_sky.catalog.loader import DEFAULT_CATALOG_DIR


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


def test_bundled_catalog_is_small_dated_and_complete(cat) -> None:
    size = sum(p.stat().st_size for p in DEFAULT_CATALOG_DIR.rglob("*") if p.is_file())
    assert size < 1_000_000
    assert cat.date and cat.date[:4].isdigit()
    assert set(cat.clouds) == {"aws", "gcp", "azure", "local"}
    for acc in ("T4", "L4", "A10G", "V100", "A100", "A100-80GB", "H100"):
        rows = cat.find(OfferingQuery(accelerator=acc, accelerator_count=8 if acc in ("A100", "A100-80GB", "H100") else None))
        assert len(rows), acc
    for cloud in ("aws", "gcp", "azure"):
        rows = cat.find(OfferingQuery(cloud=cloud, cpus=2, cpus_at_least=True))
        regions = set(cat.table.region[rows])
        assert len(regions) >= 3, cloud
        assert np.isfinite(cat.table.spot_price[rows]).any()
    az = cat.table.cloud == "azure"
    assert (cat.table.zone[az] == "").all()
    assert (cat.table.zone[cat.table.cloud == "aws"] != "").all()


def test_cpu_queries_use_exact_and_at_least(cat) -> None:
    exact = cat.find(OfferingQuery(cpus=8, cpus_at_least=False))
    assert len(exact) and (cat.table.vcpus[exact] == 8).all()
    more = cat.find(OfferingQuery(cpus=8, memory_gib=60))
    assert (cat.table.vcpus[more] >= 8).all() and (cat.table.memory_gib[more] >= 60).all()
    assert (cat.table.accelerator[more] == "").all()  # CPU requests do not land on GPU VMs


def test_pins_spot_and_instance_type(cat) -> None:
    rows = cat.find(OfferingQuery(accelerator="v100", accelerator_count=1, cloud="aws", region="us-east-1", use_spot=True))
    assert len(rows)
    assert set(cat.table.instance_type[rows]) == {"p3.2xlarge"}
    assert np.isfinite(cat.table.spot_price[rows]).all()
    by_type = cat.find(OfferingQuery(instance_type="p3.2xlarge"))
    assert set(cat.table.region[by_type]) >= {"us-east-1", "us-west-2"}
    assert not len(cat.find(OfferingQuery(instance_type="p3.2xlarge", accelerator="A100")))
    zone = cat.table.zone[rows[0]]
    assert set(cat.table.zone[cat.find(OfferingQuery(accelerator="V100", zone=zone))]) == {zone}


def test_gcp_accelerators_are_joined_with_hosts(cat) -> None:
    a100 = cat.find(OfferingQuery(accelerator="A100", accelerator_count=8, cloud="gcp"))
    assert set(cat.table.instance_type[a100]) == {"a2-highgpu-8g"}
    t4 = cat.find(OfferingQuery(accelerator="T4", accelerator_count=1, cloud="gcp"))
    assert all(str(t).startswith("n1-") for t in cat.table.instance_type[t4])
    # GPU-only host families are not CPU offerings.
    cpu = cat.find(OfferingQuery(cloud="gcp", cpus=1))
    assert not any(str(t).startswith(("a2-", "a3-", "g2-")) for t in cat.table.instance_type[cpu])


def test_gcp_join_prices_from_a_tiny_v8_dir(tmp_path: Path) -> None:
    (tmp_path / "gcp").mkdir()
    (tmp_path / "gcp" / "vms.csv").write_text(
        "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n"
        "n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.08\n"
        "n1-standard-32,32.0,120.0,,,,us-central1,us-central1-a,1.52,0.32\n"
        ",,,V100,1,,us-central1,us-central1-a,2.48,0.74\n"
        "a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-a,0.9,0.3\n"
        ",,,A100,1,,us-central1,us-central1-a,2.9,\n"
        ",,,tpu-v2-8,1,tpu-v2-8,us-central1,us-central1-b,4.5,1.35\n"
    )
    cat = load_catalog(tmp_path, include_local=False)
    v100 = cat.find(OfferingQuery(accelerator="V100", accelerator_count=1))
    assert [cat.offering(i).instance_type for i in v100] == ["n1-standard-8"]  # 32 vCPUs exceeds V100:1's limit
    o = cat.offering(v100[0])
    assert o.price == pytest.approx(0.38 + 2.48) and o.spot_price == pytest.approx(0.08 + 0.74)
    assert o.gpu_memory_gib == 16
    a100 = cat.offering(cat.find(OfferingQuery(accelerator="A100", accelerator_count=1))[0])
    assert a100.instance_type == "a2-highgpu-1g" and a100.price == pytest.approx(3.8) and math.isnan(a100.spot_price)
    assert not len(cat.find(OfferingQuery(accelerator="A100", accelerator_count=1, use_spot=True)))
    tpu = cat.offering(cat.find(OfferingQuery(accelerator="tpu-v2-8", accelerator_count=1))[0])
    assert tpu.instance_type == "TPU-VM" and tpu.price == pytest.approx(4.5)
    pinned = cat.find(OfferingQuery(instance_type="a2-highgpu-1g"))  # the type implies its GPU
    assert [cat.offering(i).accelerators for i in pinned] == [{"A100": 1}]


def test_loader_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CatalogFormatError, match="does not exist"):
        load_catalog(tmp_path / "nope")
    with pytest.raises(CatalogFormatError, match=r"no <cloud>/vms\.csv"):
        load_catalog(tmp_path)
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "vms.csv").write_text("Foo,Bar\n1,2\n")
    with pytest.raises(CatalogFormatError, match="missing columns"):
        load_catalog(tmp_path)


def test_local_offering_only_when_pinned(cat) -> None:
    local = cat.find(OfferingQuery(cloud="local", cpus=64, memory_gib=1024))
    assert len(local) == 1 and cat.offering(local[0]).price == 0
    assert not len(cat.find(OfferingQuery(cloud="local", accelerator="V100", accelerator_count=1)))
    assert "local" not in set(cat.table.cloud[cat.find(OfferingQuery(cpus=1))])


def test_explanations_for_missing_offerings(cat) -> None:
    msg = cat.explain_missing(OfferingQuery(accelerator="A100", accelerator_count=16, region="eu-north-1"))
    assert "nearest offerings" in msg and "A100" in msg
    assert "did you mean" in cat.explain_missing(OfferingQuery(accelerator="V10O", accelerator_count=1))
    assert "not in the catalog" in cat.explain_missing(OfferingQuery(cloud="oci"))
