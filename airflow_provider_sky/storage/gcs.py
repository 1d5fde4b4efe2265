"""gs:// store over google-cloud-storage (GCS, or fake-gcs-server given an explicit `endpoint`).

Large objects are written as a parallel composite upload: parts become scratch objects under
`.sky-parts/<token>/` (each validated by MD5), then are composed into the target (32 per compose
call, tiered for more) and deleted. GCS keeps a CRC32C for composite objects, which the engine
compares with the CRC32C it combined from the parts.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote

from .base import (
    META_CRC32C,
    META_MD5,
    SCRATCH_PREFIX,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    StorageError,
    Store,
    crc32c_from_b64,
    crc32c_to_b64,
    md5_b64_to_hex,
    normalize_metadata,
)

_COMPOSE_MAX = 32


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
    import requests
    from google.cloud import storage

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
    options = {"api_endpoint": endpoint.rstrip("/")} if endpoint else None
    return storage.Client(
        project=project or "sky-anonymous",
        credentials=credentials,
        client_options=options,
        _http=session,
    )


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
    ):
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = client or make_gcs_client(
            project=project,
            credentials=credentials,
            endpoint=endpoint,
            anonymous=anonymous,
            max_pool_connections=max_pool_connections,
        )
        self._bucket = self.client.bucket(bucket)

    def uri(self, key: str = "") -> str:
        return f"gs://{self.bucket}/{key}"

    def endpoint_identity(self) -> tuple:
        return ("gs", self.client._connection.API_BASE_URL, id(self.client._credentials.__class__))

    # ---- listing
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from google.api_core.exceptions import NotFound as GNotFound

        try:
            for blob in self.client.list_blobs(self._bucket, prefix=prefix or None, page_size=1000):
                if blob.name.startswith(SCRATCH_PREFIX):
                    continue
                yield _info(blob)
        except GNotFound as exc:
            raise NotFound(self.uri()) from exc

    def head(self, key: str) -> ObjectInfo | None:
        blob = self._bucket.get_blob(key)
        return _info(blob) if blob is not None else None

    # ---- reading
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Ranged read with one plain GET on the client's (authorized) session: the stored bytes
        as they are (no decompressive transcoding), no per-chunk overhead of the resumable-media
        download helpers."""
        if end is not None and end <= start:
            return b""
        url = (
            f"{self.client._connection.API_BASE_URL}/download/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o/{quote(key, safe='')}?alt=media"
        )
        headers = {"Accept-Encoding": "gzip"}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        resp = self.client._http.get(url, headers=headers, stream=True, timeout=(10, 120))
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
            f"{self.client._connection.API_BASE_URL}/download/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o/{quote(key, safe='')}?alt=media"
        )

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """One streamed ranged GET of the stored bytes (no transcoding)."""
        headers = {"Accept-Encoding": "gzip", "Range": f"bytes={start}-{end - 1}"}
        resp = self.client._http.get(self._media_url(key), headers=headers, stream=True, timeout=(10, 120))
        if resp.status_code == 404:
            resp.close()
            raise NotFound(self.uri(key))
        try:
            resp.raise_for_status()
        except BaseException:
            resp.close()
            raise
        resp.raw.decode_content = False
        return resp.raw

    def _resumable_session(self, key: str, metadata: Mapping[str, str] | None) -> str:
        """Start a resumable upload of `key`; returns the session URL."""
        url = (
            f"{self.client._connection.API_BASE_URL}/upload/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o?uploadType=resumable&name={quote(key, safe='')}"
        )
        body: dict[str, Any] = {"name": key, "contentType": "application/octet-stream"}
        meta = normalize_metadata(metadata)
        if meta:
            body["metadata"] = meta
        resp = self.client._http.post(
            url, json=body, headers={"X-Upload-Content-Type": "application/octet-stream"}, timeout=(10, 60)
        )
        _raise_for(resp, self.uri(key))
        location = resp.headers.get("Location")
        if not location:
            raise StorageError(f"resumable upload of {self.uri(key)}: no session URL")
        return location

    def _resumable_put(self, session_url: str, key: str, data: Any, start: int, total: int | None) -> Any:
        n = len(data)
        end = f"{start + n - 1}" if n else "*"
        rng = f"bytes {start}-{end}/{'*' if total is None else total}" if n else f"bytes */{total}"
        resp = self.client._http.put(
            session_url,
            data=data,
            headers={"Content-Range": rng, "Content-Length": str(n)},
            timeout=(10, 120),
        )
        if total is None:
            if resp.status_code != 308:
                _raise_for(resp, self.uri(key))
                raise StorageError(f"resumable upload of {self.uri(key)}: HTTP {resp.status_code} mid-upload")
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
    return ObjectInfo(
        key=key,
        size=int(res.get("size") or 0),
        etag=res.get("etag"),
        md5=md5_b64_to_hex(res["md5Hash"]) if res.get("md5Hash") else None,
        crc32c=crc32c_from_b64(res["crc32c"]) if res.get("crc32c") else None,
        metadata=normalize_metadata(res.get("metadata")),
    )


class _PartsBody:
    """A request body of known length that pulls the engine's parts one at a time as it is sent.
    (No `tell`/`seek`: requests would then take its length for 0 and send it chunked.)"""

    def __init__(self, chunks: Iterable[tuple[int, int, bytes, bytes]], size: int, name: str):
        self._chunks = iter(chunks)
        self._size = size
        self._view = memoryview(b"")
        self.sent = 0
        self.numbers: list[int] = []

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> Any:  # memoryview slices: sent without a copy
        while not len(self._view):
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self.numbers.append(nxt[0])
            self._view = memoryview(nxt[2])
        if n is None or n < 0:
            n = len(self._view)
        out = self._view[:n]
        self._view = self._view[n:]
        self.sent += len(out)
        return out


class _GCSComposite(MultipartUpload):
    """Parallel parts as scratch objects composed at the end; or, through `upload_stream`, stripes
    as resumable uploads: a single stripe goes straight to the target (no compose, no scratch
    objects to delete), several become scratch objects composed into the target."""

    # Streamed stripes are checked by the CRC32C GCS computes over the stored object.
    stream_needs_md5 = False

    def __init__(self, store: GCSStore, key: str, metadata: Mapping[str, str] | None = None):
        self.store = store
        self.key = key
        self.metadata = normalize_metadata(metadata)
        self.scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex}/"
        self.created: list[str] = []
        self.direct: ObjectInfo | None = None  # the target, when one stripe was uploaded to it

    def upload_stream(
        self, stripe: int, nstripes: int, size: int, chunks: Iterable[tuple[int, int, bytes, bytes]]
    ) -> dict[int, str]:
        """The whole stripe as one resumable-upload PUT whose body streams the parts as the engine
        reads them (one part in memory at a time): one request per stripe, no per-chunk
        round trips, and no re-assembly of chunks on the server."""
        direct = nstripes == 1
        name = self.key if direct else f"{self.scratch}s{stripe:05d}"
        if not direct:
            self.created.append(name)
        session = self.store._resumable_session(name, self.metadata if direct else None)
        body = _PartsBody(chunks, size, name)
        result = self.store._resumable_put(session, name, body, 0, size)
        if body.sent != size:
            raise StorageError(f"resumable upload of {self.store.uri(name)} sent {body.sent} of {size} bytes")
        info = _blob_info(name, result)
        if info.size != size:
            raise StorageError(
                f"resumable upload of {self.store.uri(name)}: {info.size} bytes stored, sent {size}"
            )
        if direct:
            self.direct = info
        return dict.fromkeys(body.numbers, name)

    def upload_part(self, number: int, data: bytes, md5: bytes, offset: int) -> str:
        name = f"{self.scratch}{number:05d}"
        blob = self.store._bucket.blob(name)
        blob.md5_hash = base64.b64encode(md5).decode()
        self.created.append(name)
        blob.upload_from_string(data, content_type="application/octet-stream", checksum=None)
        if blob.md5_hash and md5_b64_to_hex(blob.md5_hash) != md5.hex():
            raise StorageError(f"GCS part {number} of {self.key}: MD5 mismatch after upload")
        return name

    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        bucket = self.store._bucket
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
