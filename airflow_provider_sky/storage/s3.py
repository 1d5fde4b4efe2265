"""s3:// store over boto3 (any S3-compatible endpoint: AWS, moto server, MinIO...).

Reads, heads and listings go direct where `s3_direct` allows; the botocore client is then made
only when something else (a write, a fallback) first needs it."""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from .base import (
    SCRATCH_PREFIX,
    HTTPBodyStream,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    StorageError,
    Store,
    ViewReader,
    normalize_metadata,
)
from .direct_http import SignatureRefused, parse_http_date
from .s3_direct import (
    Redirected,
    S3DirectReader,
    parse_iso_date,
    plain_endpoint,
    reader_for,
)

log = logging.getLogger(__name__)


def _body(data: Any) -> Any:
    """A request body botocore sends without a copy: bytes as they are, a buffer as a stream
    (botocore appends a bytes body to the request head, copying it, and rejects memoryviews)."""
    return data if isinstance(data, bytes) else ViewReader(data)


def _etag_md5(etag: str | None) -> str | None:
    """S3's ETag is the content MD5 for single-part, unencrypted uploads (no '-N' suffix)."""
    if not etag:
        return None
    etag = etag.strip('"')
    if "-" in etag or len(etag) != 32:
        return None
    return etag.lower()


def _parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser without dateutil's generic parser (about 1 ms of CPU per
    call, i.e. per request, and per object of a listing): S3 sends ISO 8601 in XML bodies and
    RFC 1123 in headers; anything else goes to botocore's own parser."""
    import datetime
    import email.utils

    from botocore.utils import parse_timestamp

    if isinstance(value, str):
        try:
            if value[:4].isdigit():
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            else:
                parsed = email.utils.parsedate_to_datetime(value)
            if parsed.tzinfo is not None:
                return parsed
        except (ValueError, TypeError, IndexError):
            pass
    return parse_timestamp(value)


def make_s3_client(
    endpoint_url: str | None = None,
    region_name: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    profile_name: str | None = None,
    max_pool_connections: int = 64,
    verify: bool | str | None = None,
    addressing_style: str | None = None,
    connect_timeout: float = 10,
    read_timeout: float = 60,
    max_attempts: int = 5,
) -> Any:
    """A thread-safe S3 client (botocore's: the same client boto3 makes, without importing boto3
    and s3transfer, which an engine process does not use). With `endpoint_url` (emulators, MinIO)
    path-style addressing is used so bucket names never turn into DNS lookups of
    `<bucket>.<endpoint host>`."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session(profile=profile_name)
    if aws_access_key_id or aws_secret_access_key or aws_session_token:
        session.set_credentials(aws_access_key_id, aws_secret_access_key, aws_session_token)
    with contextlib.suppress(Exception):  # this session's clients only
        factory = session.get_component("response_parser_factory")
        factory.set_parser_defaults(timestamp_parser=_parse_timestamp)
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
        # The engine computes and sends Content-MD5 itself; skip botocore's extra CRC pass.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": region_name}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if verify is not None:
        kwargs["verify"] = verify
    return session.create_client("s3", **kwargs)


class S3Store(Store):
    scheme = "s3"
    min_part_size = 5 << 20
    max_parts = 10_000
    max_server_copy = 5 << 30

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        max_pool_connections: int = 64,
        verify: bool | str | None = None,
    ):
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._access_key = aws_access_key_id
        self._client = client
        self._client_lock = threading.Lock()
        self._client_kwargs = {
            "endpoint_url": endpoint_url,
            "region_name": region_name,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "profile_name": profile_name,
            "max_pool_connections": max_pool_connections,
            "verify": verify,
        }
        # Reads as signed GETs over urllib3 (see s3_direct): without a client at all when the
        # URL and keys are plain, else through the client's endpoint and credentials.
        self._direct: S3DirectReader | None = None
        plain = None
        if client is None and profile_name is None and verify is None:
            plain = plain_endpoint(
                bucket, endpoint_url, region_name, aws_access_key_id, aws_secret_access_key, aws_session_token
            )
        if plain is not None:
            base, region, credentials = plain
            self._direct = S3DirectReader(base, region, credentials, maxsize=max_pool_connections)
        else:
            self._direct = reader_for(self.client, bucket)

    @property
    def client(self) -> Any:
        """The botocore client, made on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_s3_client(**self._client_kwargs)
        return self._client

    def _drop_direct(self, exc: Exception) -> None:
        log.warning("%s; using botocore for %s from now on", exc, self.uri())
        self._direct = None

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def endpoint_identity(self) -> tuple:
        endpoint = self.endpoint_url
        if endpoint is None:
            endpoint = (
                self._client.meta.endpoint_url if self._client is not None else f"aws:{self.region_name}"
            )
        return ("s3", endpoint.rstrip("/"), self._access_key)

    # ---- listing
    def list(self, prefix: str = "", hidden: bool = False) -> Iterator[ObjectInfo]:
        direct = self._direct
        if direct is not None:
            try:
                first = direct.list_page(prefix)
            except NotFound:
                raise NotFound(self.uri()) from None
            except SignatureRefused as exc:
                self._drop_direct(exc)
            except Redirected:
                pass  # botocore follows the bucket to its region
            else:
                yield from self._list_direct(direct, prefix, first, hidden)
                return
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    if not hidden and item["Key"].startswith(SCRATCH_PREFIX):
                        continue
                    etag = item.get("ETag", "").strip('"') or None
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=etag,
                        md5=_etag_md5(etag),
                        mtime=item["LastModified"].timestamp() if item.get("LastModified") else None,
                        metadata_loaded=False,
                    )
        except self.client.exceptions.NoSuchBucket as exc:
            raise NotFound(self.uri()) from exc

    def _list_direct(
        self, direct: S3DirectReader, prefix: str, page: tuple[list[dict[str, str]], str | None], hidden: bool
    ) -> Iterator[ObjectInfo]:
        while True:
            items, token = page
            for item in items:
                if not hidden and item["Key"].startswith(SCRATCH_PREFIX):
                    continue
                etag = item["ETag"].strip('"') or None
                yield ObjectInfo(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=etag,
                    md5=_etag_md5(etag),
                    mtime=parse_iso_date(item["LastModified"]),
                    metadata_loaded=False,
                )
            if not token:
                return
            page = direct.list_page(prefix, token)

    def _info(self, key: str, resp: Mapping[str, Any]) -> ObjectInfo:
        etag = (resp.get("ETag") or "").strip('"') or None
        size = resp.get("ContentLength")
        return ObjectInfo(
            key=key,
            size=int(size) if size is not None else -1,
            etag=etag,
            md5=_etag_md5(etag),
            mtime=resp["LastModified"].timestamp() if resp.get("LastModified") else None,
            metadata=normalize_metadata(resp.get("Metadata")),
        )

    def head(self, key: str) -> ObjectInfo | None:
        direct = self._direct
        if direct is not None:
            try:
                headers = direct.head(key)
            except SignatureRefused as exc:
                self._drop_direct(exc)
            except Redirected:
                pass
            else:
                if headers is None:
                    return None
                etag = headers.get("etag", "").strip('"') or None
                return ObjectInfo(
                    key=key,
                    size=int(headers.get("content-length", -1)),
                    etag=etag,
                    md5=_etag_md5(etag),
                    mtime=parse_http_date(headers.get("last-modified")),
                    metadata=normalize_metadata(
                        {
                            k[len("x-amz-meta-") :]: v
                            for k, v in headers.items()
                            if k.startswith("x-amz-meta-")
                        }
                    ),
                )
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return self._info(key, resp)

    # ---- reading
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            if end is not None and end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        direct = self._direct
        if direct is not None:
            try:
                return direct.get(key, start, end)
            except NotFound:
                raise NotFound(self.uri(key)) from None
            except SignatureRefused as exc:
                self._drop_direct(exc)
            except Redirected:
                pass  # botocore follows the bucket to its region
        try:
            resp = self.client.get_object(**kwargs)
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(self.uri(key)) from exc
        return resp["Body"].read()

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(self.uri(key)) from exc

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """One streamed ranged GET (moto and other emulators serve a range by slicing the whole
        object, so one GET per stripe instead of one per part also spares the server), read
        with `readinto` straight into the caller's buffers."""
        direct = self._direct
        if direct is not None:
            try:
                return direct.open_range(key, start, end)  # type: ignore[return-value]
            except NotFound:
                raise NotFound(self.uri(key)) from None
            except SignatureRefused as exc:
                self._drop_direct(exc)
            except Redirected:
                pass
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(self.uri(key)) from exc
        body = resp["Body"]
        raw = getattr(body, "_raw_stream", None)
        return HTTPBodyStream(raw) if raw is not None else body  # type: ignore[return-value]

    # ---- writing
    def write(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
        crc32c: int | None = None,
    ) -> ObjectInfo:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": _body(data),
            "Metadata": normalize_metadata(metadata),
        }
        if md5 is not None:
            kwargs["ContentMD5"] = base64.b64encode(md5).decode()
        resp = self.client.put_object(**kwargs)
        etag = (resp.get("ETag") or "").strip('"') or None
        return ObjectInfo(
            key=key, size=len(data), etag=etag, md5=_etag_md5(etag), metadata=normalize_metadata(metadata)
        )

    def begin_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartUpload:
        return _S3Multipart(self, key, metadata)

    def resume_multipart(
        self, key: str, state: Mapping[str, Any], parts: Mapping[int, PartResult]
    ) -> MultipartUpload | None:
        """The in-progress multipart upload `state` names, if S3 still lists it for `key`; its
        parts whose size and ETag (the part's MD5) match what was recorded are kept."""
        upload_id = state.get("upload_id")
        if not upload_id:
            return None
        listed = False
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=key)
        for page in pages:
            if any(u["Key"] == key and u["UploadId"] == upload_id for u in page.get("Uploads", ())):
                listed = True
                break
        if not listed:
            return None
        upload = _S3Multipart(self, key, None, upload_id=upload_id)
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=key, UploadId=upload_id
        )
        for page in pages:
            for p in page.get("Parts", ()):
                rec = parts.get(int(p["PartNumber"]))
                etag = p["ETag"].strip('"').lower()
                if rec is not None and int(p["Size"]) == rec.size and (not rec.md5 or etag == rec.md5.hex()):
                    upload.tokens[rec.number] = p["ETag"]
        return upload

    def copy_from(
        self,
        source: Store,
        src_key: str,
        dst_key: str,
        metadata: Mapping[str, str] | None = None,
        part_size: int | None = None,
        size: int | None = None,
    ) -> ObjectInfo:
        """Server-side copy. With `part_size` and `size`, a multipart copy (UploadPartCopy) with
        those part boundaries: the copy of an object uploaded in parts of `part_size` then gets
        the same multipart ETag, a server-computed check of the copy (and objects > 5 GiB work)."""
        if not isinstance(source, S3Store):
            raise StorageError("server-side copy needs two S3 stores")
        copy_source = {"Bucket": source.bucket, "Key": src_key}
        if part_size and size is not None:
            meta = (
                normalize_metadata(metadata)
                if metadata is not None
                else (source.head(src_key) or ObjectInfo(src_key, 0)).metadata
            )
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=dst_key, Metadata=meta)
            upload_id = upload["UploadId"]
            try:
                parts = []
                for number, offset in enumerate(range(0, size, part_size), start=1):
                    end = min(size, offset + part_size) - 1
                    resp = self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={offset}-{end}",
                    )
                    parts.append({"ETag": resp["CopyPartResult"]["ETag"], "PartNumber": number})
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dst_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=dst_key, UploadId=upload_id)
                raise
        else:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": dst_key, "CopySource": copy_source}
            if metadata is not None:
                kwargs["Metadata"] = normalize_metadata(metadata)
                kwargs["MetadataDirective"] = "REPLACE"
            self.client.copy_object(**kwargs)
        info = self.head(dst_key)
        if info is None:
            raise StorageError(f"server-side copy to {self.uri(dst_key)} left no object")
        return info

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    # ---- buckets
    def bucket_exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise

    def create_bucket(self, region: str | None = None, exist_ok: bool = True) -> None:
        region = region or self.region_name or self.client.meta.region_name or "us-east-1"
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except (
            self.client.exceptions.BucketAlreadyOwnedByYou,
            self.client.exceptions.BucketAlreadyExists,
        ):
            if not exist_ok:
                raise

    def region(self) -> str | None:
        resp = self.client.get_bucket_location(Bucket=self.bucket)
        return resp.get("LocationConstraint") or "us-east-1"

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._client is not None:
            self._client.close()


class _S3Multipart(MultipartUpload):
    def __init__(
        self, store: S3Store, key: str, metadata: Mapping[str, str] | None, upload_id: str | None = None
    ):
        self.store = store
        self.key = key
        if upload_id is None:
            resp = store.client.create_multipart_upload(
                Bucket=store.bucket, Key=key, Metadata=normalize_metadata(metadata)
            )
            upload_id = resp["UploadId"]
        self.upload_id = upload_id

    def resume_state(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id}

    def upload_part(self, number: int, data: Any, md5: bytes, offset: int) -> str:
        resp = self.store.client.upload_part(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=_body(data),
            ContentMD5=base64.b64encode(md5).decode(),
        )
        etag = resp["ETag"].strip('"')
        if etag.lower() != md5.hex():
            raise StorageError(f"S3 part {number} of {self.key}: ETag {etag} != MD5 {md5.hex()}")
        self.tokens[number] = resp["ETag"]
        return resp["ETag"]

    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        parts = sorted(parts, key=lambda p: p.number)
        resp = self.store.client.complete_multipart_upload(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"ETag": p.token, "PartNumber": p.number} for p in parts]},
        )
        etag = (resp.get("ETag") or "").strip('"') or None
        info = self.store.head(self.key)
        if info is None:
            raise StorageError(f"multipart upload of {self.store.uri(self.key)} left no object")
        info.etag = info.etag or etag
        return info

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )
