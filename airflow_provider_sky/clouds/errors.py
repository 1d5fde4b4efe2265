"""One failure taxonomy for every cloud.

Each cloud module maps its own exceptions into these classes (`Cloud.classify_error`); the
provisioner only looks at `scope` / `blocked()` to decide what to block before failing over:

    CapacityError      the zone           (no capacity for this instance type there now)
    QuotaError         the region, or the whole cloud with ``global_quota=True``
    ConfigError        the cloud          (the request cannot work there; `fix` says what to change)
    CredentialsError   the cloud          (`fix` says how to log in / configure)
    TransientError     nothing            (retry with backoff)
    ProvisionError     the region         (unclassified failure: move on rather than loop)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class Scope(StrEnum):
    """How much of the search space a failure rules out."""

    NONE = "none"
    ZONE = "zone"
    REGION = "region"
    CLOUD = "cloud"


@dataclass(frozen=True)
class Blocked:
    """A location to skip when re-planning; None in region/zone means "all of them"."""

    cloud: str | None
    region: str | None = None
    zone: str | None = None


class ProvisionError(Exception):
    """A launch attempt failed; carries where it failed and what to block."""

    default_scope: ClassVar[Scope] = Scope.REGION

    def __init__(
        self,
        message: str,
        *,
        cloud: str | None = None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.cloud = cloud
        self.region = region
        self.zone = zone
        self.instance_type = instance_type
        self.fix = fix

    @property
    def scope(self) -> Scope:
        return self.default_scope

    @property
    def retryable(self) -> bool:
        """True when the same request may simply be retried later."""
        return self.scope is Scope.NONE

    def blocked(self) -> Blocked | None:
        """The location to block, widened when the narrower part is unknown; None for retries."""
        scope = self.scope
        if scope is Scope.NONE:
            return None
        if scope is Scope.CLOUD:
            return Blocked(self.cloud)
        if scope is Scope.REGION or self.zone is None:
            return Blocked(self.cloud, self.region) if self.region else Blocked(self.cloud)
        return Blocked(self.cloud, self.region, self.zone)

    def where(self) -> str:
        parts = [p for p in (self.cloud, self.region, self.zone) if p]
        loc = "/".join(parts)
        if self.instance_type:
            loc = f"{loc} {self.instance_type}".strip()
        return loc

    def __str__(self) -> str:
        text = self.message
        loc = self.where()
        if loc:
            text = f"{text} [{loc}]"
        if self.fix:
            text = f"{text}; fix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON form for failover history (state store, XCom)."""
        return {
            "type": type(self).__name__,
            "scope": self.scope.value,
            "message": self.message,
            "cloud": self.cloud,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "fix": self.fix,
        }


class CapacityError(ProvisionError):
    """No capacity for the instance type in this zone right now; try another zone."""

    default_scope = Scope.ZONE


class QuotaError(ProvisionError):
    """A quota is exhausted: for the region, or the whole cloud when `global_quota` is set."""

    default_scope = Scope.REGION

    def __init__(self, message: str, *, global_quota: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.global_quota = global_quota

    @property
    def scope(self) -> Scope:
        return Scope.CLOUD if self.global_quota else Scope.REGION

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "global_quota": self.global_quota}


class ConfigError(ProvisionError):
    """The request cannot be satisfied by this cloud as configured; the message says what to change."""

    default_scope = Scope.CLOUD


class CredentialsError(ProvisionError):
    """The cloud cannot be used with the credentials at hand; the message says how to fix that."""

    default_scope = Scope.CLOUD


class TransientError(ProvisionError):
    """A passing failure (throttling, timeouts, 5xx); retry with backoff, block nothing."""

    default_scope = Scope.NONE

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
