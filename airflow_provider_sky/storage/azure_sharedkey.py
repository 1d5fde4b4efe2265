"""Blob writes signed with the account's Shared Key and sent over a bare urllib3 pool.

The transfer engine writes thousands of small blobs and blocks; through azure-storage-blob each
such request costs about 4 ms of CPU in the SDK's pipeline (policies, tracing, header models)
before a byte is sent, which on a busy worker is more than the transfer itself. For the two hot
requests, Put Blob and Put Block, this module builds the request directly: the Shared Key
signature (the documented string-to-sign: verb, standard headers, `x-ms-*` headers, the
canonical resource and query), one urllib3 request, the status checked. Everything else (list,
head, commit, copy, delete, other credential kinds) stays on the SDK.

Used only where it is exact: a Shared Key credential and no proxy for the endpoint. A 403
(signature refused) switches the store back to the SDK for good, so a service that disagrees
with this signer costs one request, never a failed copy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

from .direct_http import DirectHTTPError, SignatureRefused, direct_enabled, make_pool, proxied

__all__ = ["AzureHTTPError", "SharedKeyBlobWriter", "SignatureRefused", "writer_for"]

log = logging.getLogger(__name__)

API_VERSION = "2021-08-06"  # Put Blob / Put Block as used here are unchanged since 2019


AzureHTTPError = DirectHTTPError


class SharedKeyBlobWriter:
    """Put Blob and Put Block for one container, Shared Key signed, over a urllib3 pool."""

    def __init__(
        self,
        account_url: str,
        container: str,
        account_name: str,
        account_key: str,
        *,
        maxsize: int = 64,
        timeout: tuple[float, float] = (10, 120),
    ):
        parts = urlsplit(account_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) account URL: {account_url!r}")
        self.account = account_name
        self._key = base64.b64decode(account_key)
        self._base_path = f"{parts.path}/{quote(container, safe='')}"
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._pool = make_pool(account_url, maxsize, timeout)
        self._date_lock = threading.Lock()
        self._date = ("", 0)

    # ---- signing
    def _now(self) -> str:
        """RFC 1123 date for `x-ms-date`, formatted at most once a second."""
        second = int(time.time())
        cached, at = self._date
        if at != second:
            with self._date_lock:
                cached = formatdate(second, usegmt=True)
                self._date = (cached, second)
        return cached

    def _sign(self, verb: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("content-length") == "0":
            lower.pop("content-length")
        standard = (
            "content-encoding",
            "content-language",
            "content-length",
            "content-md5",
            "content-type",
            "date",
            "if-modified-since",
            "if-match",
            "if-none-match",
            "if-unmodified-since",
            "range",
        )
        lines = [verb, *(lower.get(name, "") for name in standard)]
        ms = sorted((k, v.strip()) for k, v in lower.items() if k.startswith("x-ms-"))
        canonical = "".join(f"{k}:{v}\n" for k, v in ms)
        resource = f"/{self.account}{path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        to_sign = "\n".join(lines) + "\n" + canonical + resource
        digest = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account}:{base64.b64encode(digest).decode()}"

    def _put(self, key: str, query: Mapping[str, str], headers: dict[str, str], body: Any) -> Any:
        path = f"{self._base_path}/{quote(key, safe='~/')}"
        headers["x-ms-date"] = self._now()
        headers["x-ms-version"] = API_VERSION
        headers["Content-Length"] = str(len(body))
        headers["Authorization"] = self._sign("PUT", path, query, headers)
        url = self._origin + path
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        resp = self._pool.request("PUT", url, body=body, headers=headers, redirect=False)
        if resp.status >= 300:
            code = resp.headers.get("x-ms-error-code")
            message = f"PUT {path}: HTTP {resp.status} {code or ''}".rstrip()
            if resp.status == 403:
                raise SignatureRefused(message, resp.status, code)
            raise AzureHTTPError(message, resp.status, code)
        return resp

    # ---- requests
    def put_blob(
        self, key: str, data: Any, md5: bytes | None, metadata: Mapping[str, str] | None
    ) -> tuple[str | None, str | None]:
        """Put Blob (a block blob in one request); (etag, stored MD5 as hex) from the answer.
        `md5`, when given, goes as Content-MD5: the service checks the bytes against it."""
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-type": "application/octet-stream",
        }
        if md5 is not None:
            headers["Content-MD5"] = base64.b64encode(md5).decode()
        for name, value in (metadata or {}).items():
            headers[f"x-ms-meta-{name}"] = value
        resp = self._put(key, {}, headers, data)
        stored = resp.headers.get("Content-MD5")
        etag = (resp.headers.get("ETag") or "").strip('"') or None
        return etag, base64.b64decode(stored).hex() if stored else None

    def put_block(self, key: str, block_id: str, data: Any, md5: bytes) -> None:
        """Put Block (stage one uncommitted block), its Content-MD5 checked by the service."""
        headers = {"Content-MD5": base64.b64encode(md5).decode()}
        self._put(key, {"blockid": block_id, "comp": "block"}, headers, data)

    def close(self) -> None:
        self._pool.clear()


def writer_for(service: Any, container: str) -> SharedKeyBlobWriter | None:
    """A direct writer for `service`'s container when its credential is the account's Shared
    Key and no proxy applies to the endpoint; None otherwise (the SDK handles those)."""
    if not direct_enabled("azure"):
        return None
    credential = getattr(service, "credential", None)
    name = getattr(credential, "account_name", None)
    key = getattr(credential, "account_key", None)
    url = getattr(service, "url", None)
    if not (isinstance(name, str) and isinstance(key, str) and isinstance(url, str)):
        return None
    account_url = url.split("?", 1)[0]
    try:
        if proxied(account_url):
            return None
        return SharedKeyBlobWriter(account_url, container, name, key)
    except Exception as exc:  # any doubt: the SDK path
        log.debug("direct Azure writes not used: %s", exc)
        return None
