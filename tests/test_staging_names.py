"""Staging bucket names and keys: deterministic, distinct per (cloud, region, account), valid everywhere."""

from __future__ import annotations

import pytest

from airflow_provider_sky.storage import parse_uri
from airflow_provider_sky.storage.staging import (
    bucket_name_problem,
    staging_bucket_name,
    staging_key,
    staging_uri,
)

REGIONS = {
    "aws": ["us-east-1", "ap-southeast-2", "us-gov-west-1", "il-central-1"],
    "gcp": ["us-central1", "europe-west4", "northamerica-northeast2", "us"],
    "azure": ["eastus", "westeurope", "southafricanorth", "brazilsoutheast"],
}


@pytest.mark.parametrize("cloud", sorted(REGIONS))
def test_names_are_deterministic_valid_and_distinct(cloud: str) -> None:
    names = set()
    for region in REGIONS[cloud]:
        for account in ("123456789012", "proj-a", "devstoreaccount1", None):
            name = staging_bucket_name(cloud, region, account)
            assert name == staging_bucket_name(cloud, region, account)  # same on every worker/run
            assert name.startswith(f"sky-stage-{region}-")
            assert 3 <= len(name) <= 63
            assert bucket_name_problem(cloud, name) is None, name
            names.add(name)
    assert len(names) == len(REGIONS[cloud]) * 4  # region and account both change the name


def test_same_region_on_two_clouds_or_accounts_differs() -> None:
    assert staging_bucket_name("aws", "us-east-1", "a") != staging_bucket_name("aws", "us-east-1", "b")
    assert staging_bucket_name("aws", "us", "x") != staging_bucket_name("gcp", "us", "x")
    # Case and whitespace of the region do not matter.
    assert staging_bucket_name("gcp", " US-Central1 ", "p") == staging_bucket_name("gcp", "us-central1", "p")


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_odd_regions_still_give_valid_names(cloud: str) -> None:
    for region in (None, "", "Weird_Region.9", "x" * 200, "--a--b--", "google-1"):
        name = staging_bucket_name(cloud, region, "acct")
        assert bucket_name_problem(cloud, name) is None, (region, name)
        assert len(name) <= 63


@pytest.mark.parametrize(
    ("cloud", "name"),
    [
        ("aws", "Upper-Case"),
        ("aws", "ab"),
        ("aws", "a" * 64),
        ("aws", "xn--bucket"),
        ("aws", "bucket-s3alias"),
        ("aws", "192.168.1.1"),
        ("aws", "a..b"),
        ("gcp", "goog-bucket"),
        ("gcp", "my-google-data"),
        ("gcp", "-start"),
        ("azure", "double--hyphen"),
        ("azure", "under_score"),
        ("azure", "trailing-"),
        ("azure", "has.dot"),
        ("nowhere", "name"),
    ],
)
def test_invalid_names_are_reported(cloud: str, name: str) -> None:
    assert bucket_name_problem(cloud, name)


def test_staging_keys_and_uris() -> None:
    assert staging_key("s3://src/data/") == "s3/src/data/"
    assert staging_key("gs://b/x/file.csv") == "gs/b/x/file.csv"
    assert staging_key("az://acct/cont/p/") == "az/acct/cont/p/"
    assert staging_key("https://acct.blob.core.windows.net/cont/p/") == "az/acct/cont/p/"
    assert staging_key("file:///data/in/") == "file/data/in/"
    assert staging_uri("aws", "sky-stage-x", "k/") == "s3://sky-stage-x/k/"
    assert staging_uri("gcp", "sky-stage-x", "k/") == "gs://sky-stage-x/k/"
    assert staging_uri("azure", "sky-stage-x", "k/", account="acct") == "az://acct/sky-stage-x/k/"
    assert staging_uri("local", "local", "k/", local_root="/tmp/st/") == "file:///tmp/st/local/k/"
    for uri in ("s3://sky-stage-x/k/", "az://acct/sky-stage-x/k/"):
        assert parse_uri(uri).bucket == "sky-stage-x"
    with pytest.raises(ValueError, match="storage account"):
        staging_uri("azure", "b", "k")
    with pytest.raises(ValueError, match="no staging buckets"):
        staging_uri("ssh", "b", "k")
