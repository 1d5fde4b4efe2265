"""Get Object signed here (AWS Signature Version 4) and sent over a bare urllib3 pool.

Copying many small objects, botocore's per-call machinery (event hooks, endpoint rules,
request model, response parser) costs more CPU than the request itself. For whole-object and
ranged reads this module builds the GET directly: the object URL is taken once from botocore
(a presigned URL, so addressing style, regional and custom endpoints are botocore's), and each
request is signed with the client's current credentials (refreshed by botocore as usual) over
the documented canonical request with an unsigned payload.

Only used when the client has credentials and a region and no proxy applies; a 403 switches
the store back to botocore for good, any other surprise (a redirect to another region, an
error) is left to botocore for that one call.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from .base import NotFound
from .direct_http import DirectHTTPError, SignatureRefused, direct_enabled, make_pool, proxied

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

    def _headers(self, path: str, now: datetime.datetime | None = None) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        now = now or datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        signed = {"host": self._host, "x-amz-content-sha256": _UNSIGNED, "x-amz-date": stamp}
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        names = sorted(signed)
        canonical = "\n".join(
            ["GET", path, "", *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), _UNSIGNED]
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
        code = _error_code(resp.data)
        message = f"GET {path}: HTTP {status} {code or ''}".rstrip()
        if status == 404 and code in (None, "NoSuchKey"):
            raise NotFound(f"s3 object {key}")
        if status == 403:
            raise SignatureRefused(message, status, code)
        if 300 <= status < 400 or code in ("AuthorizationHeaderMalformed", "PermanentRedirect"):
            raise Redirected(message, status, code)
        raise DirectHTTPError(message, status, code)

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
