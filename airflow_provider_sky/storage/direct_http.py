"""Shared parts of the direct request paths (azure_sharedkey, s3_direct): the hot, simple
requests of a transfer (Put Blob, Put Block, Get Object) built and signed here and sent over a
bare urllib3 pool, skipping the SDKs' per-request machinery. Every user of this module falls
back to its SDK for good when the service refuses a signature."""

from __future__ import annotations

import os
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from .base import StorageError


class DirectHTTPError(StorageError):
    """A non-2xx answer to a directly sent request (`status_code` is what retries look at)."""

    def __init__(self, message: str, status_code: int, error_code: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code


class SignatureRefused(DirectHTTPError):
    """The service rejected the request's signature (403): the caller falls back to the SDK."""


def direct_enabled(name: str) -> bool:
    """Whether direct requests are allowed: `SKY_<NAME>_DIRECT=0` turns one kind off."""
    return os.environ.get(f"SKY_{name.upper()}_DIRECT", "1") != "0"


def proxied(url: str) -> bool:
    """Whether the environment routes `url` through a proxy (the direct paths then stand aside)."""
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxies = getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    # A no_proxy form urllib does not know (a CIDR) counts as proxied: the SDK path then decides.
    return not proxy_bypass(parts.hostname or "")


def make_pool(url: str, maxsize: int = 64, timeout: tuple[float, float] = (10, 120)) -> Any:
    """A urllib3 pool manager for `url`'s endpoint: no retries or redirects of its own (callers
    retry), the CA bundle the SDKs would use for https."""
    import urllib3

    kwargs: dict[str, Any] = {"maxsize": maxsize, "block": False, "retries": False}
    if urlsplit(url).scheme == "https":
        ca = (
            os.environ.get("AWS_CA_BUNDLE")
            or os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
        )
        if ca:
            kwargs["ca_certs"] = ca
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]), **kwargs)


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 1123 header date (Last-Modified), or None."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
