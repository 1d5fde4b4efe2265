"""The failure taxonomy: scopes, what to block, messages with the fix."""

from __future__ import annotations

import pytest

from airflow_provider_sky.clouds.errors import (
    Blocked,
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    Scope,
    TransientError,
)

WHERE = {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a", "instance_type": "p3.2xlarge"}


@pytest.mark.parametrize(
    ("error", "scope", "blocked"),
    [
        (CapacityError("no capacity", **WHERE), Scope.ZONE, Blocked("aws", "us-east-1", "us-east-1a")),
        (QuotaError("quota", **WHERE), Scope.REGION, Blocked("aws", "us-east-1")),
        (QuotaError("quota", global_quota=True, **WHERE), Scope.CLOUD, Blocked("aws")),
        (ConfigError("bad", fix="do x", **WHERE), Scope.CLOUD, Blocked("aws")),
        (CredentialsError("no creds", fix="aws configure", **WHERE), Scope.CLOUD, Blocked("aws")),
        (TransientError("throttled", **WHERE), Scope.NONE, None),
        (ProvisionError("unknown", **WHERE), Scope.REGION, Blocked("aws", "us-east-1")),
    ],
)
def test_scopes(error, scope, blocked):
    assert isinstance(error, ProvisionError)
    assert error.scope is scope
    assert error.blocked() == blocked
    assert error.retryable is (scope is Scope.NONE)
    assert error.instance_type == "p3.2xlarge"
    data = error.to_dict()
    assert data["type"] == type(error).__name__ and data["scope"] == scope.value


def test_capacity_without_zone_blocks_the_region():
    assert CapacityError("x", cloud="gcp", region="us-central1").blocked() == Blocked("gcp", "us-central1")


def test_message_names_location_and_fix():
    err = CredentialsError("no AWS credentials found", cloud="aws", fix="run `aws configure`")
    assert str(err) == "no AWS credentials found [aws]; fix: run `aws configure`"
    assert TransientError("slow down", retry_after=3.0).retry_after == 3.0
