"""gs:// store over google-cloud-storage (GCS, or fake-gcs-server given an explicit `endpoint`).

Large objects are written as a parallel composite upload: parts become scratch objects under
`.sky-parts/<token>/` (each validated by MD5), then are composed into the target (32 per compose
call, tiered for more) and deleted. GCS keeps a CRC32C for composite objects, which the engine
compares with the CRC32C it combined from the parts.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote

from .base import (
    META_CRC32C,
    META_MD5,
    SCRATCH_PREFIX,
    HTTPBodyStream,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    ResumeError,
    StorageError,
    Store,
    crc32c_from_b64,
    crc32c_to_b64,
    md5_b64_to_hex,
    normalize_metadata,
    pin_environment,
)

_COMPOSE_MAX = 32
# Bytes sent per PUT of a resumable upload: the parts of a stripe stream through one request up
# to this size. Larger means fewer requests (and, on fake-gcs-server, which re-hashes the whole
# upload on every request, much less server work); smaller means less to resend after a crash.
RESUMABLE_CHUNK = 64 << 20
GCS_API = "https://storage.googleapis.com"


def make_gcs_session(
    project: str | None = None,
    credentials: Any = None,
    endpoint: str | None = None,
    anonymous: bool = False,
    max_pool_connections: int = 64,
) -> tuple[Any, Any, str | None]:
    """(HTTP session, credentials, project) for GCS requests: an authorized requests session
    (google-auth; default credentials unless given), or a plain one with `anonymous=True`
    (emulators). Pooled for parallel transfers; google-cloud-storage is not imported."""
    import requests

    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
        session: Any = requests.Session()
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        if credentials is None:
            credentials, default_project = google.auth.default(
                scopes=["https://www.googleapis.com/auth/devstorage.full_control"]
            )
            project = project or default_project
        session = AuthorizedSession(credentials)
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max_pool_connections, pool_maxsize=max_pool_connections
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    pin_environment(session, endpoint or GCS_API)
    return session, credentials, project


def _client_for(session: Any, credentials: Any, project: str | None, endpoint: str | None) -> Any:
    from google.cloud import storage

    options = {"api_endpoint": endpoint.rstrip("/")} if endpoint else None
    return storage.Client(
        project=project or "sky-anonymous",
        credentials=credentials,
        client_options=options,
        _http=session,
    )


def make_gcs_client(
    project: str | None = None,
    credentials: Any = None,
    endpoint: str | None = None,
    anonymous: bool = False,
    max_pool_connections: int = 64,
) -> Any:
    """A google-cloud-storage client with a connection pool sized for parallel transfers.

    `endpoint` (e.g. `http://127.0.0.1:4443` for fake-gcs-server) is used for JSON and upload
    URLs alike; `anonymous=True` sends no credentials (emulators)."""
    session, credentials, project = make_gcs_session(
        project, credentials, endpoint, anonymous, max_pool_connections
    )
    return _client_for(session, credentials, project, endpoint)


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        key=blob.name,
        size=int(blob.size or 0),
        etag=blob.etag,
        md5=md5_b64_to_hex(blob.md5_hash) if blob.md5_hash else None,
        crc32c=crc32c_from_b64(blob.crc32c) if blob.crc32c else None,
        mtime=blob.updated.timestamp() if blob.updated else None,
        metadata=normalize_metadata(blob.metadata),
    )


class GCSStore(Store):
    scheme = "gs"
    min_part_size = 1
    max_parts = _COMPOSE_MAX * _COMPOSE_MAX
    page_size = 1000  # objects per listing page

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        project: str | None = None,
        credentials: Any = None,
        endpoint: str | None = None,
        anonymous: bool = False,
        max_pool_connections: int = 64,
        resumable_chunk_size: int = RESUMABLE_CHUNK,
    ):
        self.bucket = bucket
        self.endpoint = endpoint
        self.resumable_chunk_size = max(1, int(resumable_chunk_size))
        # Listing, heads, reads and resumable uploads are plain JSON/media requests on one pooled
        # session; the google-cloud-storage client (composes, rewrites, buckets, small writes) is
        # made on first use, so a copy's source never imports it.
        self._client = client
        self._client_lock = threading.Lock()
        self._bucket_obj: Any = None
        if client is not None:
            self._http = client._http
            self._api_base = client._connection.API_BASE_URL.rstrip("/")
            self._credentials = client._credentials
            self._project = client.project
        else:
            self._http, self._credentials, self._project = make_gcs_session(
                project, credentials, endpoint, anonymous, max_pool_connections
            )
            self._api_base = (endpoint or GCS_API).rstrip("/")

    @property
    def client(self) -> Any:
        """The google-cloud-storage client, made on first use (on the store's session)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _client_for(self._http, self._credentials, self._project, self.endpoint)
        return self._client

    @property
    def _bucket(self) -> Any:
        if self._bucket_obj is None:
            self._bucket_obj = self.client.bucket(self.bucket)
        return self._bucket_obj

    @_bucket.setter
    def _bucket(self, value: Any) -> None:
        self._bucket_obj = value

    def uri(self, key: str = "") -> str:
        return f"gs://{self.bucket}/{key}"

    def endpoint_identity(self) -> tuple:
        return ("gs", self._api_base, id(self._credentials.__class__))

    def _json_url(self, key: str | None = None) -> str:
        url = f"{self._api_base}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        return url if key is None else f"{url}/{quote(key, safe='')}"

    # ---- listing
    def list(self, prefix: str = "", hidden: bool = False) -> Iterator[ObjectInfo]:
        params: dict[str, Any] = {"maxResults": self.page_size}
        if prefix:
            params["prefix"] = prefix
        while True:
            resp = self._http.get(self._json_url(), params=params, timeout=(10, 60))
            if resp.status_code == 404:
                raise NotFound(self.uri())
            _raise_for(resp, self.uri())
            page = resp.json()
            for res in page.get("items", ()):
                if not hidden and res["name"].startswith(SCRATCH_PREFIX):
                    continue
                yield _blob_info(res["name"], res)
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def head(self, key: str) -> ObjectInfo | None:
        resp = self._http.get(self._json_url(key), timeout=(10, 60))
        if resp.status_code == 404:
            return None
        _raise_for(resp, self.uri(key))
        return _blob_info(key, resp.json())

    # ---- reading
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Ranged read with one plain GET on the client's (authorized) session: the stored bytes
        as they are (no decompressive transcoding), no per-chunk overhead of the resumable-media
        download helpers."""
        if end is not None and end <= start:
            return b""
        url = (
            f"{self._api_base}/download/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o/{quote(key, safe='')}?alt=media"
        )
        headers = {"Accept-Encoding": "gzip"}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        resp = self._http.get(url, headers=headers, stream=True, timeout=(10, 120))
        try:
            if resp.status_code == 404:
                raise NotFound(self.uri(key))
            if resp.status_code == 416:
                return b""
            resp.raise_for_status()
            return resp.raw.read(decode_content=False)
        finally:
            resp.close()

    def open_read(self, key: str) -> BinaryIO:
        return self._bucket.blob(key).open("rb", chunk_size=8 << 20, raw_download=True)

    def _media_url(self, key: str) -> str:
        return (
            f"{self._api_base}/download/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o/{quote(key, safe='')}?alt=media"
        )

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """One streamed ranged GET of the stored bytes (no transcoding)."""
        headers = {"Accept-Encoding": "gzip", "Range": f"bytes={start}-{end - 1}"}
        resp = self._http.get(self._media_url(key), headers=headers, stream=True, timeout=(10, 120))
        if resp.status_code == 404:
            resp.close()
            raise NotFound(self.uri(key))
        try:
            resp.raise_for_status()
        except BaseException:
            resp.close()
            raise
        resp.raw.decode_content = False
        return HTTPBodyStream(resp.raw, closer=resp)  # type: ignore[return-value]

    def _resumable_session(self, key: str, metadata: Mapping[str, str] | None) -> str:
        """Start a resumable upload of `key`; returns the session URL."""
        url = (
            f"{self._api_base}/upload/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o?uploadType=resumable&name={quote(key, safe='')}"
        )
        body: dict[str, Any] = {"name": key, "contentType": "application/octet-stream"}
        meta = normalize_metadata(metadata)
        if meta:
            body["metadata"] = meta
        resp = self._http.post(
            url, json=body, headers={"X-Upload-Content-Type": "application/octet-stream"}, timeout=(10, 60)
        )
        _raise_for(resp, self.uri(key))
        location = resp.headers.get("Location")
        if not location:
            raise StorageError(f"resumable upload of {self.uri(key)}: no session URL")
        return location

    def _resumable_put(self, session_url: str, key: str, data: Any, start: int, total: int | None) -> Any:
        """One PUT of bytes [start, start+len(data)) to a resumable session (the last one when
        `total` is given); `data` is bytes-like or a `_StreamedBody`."""
        n = len(data)
        end = f"{start + n - 1}" if n else "*"
        rng = f"bytes {start}-{end}/{'*' if total is None else total}" if n else f"bytes */{total}"
        resp = self._http.put(
            session_url,
            data=data,
            headers={"Content-Range": rng, "Content-Length": str(n)},
            timeout=(10, 120),
        )
        if total is None:
            if resp.status_code != 308:
                _raise_for(resp, self.uri(key))
                raise StorageError(f"resumable upload of {self.uri(key)}: HTTP {resp.status_code} mid-upload")
            persisted = resp.headers.get("Range")
            if n and persisted is not None and persisted != f"bytes=0-{start + n - 1}":
                raise ResumeError(
                    f"resumable upload of {self.uri(key)}: server has {persisted}, sent up to {start + n - 1}"
                )
            return None
        _raise_for(resp, self.uri(key))
        return resp.json()

    # ---- writing
    def write(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
        crc32c: int | None = None,
    ) -> ObjectInfo:
        blob = self._bucket.blob(key)
        blob.metadata = normalize_metadata(metadata) or None
        if md5 is not None:
            blob.md5_hash = base64.b64encode(md5).decode()
        if crc32c is not None:
            blob.crc32c = crc32c_to_b64(crc32c)
        blob.upload_from_string(data, content_type="application/octet-stream", checksum=None)
        return _info(blob)

    def begin_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartUpload:
        return _GCSComposite(self, key, metadata)

    def resume_multipart(
        self, key: str, state: Mapping[str, Any], parts: Mapping[int, PartResult]
    ) -> MultipartUpload | None:
        """The resumable sessions `state` recorded, each continued after the bytes the server
        acknowledged; the recorded parts inside those bytes are kept. (A session that expired
        fails the first PUT: the copy then starts over on its next run.)"""
        scratch = state.get("scratch")
        stripes = state.get("stripes")
        if (
            not isinstance(scratch, str)
            or not scratch.startswith(SCRATCH_PREFIX)
            or not isinstance(stripes, dict)
        ):
            return None
        upload = _GCSComposite(self, key, scratch=scratch)
        upload.created = [n for n in state.get("created", ()) if isinstance(n, str) and n.startswith(scratch)]
        for index, st in stripes.items():
            numbers = [int(n) for n in st["parts"]]
            acked = sum(parts[n].size for n in numbers if n in parts)
            if acked != int(st["acked"]):  # a part the engine never recorded: cannot resume it
                continue
            upload.stripes[int(index)] = {
                "name": str(st["name"]),
                "url": str(st["url"]),
                "start": int(st["start"]),
                "size": int(st["size"]),
                "acked": acked,
                "parts": numbers,
            }
            for number in numbers:
                upload.tokens[number] = str(st["name"])
        return upload

    def copy_from(
        self, source: Store, src_key: str, dst_key: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        if not isinstance(source, GCSStore):
            raise StorageError("server-side copy needs two GCS stores")
        src_blob = source._bucket.blob(src_key)
        dst_blob = self._bucket.blob(dst_key)
        if metadata is not None:
            dst_blob.metadata = normalize_metadata(metadata)
        token, _, _ = dst_blob.rewrite(src_blob)
        while token is not None:
            token, _, _ = dst_blob.rewrite(src_blob, token=token)
        info = self.head(dst_key)
        if info is None:
            raise StorageError(f"server-side copy to {self.uri(dst_key)} left no object")
        return info

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound as GNotFound

        with contextlib.suppress(GNotFound):
            self._bucket.blob(key).delete()

    # ---- buckets
    def bucket_exists(self) -> bool:
        return self._bucket.exists()

    def create_bucket(self, region: str | None = None, exist_ok: bool = True) -> None:
        from google.api_core.exceptions import Conflict

        try:
            self._bucket = self.client.create_bucket(self.bucket, location=region)
        except Conflict:
            if not exist_ok:
                raise

    def region(self) -> str | None:
        self._bucket.reload()
        location = self._bucket.location
        return location.lower() if location else None


def _raise_for(resp: Any, where: str) -> None:
    if resp.status_code < 400:
        return
    from google.api_core import exceptions as gexc

    raise gexc.from_http_status(resp.status_code, f"{where}: {resp.text[:300]}")


def _blob_info(key: str, res: Mapping[str, Any]) -> ObjectInfo:
    """An ObjectInfo from a JSON API object resource."""
    return ObjectInfo(
        key=key,
        size=int(res.get("size") or 0),
        etag=res.get("etag"),
        md5=md5_b64_to_hex(res["md5Hash"]) if res.get("md5Hash") else None,
        crc32c=crc32c_from_b64(res["crc32c"]) if res.get("crc32c") else None,
        mtime=_rfc3339(res.get("updated")),
        metadata=normalize_metadata(res.get("metadata")),
    )


def _rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _GCSComposite(MultipartUpload):
    """Parallel parts as scratch objects composed at the end; or, through `upload_stream`, stripes
    as resumable uploads (one PUT per part, each acknowledged by the server, so an upload can be
    continued after a crash from its `resume_state`): a single stripe goes straight to the
    target (no compose, no scratch objects to delete), several become scratch objects composed
    into the target."""

    # Streamed stripes are checked by the CRC32C GCS computes over the stored object.
    stream_needs_md5 = False

    def __init__(
        self,
        store: GCSStore,
        key: str,
        metadata: Mapping[str, str] | None = None,
        scratch: str | None = None,
    ):
        self.store = store
        self.key = key
        self.metadata = normalize_metadata(metadata)
        self.scratch = scratch or f"{SCRATCH_PREFIX}{uuid.uuid4().hex}/"
        self.created: list[str] = []
        self.direct: ObjectInfo | None = None  # the target, when one stripe was uploaded to it
        # stripe -> {name, url (resumable session), start, size, acked (bytes), parts}
        self.stripes: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def resume_state(self) -> dict[str, Any]:
        with self._lock:
            stripes = {str(i): dict(st, parts=list(st["parts"])) for i, st in self.stripes.items()}
        return {"scratch": self.scratch, "created": list(self.created), "stripes": stripes}

    def upload_stream(
        self,
        stripe: int,
        nstripes: int,
        size: int,
        chunks: Iterable[tuple[int, int, Any, bytes]],
        start: int | None = None,
    ) -> dict[int, str]:
        """The stripe as one resumable upload. Consecutive parts stream through one PUT of up to
        the store's `resumable_chunk_size` bytes (parts are multiples of 256 KiB but the last);
        each acknowledged PUT makes its parts durable, so a retry or a later run continues after
        the last acknowledged PUT. A single stripe uploads straight to the target."""
        direct = nstripes == 1
        tokens: dict[int, str] = {}
        parts = iter(chunks)
        pending = next(parts, None)
        while pending is not None:
            number, offset, data, _md5 = pending
            st = self.stripes.get(stripe)
            if st is None:
                name = self.key if direct else f"{self.scratch}s{stripe:05d}"
                url = self.store._resumable_session(name, self.metadata if direct else None)
                st = {
                    "name": name,
                    "url": url,
                    "start": offset if start is None else start,
                    "size": size,
                    "acked": 0,
                    "parts": [],
                }
                with self._lock:
                    self.stripes[stripe] = st
                    if not direct:
                        self.created.append(name)
            name, pos = st["name"], offset - st["start"]
            if pos != st["acked"]:
                raise ResumeError(
                    f"resumable upload of {self.store.uri(name)} is at byte {st['acked']}, part {number} at {pos}"
                )
            # This PUT: whole parts of this one's size, up to the chunk size (at least one part).
            part_len = len(data)
            per_put = max(1, self.store.resumable_chunk_size // max(1, part_len))
            length = min(per_put * part_len, st["size"] - pos)
            body = _StreamedBody(pending, parts, length)
            last = pos + length >= st["size"]
            try:
                result = self.store._resumable_put(st["url"], name, body, pos, st["size"] if last else None)
            except Exception as exc:
                if getattr(exc, "code", None) not in (404, 410):
                    raise
                # The session is gone (expired, or the server lost it): so are the parts sent to
                # it. Forget them; the engine's retry sends the stripe again in a new session.
                with self._lock:
                    self.stripes.pop(stripe, None)
                    for gone in st["parts"]:
                        self.tokens.pop(gone, None)
                raise StorageError(
                    f"resumable upload of {self.store.uri(name)} lost ({exc}); restarting it"
                ) from exc
            if body.sent != length:
                raise StorageError(
                    f"resumable upload of {self.store.uri(name)}: {body.sent} of {length} bytes handed over"
                )
            with self._lock:
                st["acked"] = pos + length
                st["parts"].extend(body.numbers)
                for n in body.numbers:
                    tokens[n] = self.tokens[n] = name
            if last:
                info = _blob_info(name, result)
                if info.size != st["size"]:
                    raise StorageError(
                        f"resumable upload of {self.store.uri(name)}: {info.size} bytes stored, sent {st['size']}"
                    )
                if direct:
                    self.direct = info
            pending = next(parts, None)
        return tokens

    def upload_part(self, number: int, data: Any, md5: bytes, offset: int) -> str:
        name = f"{self.scratch}{number:05d}"
        blob = self.store._bucket.blob(name)
        blob.md5_hash = base64.b64encode(md5).decode()
        with self._lock:
            self.created.append(name)
        blob.upload_from_string(bytes(data), content_type="application/octet-stream", checksum=None)
        if blob.md5_hash and md5_b64_to_hex(blob.md5_hash) != md5.hex():
            raise StorageError(f"GCS part {number} of {self.key}: MD5 mismatch after upload")
        self.tokens[number] = name
        return name

    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        bucket = self.store._bucket
        if self.direct is None and [st["name"] for st in self.stripes.values()] == [self.key]:
            # A resumed single-stripe upload whose last part an earlier run already sent.
            self.direct = self.store.head(self.key)
            if self.direct is None:
                raise StorageError(f"resumable upload of {self.store.uri(self.key)} left no object")
        if self.direct is not None:
            # The checksums the engine records are redundant with GCS's own CRC32C / MD5 of a
            # non-composite object; patching only for them would cost the server a rewrite.
            meta = normalize_metadata(metadata)
            if self.direct.crc32c is not None:
                meta.pop(META_CRC32C, None)
            if self.direct.md5:
                meta.pop(META_MD5, None)
            if meta and {**self.direct.metadata, **meta} != self.direct.metadata:
                blob = bucket.blob(self.key)
                blob.metadata = meta
                blob.patch()
                return _info(blob)
            return self.direct
        names: list[str] = []
        for p in sorted(parts, key=lambda p: p.number):
            if p.token and (not names or names[-1] != p.token):
                names.append(p.token)
        tier = 0
        while len(names) > _COMPOSE_MAX:
            merged = []
            for i in range(0, len(names), _COMPOSE_MAX):
                target = bucket.blob(f"{self.scratch}t{tier}-{i // _COMPOSE_MAX:05d}")
                target.compose([bucket.blob(n) for n in names[i : i + _COMPOSE_MAX]])
                self.created.append(target.name)
                merged.append(target.name)
            names = merged
            tier += 1
        dest = bucket.blob(self.key)
        dest.metadata = normalize_metadata(metadata) or None
        dest.content_type = "application/octet-stream"
        dest.compose([bucket.blob(n) for n in names])
        self.abort()
        return _info(dest)

    def abort(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception):
                self.store.delete(name)
        self.created = []


class _StreamedBody:
    """Request body of `length` bytes made of consecutive parts pulled from the engine as they are
    sent (the next part is asked for only once the previous one is on the wire, so each reused
    part buffer is handed back as soon as possible). `len()` gives requests the Content-Length."""

    def __init__(self, first: tuple[int, int, Any, bytes], rest: Iterator[Any], length: int):
        self._first: tuple[int, int, Any, bytes] | None = first
        self._rest = rest
        self._length = length
        self.sent = 0
        self.numbers: list[int] = []

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        if self._first is None:
            raise StorageError("a streamed request body cannot be sent twice")
        number, _offset, data, _md5 = self._first
        self._first = None
        while True:
            if self.sent + len(data) > self._length:
                raise StorageError(f"part {number} runs past the end of this request's byte range")
            self.numbers.append(number)
            yield data
            self.sent += len(data)
            if self.sent >= self._length:
                return
            got = next(self._rest, None)
            if got is None:  # raising aborts the request; returning would leave the server waiting
                raise StorageError(f"parts ended {self._length - self.sent} bytes short of this request")
            number, _offset, data, _md5 = got
