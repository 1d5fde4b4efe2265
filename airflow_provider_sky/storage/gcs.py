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
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import quote

from .base import (
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
        return _GCSComposite(self, key)

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


class _GCSComposite(MultipartUpload):
    def __init__(self, store: GCSStore, key: str):
        self.store = store
        self.key = key
        self.scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex}/"
        self.created: list[str] = []

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
        names = [p.token for p in sorted(parts, key=lambda p: p.number)]
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
