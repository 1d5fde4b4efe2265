"""Map EC2 / botocore failures into the common taxonomy of `clouds.errors`.

EC2 codes (see the EC2 API error-code reference) fall into:

    capacity (the zone, for this instance type)   InsufficientInstanceCapacity, InsufficientHostCapacity,
        InsufficientCapacity, SpotMaxPriceTooLow, Unsupported (type not offered in the zone), spot request
        states capacity-not-available / capacity-oversubscribed / price-too-low, instances that went
        pending -> terminated with Server.InsufficientInstanceCapacity
    quota (the region)     InstanceLimitExceeded, VcpuLimitExceeded, MaxSpotInstanceCountExceeded, ...
    credentials (the cloud) AuthFailure, UnauthorizedOperation, InvalidClientTokenId, SignatureDoesNotMatch, ...
    config (the cloud)     OptInRequired, InvalidAMIID.*, InvalidKeyPair.*, other InvalidParameter*, ...
    transient (nothing)    RequestLimitExceeded, Throttling, InternalError, Unavailable, any other 5xx,
        connection errors and read timeouts
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    TransientError,
)

AWS = "aws"

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientCapacity",
        "InsufficientCapacityOnOutpost",
        "SpotMaxPriceTooLow",
        "capacity-not-available",
        "capacity-oversubscribed",
        "price-too-low",
        "Server.InsufficientInstanceCapacity",
        "Server.SpotInstanceTermination",
    }
)
QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "InsufficientFreeAddressesInSubnet",
        "AddressLimitExceeded",
        "VolumeLimitExceeded",
        "MaxIOPSLimitExceeded",
        "ResourceLimitExceeded",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "Blocked",
        "PendingVerification",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

FIX_CREDENTIALS = (
    "give the aws connection valid keys (aws_access_key_id / aws_secret_access_key, or a profile / role) "
    "with ec2:RunInstances, ec2:Describe*, ec2:CreateTags, ec2:TerminateInstances, ec2:ImportKeyPair and "
    "ec2:CreateSecurityGroup / AuthorizeSecurityGroupIngress permissions"
)
FIX_QUOTA = (
    "request a higher EC2 quota (Service Quotas: 'Running On-Demand ... instances' or 'All ... Spot Instance "
    "Requests') for this region, or allow other regions/clouds"
)
FIX_OPT_IN = "enable the region / subscribe to the AMI's product in the AWS console, or exclude this region"
_INSTANCE_TYPE_RE = re.compile(r"instance ?type", re.IGNORECASE)


def error_code(exc: BaseException) -> str | None:
    """The EC2 error code of a botocore ClientError (None for other exceptions)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return None


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Message") or exc)
    return str(exc)


def classify_code(
    code: str | None,
    message: str,
    *,
    status: int | None = None,
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify an EC2 error code (or spot / state-reason code) with its message and HTTP status."""
    where: dict[str, Any] = {"cloud": AWS, "region": region, "zone": zone, "instance_type": instance_type}
    text = f"{code}: {message}" if code else message
    if code in CAPACITY_CODES:
        return CapacityError(text, **where)
    if code == "Unsupported":
        # "Your requested instance type (x) is not supported in your requested Availability Zone (z)"
        return CapacityError(f"{text} (not offered here)", **where)
    if code in QUOTA_CODES:
        return QuotaError(text, fix=FIX_QUOTA, **where)
    if code in CREDENTIAL_CODES:
        return CredentialsError(text, fix=FIX_CREDENTIALS, **where)
    if code == "OptInRequired":
        return ConfigError(text, fix=FIX_OPT_IN, **where)
    if code in TRANSIENT_CODES or (code is None and status is not None and status >= 500):
        return TransientError(text, **where)
    if code in ("InvalidParameterValue", "InvalidInstanceType") and _INSTANCE_TYPE_RE.search(message):
        # The type does not exist in this region: block the region for it (zone unknown -> region).
        return CapacityError(f"{text} (instance type not offered in this region)", **{**where, "zone": None})
    if code and (code.startswith("InvalidAMIID") or code == "InvalidAMIName.NotFound"):
        return ConfigError(text, fix="set resources.image_id to an AMI that exists in this region", **where)
    if code and code.startswith(("InvalidParameter", "InvalidKeyPair", "InvalidGroup", "MissingParameter")):
        return ConfigError(text, fix="check the instance type, image, disk and network settings", **where)
    if status is not None and status >= 500:
        return TransientError(text, **where)
    return ProvisionError(text, **where)


def classify_aws_error(
    exc: BaseException,
    *,
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify any exception raised while talking to EC2."""
    if isinstance(exc, ProvisionError):
        return exc
    where: dict[str, Any] = {"region": region, "zone": zone, "instance_type": instance_type}
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - boto3 is an optional extra
        bex = None
    if bex is not None:
        if isinstance(exc, bex.ClientError):
            return classify_code(error_code(exc), error_message(exc), status=http_status(exc), **where)
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError | bex.NoAuthTokenError):
            return CredentialsError(f"{type(exc).__name__}: {exc}", cloud=AWS, fix=FIX_CREDENTIALS, **where)
        if isinstance(exc, bex.ProfileNotFound):
            return ConfigError(
                str(exc),
                cloud=AWS,
                fix="create the profile or drop profile_name from the aws connection",
                **where,
            )
        if isinstance(exc, bex.NoRegionError):
            return ConfigError(
                str(exc), cloud=AWS, fix="set a region (resources.region or region_name)", **where
            )
        if isinstance(exc, bex.ParamValidationError):
            return ConfigError(str(exc), cloud=AWS, fix="check the launch parameters", **where)
        if isinstance(exc, bex.ConnectionError | bex.HTTPClientError):
            return TransientError(f"{type(exc).__name__}: {exc}", cloud=AWS, **where)
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{type(exc).__name__}: {exc}", cloud=AWS, **where)
    return ProvisionError(f"{type(exc).__name__}: {exc}", cloud=AWS, **where)
