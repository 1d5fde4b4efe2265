"""Map Compute Engine failures into the common taxonomy of `clouds.errors`.

GCE reports a failed create in two places: synchronously (an HTTP error whose ``error.errors[]``
carry a ``reason`` such as ``forbidden`` or ``quotaExceeded``) or in the finished zone operation
(``error.errors[]`` with a ``code`` such as ``ZONE_RESOURCE_POOL_EXHAUSTED``). Both land here:

    capacity (the zone)      ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS], resourcePoolExhausted,
                             machine or accelerator type not offered in the zone
    quota (region / cloud)   QUOTA_EXCEEDED, quotaExceeded; global (the whole cloud) when the metric is
                             an ``*_ALL_REGIONS`` one (``GPUS_ALL_REGIONS``) or the limit is "globally"
    credentials (the cloud)  HTTP 401, 403 forbidden / insufficientPermissions, no default credentials
    config (the cloud)       API not enabled, project not found, bad image / field values
    transient (nothing)      429, rateLimitExceeded, RESOURCE_OPERATION_RATE_EXCEEDED, 5xx, timeouts
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    TransientError,
)

GCP = "gcp"

CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "resourcePoolExhausted",
        "STOCKOUT",
    }
)
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "quotaExceeded", "QUOTA_LIMIT_EXCEEDED"})
TRANSIENT_CODES = frozenset(
    {
        "RESOURCE_OPERATION_RATE_EXCEEDED",
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "backendError",
        "internalError",
        "INTERNAL_ERROR",
        "SERVICE_UNAVAILABLE",
        "RESOURCE_NOT_READY",
    }
)
CREDENTIAL_CODES = frozenset({"forbidden", "insufficientPermissions", "authError", "PERMISSION_DENIED"})
CONFIG_CODES = frozenset({"accessNotConfigured", "SERVICE_DISABLED", "billingNotEnabled", "projectNotFound"})

FIX_CREDENTIALS = (
    "give the google_cloud_platform connection a service account (keyfile_dict or key_path, or "
    "application-default credentials) with roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser "
    "on the project"
)
FIX_QUOTA = "request a higher Compute Engine quota (IAM & Admin > Quotas) for this metric, or allow other regions/clouds"
FIX_GLOBAL_QUOTA = "request a higher global GCP quota (e.g. GPUS_ALL_REGIONS) or allow other clouds"
FIX_FIREWALL = (
    "give the GCP service account compute.firewalls.get/create/delete on the project (e.g. "
    "roles/compute.securityAdmin), or set gcp_manage_firewall=false in the sky connection and create the "
    "ingress rules yourself (tcp:22 to the network tag sky-ssh, resources.ports to the tag sky-<cluster>)"
)
FIX_API = "enable the Compute Engine API (gcloud services enable compute.googleapis.com) and billing on the project"
_GLOBAL_METRIC = re.compile(r"_ALL_REGIONS|ALL-REGIONS|all_regions|\bglobally\b")
_REGION_IN = re.compile(r"in region ([a-z]+-[a-z]+\d+)")
_NOT_IN_ZONE = re.compile(
    r"(machine ?type|acceleratorTypes?|accelerator type).*(does not exist|not (?:found|available|supported))"
    r"|does not exist in zone|is not available in zone|not supported in zone",
    re.IGNORECASE,
)


def _quota_is_global(message: str, details: Iterable[Mapping[str, Any]]) -> bool:
    """A quota of the whole project: an ``*_ALL_REGIONS`` metric, or a limit stated "globally"."""
    names = [message]
    for detail in details:
        info = detail.get("quotaInfo") or {}
        names += [str(info.get("metricName") or ""), str(info.get("limitName") or "")]
    return bool(_GLOBAL_METRIC.search(" ".join(names)))


def classify_code(
    code: str | None,
    message: str,
    *,
    status: int | None = None,
    details: Iterable[Mapping[str, Any]] = (),
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify one GCE error (operation ``code`` or HTTP ``reason``) with its message and HTTP status."""
    where: dict[str, Any] = {"cloud": GCP, "region": region, "zone": zone, "instance_type": instance_type}
    text = f"{code}: {message}" if code else message
    details = list(details)
    if code in CAPACITY_CODES:
        return CapacityError(text, **where)
    if code in QUOTA_CODES or (status in (403, 429) and "Quota '" in message and "exceeded" in message):
        if _quota_is_global(message, details):
            return QuotaError(text, global_quota=True, fix=FIX_GLOBAL_QUOTA, **where)
        found = _REGION_IN.search(message)
        return QuotaError(text, fix=FIX_QUOTA, **{**where, "region": found.group(1) if found else region})
    if code in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
        return TransientError(text, **where)
    if code in CONFIG_CODES or "has not been used in project" in message or "is disabled" in message:
        return ConfigError(text, fix=FIX_API, **where)
    if status == 401 or code in CREDENTIAL_CODES or status == 403:
        return CredentialsError(text, fix=FIX_CREDENTIALS, **where)
    if _NOT_IN_ZONE.search(message):
        return CapacityError(f"{text} (not offered in this zone)", **where)
    if code in ("UNSUPPORTED_OPERATION",) and "spot" in message.lower():
        return CapacityError(text, **where)
    if status in (400, 404) or (code or "").startswith(("invalid", "INVALID", "notFound", "RESOURCE_NOT_FOUND")):
        return ConfigError(text, fix="check the machine type, accelerator, image, disk and network settings", **where)
    return ProvisionError(text, **where)


def classify_operation_errors(
    errors: Iterable[Any], *, status: int | None = None, **where: Any
) -> ProvisionError:
    """Classify the ``error.errors[]`` of a finished operation (proto messages or dicts); the most
    telling error wins (capacity and quota before anything else)."""
    classified = []
    for err in errors:
        if isinstance(err, Mapping):
            code, message, details = err.get("code"), err.get("message") or "", err.get("errorDetails") or ()
        else:
            code, message = getattr(err, "code", None), getattr(err, "message", "") or ""
            details = [_detail_dict(d) for d in getattr(err, "error_details", ()) or ()]
        classified.append(classify_code(code, message, status=status, details=details, **where))
    if not classified:
        return ProvisionError("operation failed without error details", cloud=GCP, **where)
    rank = (CapacityError, QuotaError, CredentialsError, ConfigError, TransientError, ProvisionError)
    return min(classified, key=lambda e: next(i for i, cls in enumerate(rank) if isinstance(e, cls)))


def _detail_dict(detail: Any) -> dict[str, Any]:
    info = getattr(detail, "quota_info", None)
    if info is None or not (info.metric_name or info.limit_name):
        return {}
    return {"quotaInfo": {"metricName": info.metric_name, "limitName": info.limit_name, "dimensions": dict(info.dimensions)}}


def classify_gcp_error(
    exc: BaseException,
    *,
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify any exception raised while talking to Compute Engine."""
    if isinstance(exc, ProvisionError):
        return exc
    where: dict[str, Any] = {"region": region, "zone": zone, "instance_type": instance_type}
    try:
        from google.api_core import exceptions as gex
        from google.auth import exceptions as aex
    except ImportError:  # pragma: no cover - google-cloud-compute is an optional extra
        gex = aex = None
    if aex is not None:
        if isinstance(exc, aex.DefaultCredentialsError | aex.RefreshError):
            return CredentialsError(f"{type(exc).__name__}: {exc}", cloud=GCP, fix=FIX_CREDENTIALS, **where)
        if isinstance(exc, aex.TransportError):
            return TransientError(f"{type(exc).__name__}: {exc}", cloud=GCP, **where)
    if gex is not None:
        if isinstance(exc, gex.GoogleAPICallError):
            errors = [e for e in (exc.errors or ()) if isinstance(e, Mapping)]
            status = exc.code if isinstance(exc.code, int) else None
            reason = next((e.get("reason") for e in errors if e.get("reason")), None) or exc.reason
            return classify_code(reason, exc.message or str(exc), status=status, details=errors, **where)
        if isinstance(exc, gex.RetryError | gex.DeadlineExceeded):
            return TransientError(f"{type(exc).__name__}: {exc}", cloud=GCP, **where)
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{type(exc).__name__}: {exc}", cloud=GCP, **where)
    try:
        import requests
    except ImportError:  # pragma: no cover
        requests = None
    if requests is not None and isinstance(exc, requests.ConnectionError | requests.Timeout):
        return TransientError(f"{type(exc).__name__}: {exc}", cloud=GCP, **where)
    return ProvisionError(f"{type(exc).__name__}: {exc}", cloud=GCP, **where)
