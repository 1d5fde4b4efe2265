"""Map Azure Resource Manager failures into the common taxonomy of `clouds.errors`.

ARM reports a failed VM create synchronously (HTTP 4xx with ``{"error": {"code", "message"}}``:
``SkuNotAvailable``, ``OperationNotAllowed`` for quota, ``AuthorizationFailed``) or in the failed
long-running operation (``AllocationFailed``, ``ZonalAllocationFailed``). Both land here:

    capacity, the region   SkuNotAvailable, AllocationFailed, OverconstrainedAllocationRequest
                           (for this VM size and market; the zone part is unknown or irrelevant)
    capacity, the zone     ZonalAllocationFailed, OverconstrainedZonalAllocationRequest
    quota (the region)     QuotaExceeded, OperationNotAllowed that mentions a quota (Azure quotas
                           are per region and VM family)
    credentials (cloud)    AuthorizationFailed, AuthenticationFailed, InvalidAuthenticationToken*,
                           ExpiredAuthenticationToken, HTTP 401/403, azure-identity failures
    config (cloud)         MissingSubscriptionRegistration, SubscriptionNotFound, InvalidParameter,
                           image / marketplace errors, other OperationNotAllowed
    transient (nothing)    TooManyRequests / 429, InternalServerError / 5xx, connection errors
"""

from __future__ import annotations

from typing import Any

from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    TransientError,
)

AZURE = "azure"

REGION_CAPACITY = frozenset({"SkuNotAvailable", "AllocationFailed", "OverconstrainedAllocationRequest"})
ZONE_CAPACITY = frozenset({"ZonalAllocationFailed", "OverconstrainedZonalAllocationRequest"})
QUOTA_CODES = frozenset({"QuotaExceeded", "OperationQuotaExceeded", "LowPriorityQuotaExceeded"})
CREDENTIAL_CODES = frozenset(
    {
        "AuthorizationFailed",
        "LinkedAuthorizationFailed",
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenTenant",
        "InvalidAuthenticationTokenAudience",
        "ExpiredAuthenticationToken",
    }
)
CONFIG_CODES = frozenset(
    {
        "MissingSubscriptionRegistration",
        "SubscriptionNotFound",
        "InvalidSubscriptionId",
        "DisallowedLocation",
        "LocationNotAvailableForResourceType",
        "RequestDisallowedByPolicy",
        "ImageNotFound",
        "PlatformImageNotFound",
        "InvalidParameter",
        "InvalidTemplate",
        "MarketplacePurchaseEligibilityFailed",
        "ResourcePurchaseValidationFailed",
        "OperationNotAllowed",
    }
)
TRANSIENT_CODES = frozenset(
    {"TooManyRequests", "InternalServerError", "InternalExecutionError", "RetryableError", "ServiceUnavailable",
     "GatewayTimeout", "Conflict", "AnotherOperationInProgress", "ResourceGroupBeingDeleted"}
)  # fmt: skip

FIX_CREDENTIALS = (
    "give the azure connection a service principal (login = client id, password = client secret, extras "
    "tenantId and subscriptionId) or use managed identity / az login (DefaultAzureCredential), with the "
    "'Virtual Machine Contributor' and 'Network Contributor' roles (or Contributor) on the subscription"
)
FIX_QUOTA = (
    "request a higher Azure vCPU quota for this VM family (or LowPriorityCores for spot) in this region "
    "(Portal > Quotas > Compute), or allow other regions/clouds"
)
FIX_REGISTRATION = "register the resource providers: az provider register -n Microsoft.Compute / Microsoft.Network"


def error_code(exc: BaseException) -> str | None:
    """The ARM error code of an azure-core HttpResponseError (None for other exceptions)."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:
        body = None
    if isinstance(body, dict):
        inner = body.get("error") or {}
        return inner.get("code") or body.get("code")
    return None


def error_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or getattr(exc, "message", None) or exc)


def classify_code(
    code: str | None,
    message: str,
    *,
    status: int | None = None,
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify one ARM error code with its message and HTTP status."""
    where: dict[str, Any] = {"cloud": AZURE, "region": region, "zone": zone, "instance_type": instance_type}
    text = f"{code}: {message}" if code else message
    lowered = message.lower()
    if code in ZONE_CAPACITY:
        return CapacityError(text, **where)
    if code in REGION_CAPACITY:
        return CapacityError(text, **{**where, "zone": None})
    if code in QUOTA_CODES or (code == "OperationNotAllowed" and "quota" in lowered):
        return QuotaError(text, fix=FIX_QUOTA, **where)
    if code in CREDENTIAL_CODES or status in (401, 403):
        return CredentialsError(text, fix=FIX_CREDENTIALS, **where)
    if code == "MissingSubscriptionRegistration":
        return ConfigError(text, fix=FIX_REGISTRATION, **where)
    if code in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
        return TransientError(text, **where)
    if code in CONFIG_CODES or status in (400, 404):
        return ConfigError(text, fix="check the VM size, image, subscription and network settings", **where)
    return ProvisionError(text, **where)


def classify_azure_error(
    exc: BaseException,
    *,
    region: str | None = None,
    zone: str | None = None,
    instance_type: str | None = None,
) -> ProvisionError:
    """Classify any exception raised while talking to ARM (SDK errors, azure-identity, network)."""
    if isinstance(exc, ProvisionError):
        return exc
    where: dict[str, Any] = {"region": region, "zone": zone, "instance_type": instance_type}
    name = type(exc).__name__
    try:
        from azure.core import exceptions as aex
    except ImportError:  # pragma: no cover - azure is an optional extra
        aex = None
    if aex is not None:
        if isinstance(exc, aex.ClientAuthenticationError) and error_code(exc) is None:
            return CredentialsError(f"{name}: {exc}", cloud=AZURE, fix=FIX_CREDENTIALS, **where)
        if isinstance(exc, aex.HttpResponseError):
            return classify_code(error_code(exc), error_message(exc), status=exc.status_code, **where)
        if isinstance(exc, aex.ServiceRequestError | aex.ServiceResponseError):
            return TransientError(f"{name}: {exc}", cloud=AZURE, **where)
    if name in ("CredentialUnavailableError", "AuthenticationRequiredError"):
        return CredentialsError(f"{name}: {exc}", cloud=AZURE, fix=FIX_CREDENTIALS, **where)
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{name}: {exc}", cloud=AZURE, **where)
    return ProvisionError(f"{name}: {exc}", cloud=AZURE, **where)
