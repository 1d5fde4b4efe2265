"""EC2 / botocore error classification and small AWS helpers (no server needed)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from airflow_provider_sky.clouds.aws import AwsCloud, client_token
from airflow_provider_sky.clouds.aws_errors import classify_aws_error, classify_code
from airflow_provider_sky.clouds.aws_resources import architecture_of, key_pair_name
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    Scope,
    TransientError,
)


def client_error(code: str, message: str = "m", status: int = 400, op: str = "RunInstances") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InsufficientInstanceCapacity", 500, CapacityError),
        ("InsufficientHostCapacity", 500, CapacityError),
        ("SpotMaxPriceTooLow", 400, CapacityError),
        ("capacity-not-available", 400, CapacityError),
        ("Server.InsufficientInstanceCapacity", 400, CapacityError),
        ("Unsupported", 400, CapacityError),
        ("InstanceLimitExceeded", 400, QuotaError),
        ("VcpuLimitExceeded", 400, QuotaError),
        ("MaxSpotInstanceCountExceeded", 400, QuotaError),
        ("AuthFailure", 401, CredentialsError),
        ("UnauthorizedOperation", 403, CredentialsError),
        ("InvalidClientTokenId", 403, CredentialsError),
        ("OptInRequired", 401, ConfigError),
        ("InvalidAMIID.NotFound", 400, ConfigError),
        ("InvalidParameterCombination", 400, ConfigError),
        ("RequestLimitExceeded", 503, TransientError),
        ("Throttling", 400, TransientError),
        ("InternalError", 500, TransientError),
        ("SomethingNew", 503, TransientError),
        ("SomethingNew", 400, ProvisionError),
    ],
)
def test_client_error_codes(code: str, status: int, expected: type) -> None:
    err = classify_aws_error(client_error(code, status=status), region="us-east-1", zone="us-east-1a",
                             instance_type="p5.48xlarge")  # fmt: skip
    assert type(err) is expected
    assert (err.cloud, err.region, err.zone, err.instance_type) == ("aws", "us-east-1", "us-east-1a", "p5.48xlarge")
    assert code in err.message
    if expected in (QuotaError, CredentialsError, ConfigError):
        assert err.fix


def test_scopes_drive_blocking() -> None:
    where = {"region": "us-east-1", "zone": "us-east-1a"}
    assert classify_code("InsufficientInstanceCapacity", "x", **where).blocked().zone == "us-east-1a"
    assert classify_code("VcpuLimitExceeded", "x", **where).scope is Scope.REGION
    assert classify_code("AuthFailure", "x", **where).scope is Scope.CLOUD
    assert classify_code("RequestLimitExceeded", "x", **where).blocked() is None
    not_here = classify_code("InvalidParameterValue", "Invalid value 'p9.x' for InstanceType", **where)
    assert isinstance(not_here, CapacityError) and not_here.zone is None
    assert not_here.blocked().region == "us-east-1" and not_here.blocked().zone is None
    other = classify_code("InvalidParameterValue", "Value (x) for parameter iops is invalid", **where)
    assert isinstance(other, ConfigError)
    assert isinstance(classify_code(None, "gateway", status=502), TransientError)


def test_botocore_exceptions() -> None:
    assert isinstance(classify_aws_error(NoCredentialsError()), CredentialsError)
    assert isinstance(classify_aws_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")), TransientError)
    assert isinstance(classify_aws_error(ReadTimeoutError(endpoint_url="http://127.0.0.1:1")), TransientError)
    assert isinstance(classify_aws_error(ParamValidationError(report="bad")), ConfigError)
    assert isinstance(classify_aws_error(TimeoutError("slow")), TransientError)
    same = CapacityError("x", cloud="aws")
    assert classify_aws_error(same) is same
    assert isinstance(AwsCloud().classify_error(client_error("VcpuLimitExceeded")), QuotaError)


def test_helpers() -> None:
    assert architecture_of("m7g.large") == "arm64" and architecture_of("g5g.xlarge") == "arm64"
    assert architecture_of("c6gn.16xlarge") == "arm64"
    assert architecture_of("g5.xlarge") == "x86_64" and architecture_of("g4dn.xlarge") == "x86_64"
    assert architecture_of("p4d.24xlarge") == "x86_64"
    assert key_pair_name(b"ssh-ed25519 AAAA") == key_pair_name(b"ssh-ed25519 AAAA") != key_pair_name(b"other")
    token = client_token("c" * 40, "us-east-1", None, "p5.48xlarge", True, 16, 123456, "ami-0123456789abcdef0")
    assert token.isascii() and len(token) <= 64


def test_launch_needs_an_instance_type() -> None:
    with pytest.raises(ConfigError, match="instance type"):
        AwsCloud().launch("c", 1, None, region="us-east-1")
