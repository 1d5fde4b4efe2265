"""Get Object, Head Object and List Objects V2 signed here (AWS Signature Version 4) and sent
over a bare urllib3 pool.

Copying many small objects, botocore's per-call machinery (event hooks, endpoint rules,
request model, response parser) costs more CPU than the request itself. For whole-object and
ranged reads this module builds the GET directly: the object URL is taken once from botocore
(a presigned URL, so addressing style, regional and custom endpoints are botocore's), and each
request is signed with the client's current credentials (refreshed by botocore as usual) over
the documented canonical request with an unsigned payload.

Only used when the client has credentials and a region and no proxy applies; a 403 switches
the store back to botocore for good, any other surprise (a redirect to another region, an
error) is left to botocore for that one call.

`plain_endpoint` goes one step further for the simple, common set-ups (explicit keys or the
AWS_* key variables, a region, an explicit endpoint or a standard AWS region with no endpoint
configuration): the object URL and credentials are known without botocore, so a store that only
reads (the source of a copy) never imports it or builds a client (~0.25 s of CPU per process).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .base import HTTPBodyStream, NotFound
from .direct_http import (
    DirectHTTPError,
    SignatureRefused,
    direct_enabled,
    make_pool,
    proxied,
)

log = logging.getLogger(__name__)

_UNSIGNED = "UNSIGNED-PAYLOAD"
_PROBE_KEY = "sky-direct-probe"


class Redirected(DirectHTTPError):
    """The bucket answered from elsewhere (3xx, or a 400 naming another region): ask botocore."""


class S3DirectReader:
    """Signed GETs of one bucket's objects."""

    def __init__(self, base_url: str, region: str, credentials: Any, maxsize: int = 64):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) object URL: {base_url!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._prefix = parts.path  # "/bucket/" (path style) or "/" (virtual host)
        self._region = region
        self._credentials = credentials
        self._pool = make_pool(base_url, maxsize)
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.page_size: int | None = None  # keys per listing page (None: the service's 1,000)

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            with self._lock:
                self._keys = {(secret, day): key}  # one live key: credentials rotate, days pass
            cached = key
        return cached

    def _headers(
        self, path: str, now: datetime.datetime | None = None, method: str = "GET", query: str = ""
    ) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        now = now or datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        signed = {"host": self._host, "x-amz-content-sha256": _UNSIGNED, "x-amz-date": stamp}
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        names = sorted(signed)
        canonical = "\n".join(
            [method, path, query, *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), _UNSIGNED]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, day), to_sign.encode(), hashlib.sha256)
        headers = {k: v for k, v in signed.items() if k != "host"}
        headers["Host"] = self._host
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature.hexdigest()}"
        )
        return headers

    def _fail(self, method: str, path: str, status: int, body: bytes, key: str | None) -> Exception:
        """The exception for a non-2xx answer (NotFound, SignatureRefused, Redirected or other)."""
        code = _error_code(body)
        message = f"{method} {path}: HTTP {status} {code or ''}".rstrip()
        if status == 404 and (code in (None, "NoSuchKey") if key is not None else code == "NoSuchBucket"):
            return NotFound(f"s3 object {key}" if key is not None else f"s3 bucket {self._prefix}")
        if status == 403:
            return SignatureRefused(message, status, code)
        if 300 <= status < 400 or code in ("AuthorizationHeaderMalformed", "PermanentRedirect"):
            return Redirected(message, status, code)
        return DirectHTTPError(message, status, code)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """The object's bytes [start, end) (all of it by default)."""
        path = self._prefix + quote(key, safe="/~")
        headers = self._headers(path)
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        resp = self._pool.request("GET", self._origin + path, headers=headers, redirect=False)
        status = resp.status
        if status in (200, 206):
            return resp.data
        if status == 416:
            return b""
        raise self._fail("GET", path, status, resp.data, key)

    def open_range(self, key: str, start: int, end: int) -> HTTPBodyStream:
        """Bytes [start, end) as a stream read straight into the caller's buffers."""
        path = self._prefix + quote(key, safe="/~")
        headers = self._headers(path)
        headers["Range"] = f"bytes={start}-{end - 1}"
        resp = self._pool.request(
            "GET", self._origin + path, headers=headers, redirect=False, preload_content=False
        )
        if resp.status in (200, 206):
            return HTTPBodyStream(resp)
        body = resp.data
        resp.release_conn()
        raise self._fail("GET", path, resp.status, body, key)

    def head(self, key: str) -> dict[str, str] | None:
        """The object's response headers (lower-case names), or None when it does not exist."""
        path = self._prefix + quote(key, safe="/~")
        resp = self._pool.request(
            "HEAD", self._origin + path, headers=self._headers(path, method="HEAD"), redirect=False
        )
        if resp.status == 200:
            return {k.lower(): v for k, v in resp.headers.items()}
        if resp.status == 404:
            return None
        if resp.status == 400:  # a HEAD answer has no body to name the error: a wrong-region
            raise Redirected(f"HEAD {path}: HTTP 400", 400)  # scope looks like this; botocore decides
        raise self._fail("HEAD", path, resp.status, b"", key)

    def list_page(self, prefix: str, token: str | None = None) -> tuple[list[dict[str, str]], str | None]:
        """One List Objects V2 page under `prefix`: ([{Key, Size, ETag, LastModified}], next token)."""
        params = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if self.page_size:
            params["max-keys"] = str(self.page_size)
        if token:
            params["continuation-token"] = token
        query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
        path = self._prefix
        resp = self._pool.request(
            "GET", f"{self._origin}{path}?{query}", headers=self._headers(path, query=query), redirect=False
        )
        if resp.status != 200:
            raise self._fail("GET", path, resp.status, resp.data, None)
        return _parse_listing(resp.data)

    def close(self) -> None:
        self._pool.clear()


def _error_code(body: bytes) -> str | None:
    """`<Code>` of an S3 XML error body."""
    start = body.find(b"<Code>")
    end = body.find(b"</Code>", start)
    return body[start + 6 : end].decode(errors="replace") if start >= 0 and end > start else None


def reader_for(client: Any, bucket: str) -> S3DirectReader | None:
    """A direct reader for `bucket` through `client`'s endpoint and credentials, or None when
    botocore should do every read (no credentials, anonymous, no region, a proxy)."""
    if not direct_enabled("s3"):
        return None
    try:
        credentials = client._request_signer._credentials
        region = client.meta.region_name
        if credentials is None or not region or not hasattr(credentials, "get_frozen_credentials"):
            return None
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY})
        base = url.split("?", 1)[0]
        if not base.endswith("/" + _PROBE_KEY) or proxied(base):
            return None
        return S3DirectReader(base[: -len(_PROBE_KEY)], region, credentials)
    except Exception as exc:  # any doubt: botocore does the reads
        log.debug("direct S3 reads not used: %s", exc)
        return None


def _q(value: str) -> str:
    """SigV4 URI encoding of a query name or value."""
    return quote(value, safe="-_.~")


def _parse_listing(body: bytes) -> tuple[list[dict[str, str]], str | None]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    url_encoded = (root.findtext(f"{ns}EncodingType") or "") == "url"
    items = []
    for c in root.iter(f"{ns}Contents"):
        key = c.findtext(f"{ns}Key") or ""
        items.append(
            {
                "Key": unquote(key) if url_encoded else key,
                "Size": c.findtext(f"{ns}Size") or "0",
                "ETag": c.findtext(f"{ns}ETag") or "",
                "LastModified": c.findtext(f"{ns}LastModified") or "",
            }
        )
    truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    return items, token or None


def parse_iso_date(value: str | None) -> float | None:
    """Seconds since the epoch of a listing's ISO 8601 LastModified, or None."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class StaticCredentials:
    """Keys known up front (an Airflow connection, the AWS_* variables): botocore's
    `get_frozen_credentials()` shape, without botocore."""

    access_key: str
    secret_key: str
    token: str | None = None

    def get_frozen_credentials(self) -> StaticCredentials:
        return self


_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
# Settings that change where botocore sends requests or which credentials it picks: with any of
# them present the plain path stands aside and botocore decides.
_ENDPOINT_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def plain_endpoint(
    bucket: str,
    endpoint_url: str | None,
    region_name: str | None,
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
) -> tuple[str, str, StaticCredentials] | None:
    """(object base URL, region, credentials) when they are certain without botocore, else None.

    With an explicit `endpoint_url` the URL is path style, as `make_s3_client` configures it; on
    AWS it is the bucket's virtual host in the standard partition. Credentials are the explicit
    keys, or the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables (the first link of
    botocore's chain) when no profile is selected."""
    if not direct_enabled("s3"):
        return None
    if not (access_key and secret_key):
        if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE"):
            return None
        access_key, secret_key = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        session_token = os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN")
        if not (access_key and secret_key):
            return None
    region = region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        return None
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            return None
        base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{quote(bucket, safe='')}/"
    else:
        config = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
        if any(os.environ.get(v) for v in _ENDPOINT_SETTINGS) or os.path.exists(config):
            return None
        if not re.fullmatch(r"(af|ap|ca|eu|il|me|mx|sa|us)-[a-z]+-\d", region) or region.startswith("us-gov"):
            return None
        if _DNS_BUCKET.fullmatch(bucket):
            base = f"https://{bucket}.s3.{region}.amazonaws.com/"
        else:
            base = f"https://s3.{region}.amazonaws.com/{quote(bucket, safe='')}/"
    if proxied(base):
        return None
    return base, region, StaticCredentials(access_key, secret_key, session_token or None)
