"""Egress price tables: free in region, inter-region, cross-cloud tiers, local."""

from __future__ import annotations

import pytest

from airflow_provider_sky.catalog.egress import (
    Location,
    egress_cost,
    egress_price_per_gb,
    max_price_per_gb,
    tiered_cost,
)
from airflow_provider_sky.catalog.regions import continent_of


def test_same_region_is_free() -> None:
    assert egress_cost("aws", "us-east-1", "aws", "us-east-1", 1000) == 0
    assert egress_cost("gcp", "us-central1", "gcp", "us-central1", 1000) == 0


def test_inter_region_prices() -> None:
    assert egress_cost("aws", "us-east-1", "aws", "us-west-2", 100) == pytest.approx(2.0)
    assert egress_cost("aws", "us-east-1", "aws", "us-east-2", 100) == pytest.approx(1.0)
    assert egress_cost("aws", "ap-northeast-1", "aws", "us-east-1", 100) == pytest.approx(9.0)
    assert egress_cost("gcp", "us-central1", "gcp", "us-east1", 100) == pytest.approx(2.0)
    assert egress_cost("gcp", "us-central1", "gcp", "europe-west4", 100) == pytest.approx(5.0)
    assert egress_cost("azure", "eastus", "azure", "westeurope", 100) == pytest.approx(5.0)
    assert egress_cost("azure", "japaneast", "azure", "koreacentral", 100) == pytest.approx(8.0)


def test_cross_cloud_uses_internet_tiers() -> None:
    assert egress_cost("aws", "us-east-1", "gcp", "us-central1", 100) == pytest.approx(9.0)
    # 20 TiB from AWS: 10 TiB at 0.09 + 10 TiB at 0.085.
    assert egress_cost("aws", "us-east-1", "azure", "eastus", 20 * 1024) == pytest.approx(10240 * 0.09 + 10240 * 0.085)
    assert egress_cost("gcp", "us-central1", "aws", "us-east-1", 2048) == pytest.approx(1024 * 0.12 + 1024 * 0.11)
    assert tiered_cost(((10.0, 1.0), (float("inf"), 0.5)), 30) == pytest.approx(20.0)
    assert egress_price_per_gb(Location("azure", "brazilsouth"), Location("aws", "us-east-1")) == pytest.approx(0.181)
    assert max_price_per_gb() >= 0.181


def test_local_and_buckets() -> None:
    assert egress_cost("local", "local", "aws", "us-east-1", 100) == 0  # ingress is free
    assert egress_cost("aws", "us-east-1", "local", "local", 100) == pytest.approx(9.0)
    assert egress_cost("aws", None, "aws", "eu-west-1", 100) == 0  # bucket region unknown


def test_continents() -> None:
    assert continent_of("aws", "ap-southeast-2") == "oc"
    assert continent_of("aws", "ap-southeast-1") == "asia"
    assert continent_of("gcp", "northamerica-northeast1") == "na"
    assert continent_of("azure", "australiaeast") == "oc"
    assert continent_of("azure", "austriaeast") == "eu"
    assert continent_of("azure", "southeastasia") == "asia"
    assert continent_of("azure", "brazilsouth") == "sa"
    assert continent_of("azure", "westus2") == "na"
