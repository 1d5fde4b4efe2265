"""az:// store over azure-storage-blob (Azure Blob Storage, or Azurite given an explicit endpoint).

URIs: `az://<account>/<container>/<key>` or `https://<account>.blob.core.windows.net/<container>/<key>`.
Large objects are staged as blocks (each with a transactional MD5 the service validates) and
committed as one block list. A blob's region is the storage account's location, which the blob
API does not expose: pass `region=` (e.g. from the connection's extras) for region-aware staging.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from .azure_sharedkey import SharedKeyBlobWriter, SignatureRefused, plain_account, writer_for
from .base import (
    SCRATCH_PREFIX,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    StorageError,
    Store,
    normalize_metadata,
    pin_environment,
)
from .direct_http import parse_http_date

_MAX_SINGLE_PUT = 256 << 20

# azure-core logs every request and response at INFO: keep task logs readable unless asked for.
log = logging.getLogger(__name__)
_http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
if _http_log.level == logging.NOTSET:
    _http_log.setLevel(logging.WARNING)


def make_blob_service_client(
    account: str | None = None,
    *,
    account_url: str | None = None,
    account_key: str | None = None,
    connection_string: str | None = None,
    sas_token: str | None = None,
    credential: Any = None,
    max_pool_connections: int = 64,
    connect_timeout: float = 10,
    read_timeout: float = 120,
    retry_total: int = 5,
) -> Any:
    """A BlobServiceClient with a pooled transport and short exponential retries.

    Resolution order: `connection_string`; else `account_url` (default
    `https://<account>.blob.core.windows.net`) with `credential`, `account_key`, `sas_token`, or
    azure-identity's DefaultAzureCredential."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max_pool_connections, pool_maxsize=max_pool_connections
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    common: dict[str, Any] = {
        "transport": RequestsTransport(
            session=session,
            session_owner=False,
            connection_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
        "retry_policy": ExponentialRetry(
            initial_backoff=0.5, increment_base=2, retry_total=retry_total, random_jitter_range=0.5
        ),
        "max_single_put_size": _MAX_SINGLE_PUT,
        "max_single_get_size": _MAX_SINGLE_PUT,
        "max_chunk_get_size": 32 << 20,
    }
    if connection_string:
        client = BlobServiceClient.from_connection_string(connection_string, **common)
        pin_environment(session, client.url)
        return client
    if not account_url:
        if not account:
            raise StorageError("an Azure store needs an account name, account_url or connection_string")
        account_url = f"https://{account}.blob.core.windows.net"
    if credential is None:
        if account_key:
            credential = {
                "account_name": account or account_url.rstrip("/").rsplit("/", 1)[-1],
                "account_key": account_key,
            }
        elif sas_token:
            credential = sas_token
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
    pin_environment(session, account_url)
    return BlobServiceClient(account_url, credential=credential, **common)


def _md5_hex(value: Any) -> str | None:
    if not value:
        return None
    return bytes(value).hex()


def _props_info(key: str, props: Any) -> ObjectInfo:
    settings = getattr(props, "content_settings", None)
    return ObjectInfo(
        key=key,
        size=int(props.size or 0),
        etag=(props.etag or "").strip('"') or None,
        md5=_md5_hex(settings.content_md5 if settings else None),
        mtime=props.last_modified.timestamp() if props.last_modified else None,
        metadata=normalize_metadata(props.metadata),
    )


class AzureStore(Store):
    scheme = "az"
    min_part_size = 1
    max_parts = 50_000
    max_server_copy = 1 << 40

    def __init__(
        self,
        account: str,
        container: str,
        *,
        client: Any = None,
        account_url: str | None = None,
        account_key: str | None = None,
        connection_string: str | None = None,
        sas_token: str | None = None,
        credential: Any = None,
        region: str | None = None,
        max_pool_connections: int = 64,
    ):
        self.account = account
        self.bucket = container
        self._region = region
        self._service = client
        self._container = None
        self._sdk_lock = threading.Lock()
        self._sdk_kwargs = {
            "account_url": account_url,
            "account_key": account_key,
            "connection_string": connection_string,
            "sas_token": sas_token,
            "credential": credential,
            "max_pool_connections": max_pool_connections,
        }
        # Blob requests straight over urllib3 when the credential allows (see azure_sharedkey):
        # with a plain Shared Key set-up the SDK client is not even built until something needs it.
        self._direct: SharedKeyBlobWriter | None = None
        plain = None
        if client is None and credential is None and not sas_token:
            plain = plain_account(account, account_url, account_key, connection_string)
        if plain is not None:
            url, name, key = plain
            self._account_url = url
            self._direct = SharedKeyBlobWriter(url, container, name, key, maxsize=max_pool_connections)
        else:
            self._account_url = self.service.url.split("?", 1)[0]
            self._direct = writer_for(self.service, container)

    @property
    def service(self) -> Any:
        """The SDK's BlobServiceClient, made on first use."""
        if self._service is None:
            with self._sdk_lock:
                if self._service is None:
                    self._service = make_blob_service_client(self.account, **self._sdk_kwargs)
        return self._service

    @property
    def container(self) -> Any:
        if self._container is None:
            self._container = self.service.get_container_client(self.bucket)
        return self._container

    def uri(self, key: str = "") -> str:
        return f"az://{self.account}/{self.bucket}/{key}"

    def endpoint_identity(self) -> tuple:
        return ("az", self._account_url.rstrip("/"))

    def _direct_refused(self, exc: Exception) -> None:
        """The service refused a directly signed request: the SDK does every write from now on."""
        if self._direct is not None:
            log.warning("%s; writing through the Azure SDK from now on", exc)
            self._direct = None

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(key)

    # ---- listing
    def list(self, prefix: str = "", hidden: bool = False) -> Iterator[ObjectInfo]:
        direct = self._direct
        if direct is not None:
            try:
                page = direct.list_page(prefix)
            except NotFound:
                raise NotFound(self.uri()) from None
            except SignatureRefused as exc:
                self._direct_refused(exc)
            else:
                while True:
                    items, marker = page
                    for item in items:
                        if hidden or not item["name"].startswith(SCRATCH_PREFIX):
                            yield ObjectInfo(
                                key=item["name"],
                                size=item["size"],
                                etag=item["etag"],
                                md5=item["md5"],
                                mtime=parse_http_date(item["mtime"]),
                                metadata=normalize_metadata(item["metadata"]),
                            )
                    if not marker:
                        return
                    page = direct.list_page(prefix, marker)
        from azure.core.exceptions import ResourceNotFoundError

        try:
            for props in self.container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
                if hidden or not props.name.startswith(SCRATCH_PREFIX):
                    yield _props_info(props.name, props)
        except ResourceNotFoundError as exc:
            raise NotFound(self.uri()) from exc

    def head(self, key: str) -> ObjectInfo | None:
        direct = self._direct
        if direct is not None:
            try:
                headers = direct.head(key)
            except SignatureRefused as exc:
                self._direct_refused(exc)
            else:
                if headers is None:
                    return None
                md5 = headers.get("content-md5")
                return ObjectInfo(
                    key=key,
                    size=int(headers.get("content-length", 0)),
                    etag=(headers.get("etag") or "").strip('"') or None,
                    md5=base64.b64decode(md5).hex() if md5 else None,
                    mtime=parse_http_date(headers.get("last-modified")),
                    metadata=normalize_metadata(
                        {k[len("x-ms-meta-") :]: v for k, v in headers.items() if k.startswith("x-ms-meta-")}
                    ),
                )
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return _props_info(key, props)

    # ---- reading
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        if end is not None and end <= start:
            return b""
        length = None if end is None else end - start
        try:
            return (
                self._blob(key)
                .download_blob(offset=start if (start or length) else None, length=length, max_concurrency=1)
                .readall()
            )
        except ResourceNotFoundError as exc:
            raise NotFound(self.uri(key)) from exc

    def open_read(self, key: str) -> BinaryIO:
        downloader = self._blob(key).download_blob(max_concurrency=1)
        return io.BufferedReader(_ChunkStream(downloader.chunks()), buffer_size=8 << 20)

    # ---- writing
    def write(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
        crc32c: int | None = None,
    ) -> ObjectInfo:
        direct = self._direct
        if direct is not None:
            try:
                digest = md5 if md5 is not None else hashlib.md5(data).digest()
                etag, stored_md5 = direct.put_blob(key, data, digest, normalize_metadata(metadata))
                return ObjectInfo(
                    key=key, size=len(data), etag=etag, md5=stored_md5, metadata=normalize_metadata(metadata)
                )
            except SignatureRefused as exc:
                self._direct_refused(exc)
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(
            content_type="application/octet-stream", content_md5=bytearray(md5) if md5 else None
        )
        resp = self._blob(key).upload_blob(
            data,
            overwrite=True,
            metadata=normalize_metadata(metadata) or None,
            content_settings=settings,
            validate_content=md5 is None,
            max_concurrency=1,
        )
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=(resp.get("etag") or "").strip('"') or None,
            md5=_md5_hex(resp.get("content_md5")),
            metadata=normalize_metadata(metadata),
        )

    def begin_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartUpload:
        return _AzureBlocks(self, key)

    def begin_resumable(
        self, key: str, resume_id: str, metadata: Mapping[str, str] | None = None
    ) -> MultipartUpload:
        """Blocks with ids derived from `resume_id` (the source version and part layout) and the
        part number, so a later run finds them among the blob's uncommitted blocks."""
        return _AzureBlocks(self, key, token=resume_id)

    def resume_multipart(
        self, key: str, state: Mapping[str, Any], parts: Mapping[int, PartResult]
    ) -> MultipartUpload | None:
        """The blob's uncommitted blocks staged under `state`'s token whose size matches the part
        recorded (each block's MD5 was validated by the service when it was staged)."""
        from azure.core.exceptions import ResourceNotFoundError

        token = state.get("token")
        if not token:
            return None
        upload = _AzureBlocks(self, key, token=str(token))
        try:
            _, uncommitted = self._blob(key).get_block_list("uncommitted")
        except ResourceNotFoundError:
            return None
        sizes = {block.id: block.size for block in uncommitted}
        for number, rec in parts.items():
            block_id = upload._block_id(number)
            if sizes.get(block_id) == rec.size:
                upload.tokens[number] = block_id
        return upload if sizes else None

    def copy_from(
        self, source: Store, src_key: str, dst_key: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        if not isinstance(source, AzureStore):
            raise StorageError("server-side copy needs two Azure stores")
        dst = self._blob(dst_key)
        src_url = source._blob(src_key).url
        kwargs: dict[str, Any] = {}
        if metadata is not None:
            kwargs["metadata"] = normalize_metadata(metadata)
        dst.start_copy_from_url(src_url, **kwargs)
        deadline = time.monotonic() + 3600
        delay = 0.05
        while True:
            props = dst.get_blob_properties()
            status = props.copy.status if props.copy else "success"
            if status == "success":
                return _props_info(dst_key, props)
            if status in ("failed", "aborted"):
                raise StorageError(
                    f"server-side copy to {self.uri(dst_key)} {status}: {props.copy.status_description}"
                )
            if time.monotonic() > deadline:
                raise StorageError(f"server-side copy to {self.uri(dst_key)} timed out")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def delete(self, key: str) -> None:
        direct = self._direct
        if direct is not None:
            try:
                direct.delete(key)
                return
            except SignatureRefused as exc:
                self._direct_refused(exc)
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob(key).delete_blob()

    # ---- containers
    def bucket_exists(self) -> bool:
        return self.container.exists()

    def create_bucket(self, region: str | None = None, exist_ok: bool = True) -> None:
        from azure.core.exceptions import ResourceExistsError

        if region and self._region and region.lower() != self._region.lower():
            raise StorageError(
                f"Azure containers live in their storage account's region ({self._region}); "
                f"use an account in {region}"
            )
        try:
            self.container.create_container()
        except ResourceExistsError:
            if not exist_ok:
                raise
        if region and not self._region:
            self._region = region

    def region(self) -> str | None:
        return self._region.lower() if self._region else None

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._service is not None:
            self._service.close()


class _ChunkStream(io.RawIOBase):
    """Raw stream over an iterator of byte chunks (wrapped in io.BufferedReader)."""

    def __init__(self, chunks: Iterator[bytes]):
        super().__init__()
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._buf):
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _AzureBlocks(MultipartUpload):
    def __init__(self, store: AzureStore, key: str, token: str | None = None):
        self.store = store
        self.key = key
        self.token = (token or uuid.uuid4().hex)[:16]

    def resume_state(self) -> dict[str, Any]:
        return {"token": self.token}

    def _block_id(self, number: int) -> str:
        return base64.b64encode(f"{self.token}-{number:06d}".encode()).decode()

    def upload_part(self, number: int, data: Any, md5: bytes, offset: int) -> str:
        block_id = self._block_id(number)
        direct = self.store._direct
        if direct is not None:
            try:
                # The SDK sends (and lists) block ids base64-encoded once more; so does this.
                direct.put_block(self.key, base64.b64encode(block_id.encode()).decode(), data, md5)
                self.tokens[number] = block_id
                return block_id
            except SignatureRefused as exc:
                self.store._direct_refused(exc)
        # The engine's MD5 of the block goes as the transactional Content-MD5 the service checks
        # on arrival (validate_content=True would make the SDK hash the bytes a second time).
        self.store._blob(self.key).stage_block(
            block_id,
            data,
            length=len(data),
            validate_content=False,
            transactional_content_md5=bytearray(md5),
        )
        self.tokens[number] = block_id
        return block_id

    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        ordered = [p.token for p in sorted(parts, key=lambda p: p.number)]
        direct = self.store._direct
        if direct is not None:
            try:
                direct.put_block_list(self.key, ordered, normalize_metadata(metadata))
                return self._committed()
            except SignatureRefused as exc:
                self.store._direct_refused(exc)
        from azure.storage.blob import BlobBlock, ContentSettings

        blob = self.store._blob(self.key)
        blob.commit_block_list(
            [BlobBlock(block_id=p.token) for p in sorted(parts, key=lambda p: p.number)],
            metadata=normalize_metadata(metadata) or None,
            content_settings=ContentSettings(content_type="application/octet-stream"),
        )
        return self._committed()

    def _committed(self) -> ObjectInfo:
        info = self.store.head(self.key)
        if info is None:
            raise StorageError(f"block commit of {self.store.uri(self.key)} left no object")
        return info

    def abort(self) -> None:
        """Uncommitted blocks are garbage-collected by the service (7 days); nothing to delete."""
