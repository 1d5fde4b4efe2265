"""The `Store` interface shared by the file://, s3://, gs:// and az:// backends.

A `Store` is bound to one bucket (S3, GCS), container (Azure) or directory tree (file://). Keys
are '/'-separated strings relative to it. Everything here is plain Python; no Airflow imports.
"""

from __future__ import annotations

import base64
import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import google_crc32c

# Metadata keys the engine writes on destination objects (lower-case identifiers: S3 folds case,
# Azure requires C# identifier names).
META_MD5 = "sky_md5"  # hex MD5 of the content, as computed by the engine while copying
META_CRC32C = "sky_crc32c"  # base64 big-endian CRC32C of the content (GCS's format)
META_SRC_ETAG = "sky_src_etag"  # etag of the source object this copy was made from
META_PART_SIZE = "sky_part_size"  # part size of an engine multipart upload (lets S3 re-derive its ETag)

# Objects under this prefix are engine scratch space (GCS parallel-composite parts); never listed.
SCRATCH_PREFIX = ".sky-parts/"


class StorageError(Exception):
    """Base error of the storage layer."""


class NotFound(StorageError):
    """The object or bucket does not exist."""


class IntegrityError(StorageError):
    """Sizes or checksums disagree: the bytes are not what they should be."""


# --------------------------------------------------------------------------- checksums


def crc32c_value(data: bytes | memoryview) -> int:
    return google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)


def crc32c_to_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def crc32c_from_b64(text: str) -> int:
    return int.from_bytes(base64.b64decode(text), "big")


def md5_b64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def md5_hex_to_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(mat: list[int], vec: int) -> int:
    total = 0
    i = 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, Castagnoli polynomial).

    Lets parts of a large object be checksummed in parallel and still yield the whole object's CRC32C.
    """
    if len2 <= 0:
        return crc1
    odd = [_CRC32C_POLY] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def multipart_etag(part_md5_digests: list[bytes]) -> str:
    """S3's ETag of a multipart upload: MD5 of the concatenated part MD5 digests, then `-<parts>`."""
    return f"{hashlib.md5(b''.join(part_md5_digests)).hexdigest()}-{len(part_md5_digests)}"


# --------------------------------------------------------------------------- records


@dataclass
class ObjectInfo:
    """One object as a store reports it. Checksums are None when the store does not know them."""

    key: str
    size: int
    etag: str | None = None
    md5: str | None = None  # hex
    crc32c: int | None = None
    mtime: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # True when `metadata` is complete (listing on S3 does not return user metadata).
    metadata_loaded: bool = True

    def checksums(self) -> dict[str, object]:
        """All content checksums known for this object: server-computed first, then engine-written."""
        out: dict[str, object] = {}
        md5 = self.md5 or self.metadata.get(META_MD5)
        if md5:
            out["md5"] = md5.lower()
        crc = self.crc32c
        if crc is None and self.metadata.get(META_CRC32C):
            try:
                crc = crc32c_from_b64(self.metadata[META_CRC32C])
            except (ValueError, TypeError):
                crc = None
        if crc is not None:
            out["crc32c"] = crc
        return out

    def self_consistent(self) -> bool:
        """False when a server-computed checksum contradicts the one the engine recorded at copy time
        (the object was changed behind the engine's back, e.g. overwritten or tampered)."""
        md5_meta = self.metadata.get(META_MD5)
        if self.md5 and md5_meta and self.md5.lower() != md5_meta.lower():
            return False
        crc_meta = self.metadata.get(META_CRC32C)
        if self.crc32c is not None and crc_meta:
            try:
                return crc32c_from_b64(crc_meta) == self.crc32c
            except (ValueError, TypeError):
                return False
        return True


@dataclass
class PartResult:
    number: int  # 1-based
    size: int
    md5: bytes  # raw digest
    crc32c: int
    token: str | None = None  # backend's handle (S3 part ETag, Azure block id, GCS part object name)


class MultipartUpload(ABC):
    """An in-progress upload of one object in parts (S3 multipart, Azure blocks, GCS compose, file)."""

    key: str
    #: Whether `upload_stream` uses the parts' MD5 digests (sent for the server to validate, or
    #: to check a multipart ETag); when False the engine skips hashing them (CRC32C still verifies).
    stream_needs_md5: bool = True

    @abstractmethod
    def upload_part(self, number: int, data: bytes, md5: bytes, offset: int) -> str:
        """Upload part `number` (1-based) holding bytes [offset, offset+len(data)) of the object;
        parts may be uploaded in any order and in parallel. `md5` is the part's raw MD5 digest (sent
        for the server to validate where the protocol allows). Returns the backend's part token."""

    def upload_stream(
        self, stripe: int, nstripes: int, size: int, chunks: Iterable[tuple[int, int, bytes, bytes]]
    ) -> dict[int, str]:
        """Upload one stripe of the object: consecutive parts `chunks` yields as (number, offset,
        data, md5 digest), in order, `size` bytes in all; stripe `stripe` of `nstripes` (stripes may
        be uploaded in parallel). Returns each part's token. Default: one `upload_part` per part;
        backends with a cheaper sequential protocol (GCS resumable uploads) override it."""
        tokens: dict[int, str] = {}
        for number, offset, data, md5 in chunks:
            tokens[number] = self.upload_part(number, data, md5, offset)
        return tokens

    @abstractmethod
    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Assemble the parts (sorted by number) into the object and return what the store reports."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the parts; never raises for an already-gone upload."""


class Store(ABC):
    """One bucket / container / directory tree behind a uniform interface."""

    scheme: str = ""
    #: Smallest part size (except the last) the backend accepts in a multipart upload.
    min_part_size: int = 1
    #: Most parts one multipart upload may have.
    max_parts: int = 10_000
    #: Largest object that `copy_from` can copy server-side in one call.
    max_server_copy: int = 1 << 62

    bucket: str = ""

    # ---- identity
    @abstractmethod
    def uri(self, key: str = "") -> str:
        """The URI of `key` in this store."""

    def endpoint_identity(self) -> tuple:
        """Stores with equal identities can copy server-side between each other."""
        return (self.scheme,)

    def can_server_copy_from(self, other: Store) -> bool:
        return type(other) is type(self) and other.endpoint_identity() == self.endpoint_identity()

    # ---- listing and metadata
    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, with sizes and whatever checksums listing gives."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Full information (including user metadata) on one object, or None when absent."""

    def compute_checksums(self, key: str) -> tuple[str, int]:
        """Read the object and return (md5 hex, crc32c): for stores that do not keep checksums."""
        md5 = hashlib.md5()
        crc = 0
        with self.open_read(key) as stream:
            while chunk := stream.read(8 << 20):
                md5.update(chunk)
                crc = google_crc32c.extend(crc, chunk)
        return md5.hexdigest(), crc

    # ---- reading
    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (`end=None`: to the end). Ranged read."""

    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream over the whole object (default: one buffered read)."""
        return io.BytesIO(self.read(key))

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        """A readable stream over bytes [start, end) of the object: one streamed GET where the
        backend supports it (so a large object costs the server one read, not one per part).
        Default: a ranged `read` per `read(n)` call."""
        return _RangedReader(self, key, start, end)  # type: ignore[return-value]

    # ---- writing
    @abstractmethod
    def write(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
        crc32c: int | None = None,
    ) -> ObjectInfo:
        """Write a whole object in one request. `md5` (raw digest) / `crc32c`, when given, are sent
        for the server to validate where the protocol allows it. Returns what the store reports."""

    @abstractmethod
    def begin_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartUpload:
        """Start a multipart / block / composite upload of `key`."""

    def write_stream(
        self,
        key: str,
        stream: BinaryIO,
        part_size: int = 16 << 20,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload from a stream of unknown size, one part in memory at a time (sequential)."""
        part_size = max(part_size, self.min_part_size)
        first = _read_full(stream, part_size)
        if len(first) < part_size:
            return self.write(key, first, metadata=metadata, md5=hashlib.md5(first).digest())
        upload = self.begin_multipart(key, metadata=metadata)
        parts: list[PartResult] = []
        try:
            data = first
            number = 1
            offset = 0
            while data:
                digest = hashlib.md5(data).digest()
                token = upload.upload_part(number, data, digest, offset)
                parts.append(PartResult(number, len(data), digest, crc32c_value(data), token))
                number += 1
                offset += len(data)
                data = _read_full(stream, part_size)
            return upload.complete(parts, metadata=metadata)
        except BaseException:
            upload.abort()
            raise

    # ---- server-side operations
    @abstractmethod
    def copy_from(
        self, source: Store, src_key: str, dst_key: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Server-side copy from `source` (same provider, see `can_server_copy_from`)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting an absent object is not an error."""

    # ---- buckets
    @abstractmethod
    def bucket_exists(self) -> bool: ...

    @abstractmethod
    def create_bucket(self, region: str | None = None, exist_ok: bool = True) -> None:
        """Create the bucket (in `region` where the provider has bucket regions)."""

    @abstractmethod
    def region(self) -> str | None:
        """The bucket's region (lower-case provider name, e.g. `us-east-1`, `us-central1`), if known."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connection pools."""


class _RangedReader(io.RawIOBase):
    """Stream over [start, end) of an object, one ranged `Store.read` per `read(n)`."""

    def __init__(self, store: Store, key: str, start: int, end: int):
        super().__init__()
        self.store, self.key, self.pos, self.end = store, key, start, end

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        stop = self.end if size is None or size < 0 else min(self.end, self.pos + size)
        if stop <= self.pos:
            return b""
        data = self.store.read(self.key, self.pos, stop)
        self.pos += len(data)
        return data


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Exactly `size` bytes from `stream` (fewer only at its end), without a copy when one
    `read` returns them all."""
    first = stream.read(size)
    if not first or len(first) >= size:
        return first
    chunks = [first]
    remaining = size - len(first)
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_full(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (metadata or {}).items()}
