"""Blob writes signed with the account's Shared Key and sent over a bare urllib3 pool.

The transfer engine writes thousands of small blobs and blocks; through azure-storage-blob each
such request costs about 4 ms of CPU in the SDK's pipeline (policies, tracing, header models)
before a byte is sent, which on a busy worker is more than the transfer itself. For the two hot
requests, Put Blob and Put Block, this module builds the request directly: the Shared Key
signature (the documented string-to-sign: verb, standard headers, `x-ms-*` headers, the
canonical resource and query), one urllib3 request, the status checked. The other requests a copy
into a container makes (List Blobs, Get Blob Properties, Put Block List, Delete Blob) go the same
way, so a copy's destination never builds the SDK client: with a plain Shared Key set-up
(`plain_account`) the SDK is imported only for what is left (reads, copies, containers, other
credential kinds, fallbacks).

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
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

from .base import NotFound
from .direct_http import DirectHTTPError, SignatureRefused, direct_enabled, make_pool, proxied

__all__ = ["AzureHTTPError", "SharedKeyBlobWriter", "SignatureRefused", "plain_account", "writer_for"]

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
        self.page_size: int | None = None  # blobs per listing page (None: the service's 5,000)

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

    def _request(
        self,
        verb: str,
        key: str | None,
        query: Mapping[str, str],
        headers: dict[str, str],
        body: Any = b"",
        ok_404: bool = False,
    ) -> Any:
        path = self._base_path if key is None else f"{self._base_path}/{quote(key, safe='~/')}"
        headers["x-ms-date"] = self._now()
        headers["x-ms-version"] = API_VERSION
        headers["Content-Length"] = str(len(body))
        headers["Authorization"] = self._sign(verb, path, query, headers)
        url = self._origin + path
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        resp = self._pool.request(verb, url, body=body or None, headers=headers, redirect=False)
        if resp.status >= 300 and not (ok_404 and resp.status == 404):
            code = resp.headers.get("x-ms-error-code")
            message = f"{verb} {path}: HTTP {resp.status} {code or ''}".rstrip()
            if resp.status == 403:
                raise SignatureRefused(message, resp.status, code)
            if resp.status == 404 and code in ("ContainerNotFound", "BlobNotFound", None):
                raise NotFound(message)
            raise AzureHTTPError(message, resp.status, code)
        return resp

    def _put(self, key: str, query: Mapping[str, str], headers: dict[str, str], body: Any) -> Any:
        return self._request("PUT", key, query, headers, body)

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

    def put_block_list(
        self, key: str, block_ids: Iterable[str], metadata: Mapping[str, str] | None
    ) -> str | None:
        """Put Block List committing `block_ids` (as the SDK names them) in order; the new ETag."""
        latest = "".join(f"<Latest>{base64.b64encode(b.encode()).decode()}</Latest>" for b in block_ids)
        body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{latest}</BlockList>'.encode()
        headers = {"Content-Type": "application/xml", "x-ms-blob-content-type": "application/octet-stream"}
        for name, value in (metadata or {}).items():
            headers[f"x-ms-meta-{name}"] = value
        resp = self._put(key, {"comp": "blocklist"}, headers, body)
        return (resp.headers.get("ETag") or "").strip('"') or None

    def head(self, key: str) -> dict[str, str] | None:
        """Get Blob Properties: the response headers (lower-case names), None when absent."""
        resp = self._request("HEAD", key, {}, {}, ok_404=True)
        if resp.status == 404:
            return None
        return {k.lower(): v for k, v in resp.headers.items()}

    def delete(self, key: str) -> None:
        """Delete Blob (an absent blob is not an error)."""
        self._request("DELETE", key, {}, {}, ok_404=True)

    def list_page(self, prefix: str, marker: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One List Blobs page (with metadata): ([{name, size, etag, md5, mtime, metadata}], marker)."""
        query = {"restype": "container", "comp": "list", "include": "metadata"}
        if prefix:
            query["prefix"] = prefix
        if marker:
            query["marker"] = marker
        if self.page_size:
            query["maxresults"] = str(self.page_size)
        resp = self._request("GET", None, dict(sorted(query.items())), {})
        return _parse_blob_list(resp.data)

    def close(self) -> None:
        self._pool.clear()


def _parse_blob_list(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    items = []
    for blob in root.iter("Blob"):
        props = blob.find("Properties")

        def prop(name: str, props: Any = props) -> str | None:
            return props.findtext(name) if props is not None else None

        meta = blob.find("Metadata")
        items.append(
            {
                "name": blob.findtext("Name") or "",
                "size": int(prop("Content-Length") or 0),
                "etag": (prop("Etag") or "").strip('"') or None,
                "md5": base64.b64decode(prop("Content-MD5")).hex() if prop("Content-MD5") else None,
                "mtime": prop("Last-Modified"),
                "metadata": {m.tag: m.text or "" for m in meta} if meta is not None else {},
            }
        )
    return items, root.findtext("NextMarker") or None


def parse_connection_string(text: str) -> dict[str, str]:
    """The fields of an Azure Storage connection string, names lower-cased."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # public


def plain_account(
    account: str | None,
    account_url: str | None = None,
    account_key: str | None = None,
    connection_string: str | None = None,
) -> tuple[str, str, str] | None:
    """(account URL, account name, account key) when the credential is the account's Shared Key
    and the endpoint is certain without the SDK; None otherwise (SAS, AAD, odd strings)."""
    if not direct_enabled("azure"):
        return None
    if connection_string:
        f = parse_connection_string(connection_string)
        if "sharedaccesssignature" in f:
            return None
        if f.get("usedevelopmentstorage", "").lower() == "true":
            name, key = DEV_ACCOUNT, DEV_KEY
            url = f.get("developmentstorageproxyuri", "http://127.0.0.1:10000").rstrip("/") + f"/{name}"
        else:
            name, key = f.get("accountname"), f.get("accountkey")
            if not (name and key):
                return None
            url = f.get("blobendpoint") or (
                f"{f.get('defaultendpointsprotocol', 'https')}://{name}.blob."
                f"{f.get('endpointsuffix', 'core.windows.net')}"
            )
    elif account_key:
        url = account_url or (f"https://{account}.blob.core.windows.net" if account else "")
        name = account or url.rstrip("/").rsplit("/", 1)[-1]
        key = account_key
    else:
        return None
    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or not name:
        return None
    try:
        base64.b64decode(key, validate=True)
    except ValueError:
        return None
    if proxied(url):
        return None
    return url.rstrip("/"), name, key


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
