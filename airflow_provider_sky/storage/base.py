"""The `Store` interface shared by the file://, s3://, gs:// and az:// backends.

A `Store` is bound to one bucket (S3, GCS), container (Azure) or directory tree (file://). Keys
are '/'-separated strings relative to it. Everything here is plain Python; no Airflow imports.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import google_crc32c

# Metadata keys the engine writes on destination objects (lower-case identifiers: S3 folds case,
# Azure requires C# identifier names).
META_MD5 = "sky_md5"  # hex MD5 of the content, as computed by the engine while copying
META_CRC32C = "sky_crc32c"  # base64 big-endian CRC32C of the content (GCS's format)
META_SRC_ETAG = "sky_src_etag"  # etag of the source object this copy was made from
META_PART_SIZE = "sky_part_size"  # part size of an engine multipart upload (lets S3 re-derive its ETag)

# Objects under this prefix are engine scratch space (GCS parallel-composite parts, resume
# checkpoints of interrupted multipart copies); never listed.
SCRATCH_PREFIX = ".sky-parts/"
# Resume state of interrupted multipart copies (one small JSON per destination object).
RESUME_PREFIX = SCRATCH_PREFIX + "resume/"


class StorageError(Exception):
    """Base error of the storage layer."""


class ResumeError(StorageError):
    """An interrupted upload cannot be continued where the engine expected (not transient)."""


class NotFound(StorageError):
    """The object or bucket does not exist."""


class IntegrityError(StorageError):
    """Sizes or checksums disagree: the bytes are not what they should be."""


# --------------------------------------------------------------------------- checksums


_CRC_SLICE = 256 << 10


def crc32c_value(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of `data`. google_crc32c only takes `bytes`: a buffer (a reused part buffer) is
    hashed through 256 KiB copies, so no copy of a whole part is ever made."""
    if isinstance(data, bytes):
        return google_crc32c.value(data)
    view = memoryview(data).cast("B")
    crc = 0
    for i in range(0, len(view), _CRC_SLICE):
        crc = google_crc32c.extend(crc, bytes(view[i : i + _CRC_SLICE]))
    return crc


def crc32c_to_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def crc32c_from_b64(text: str) -> int:
    return int.from_bytes(base64.b64decode(text), "big")


def md5_b64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def md5_hex_to_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(mat: Sequence[int], vec: int) -> int:
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
    return _gf2_times(_append_zeros_operator(len2), crc1) ^ crc2


@functools.lru_cache(maxsize=64)
def _append_zeros_operator(len2: int) -> tuple[int, ...]:
    """The GF(2) matrix taking crc(A) to the CRC register after `len2` zero bytes follow A.

    Built once per length (zlib's square-and-multiply, with the applied squares composed into one
    matrix): parts of a large object share one size, so combining them costs one 32-step product
    each instead of about 25 matrix squarings (~3 ms of CPU in Python, held under the GIL)."""
    op = [1 << n for n in range(32)]  # identity

    def apply(mat: list[int]) -> None:
        op[:] = [_gf2_times(mat, col) for col in op]

    odd = [_CRC32C_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte
        if len2 & 1:
            apply(even)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            apply(odd)
        len2 >>= 1
        if not len2:
            break
    return tuple(op)


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
    """An in-progress upload of one object in parts (S3 multipart, Azure blocks, GCS compose, file).

    `data` handed to the upload methods is bytes or a memoryview over a reused buffer: it must
    be sent before the method returns (or before `upload_stream` asks for the next part) and not
    kept afterwards."""

    key: str
    #: Whether `upload_stream` uses the parts' MD5 digests (sent for the server to validate, or
    #: to check a multipart ETag); when False the engine skips hashing them (CRC32C still verifies).
    stream_needs_md5: bool = True
    #: Parts per stripe this upload is bound to (a resumed GCS upload: one session per stripe),
    #: or None when the engine may stripe freely.
    stripe_parts: int | None = None

    @property
    def tokens(self) -> dict[int, str]:
        """Token of every part known to be durably uploaded, by part number (filled as parts are
        uploaded, and with the verified parts of a resumed upload)."""
        if not hasattr(self, "_tokens"):
            self._tokens: dict[int, str] = {}
        return self._tokens

    @abstractmethod
    def upload_part(self, number: int, data: bytes | memoryview, md5: bytes, offset: int) -> str:
        """Upload part `number` (1-based) holding bytes [offset, offset+len(data)) of the object;
        parts may be uploaded in any order and in parallel. `md5` is the part's raw MD5 digest (sent
        for the server to validate where the protocol allows). Returns the backend's part token."""

    def upload_stream(
        self,
        stripe: int,
        nstripes: int,
        size: int,
        chunks: Iterable[tuple[int, int, bytes | memoryview, bytes]],
        start: int | None = None,
    ) -> dict[int, str]:
        """Upload (the rest of) one stripe of the object: consecutive parts `chunks` yields as
        (number, offset, data, md5 digest), in order; the stripe spans `size` bytes from object
        offset `start` (default: the first chunk's offset), stripe `stripe` of `nstripes` (stripes
        may be uploaded in parallel). A part is durable once its token is in `tokens` (one
        request may carry several parts); every part is durable when this returns. A part's
        data is valid only until the next part is asked for. Returns each part's token. Default: one `upload_part` per
        part; backends with a cheaper sequential protocol (GCS resumable uploads) override it."""
        tokens: dict[int, str] = {}
        for number, offset, data, md5 in chunks:
            tokens[number] = self.upload_part(number, data, md5, offset)
            self.tokens[number] = tokens[number]
        return tokens

    def resume_state(self) -> dict[str, Any] | None:
        """JSON-able state that lets `Store.resume_multipart` continue this upload from another
        process, or None when the upload cannot be resumed (the default)."""
        return None

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
    def list(self, prefix: str = "", hidden: bool = False) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, with sizes and whatever checksums listing gives;
        the engine's own scratch objects (under SCRATCH_PREFIX) only when `hidden`."""

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

    def begin_resumable(
        self, key: str, resume_id: str, metadata: Mapping[str, str] | None = None
    ) -> MultipartUpload:
        """Start an upload of `key` whose `resume_state` can be continued after a crash;
        `resume_id` (hex, identifies the source version and part layout) may name its parts.
        Default: `begin_multipart`."""
        return self.begin_multipart(key, metadata=metadata)

    def resume_multipart(
        self, key: str, state: Mapping[str, Any], parts: Mapping[int, PartResult]
    ) -> MultipartUpload | None:
        """Continue the upload of `key` that `state` (an earlier `resume_state`) describes.
        `parts` are the parts the engine recorded as uploaded; the upload's `tokens` hold those the
        store confirms are there with the recorded size (and MD5 where it keeps one). None when the
        upload is gone or cannot be resumed. Default: None."""
        return None

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

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


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


def readinto_full(stream: Any, view: memoryview) -> int:
    """Fill `view` from `stream` (fewer bytes only at its end); returns the count. Uses the
    stream's `readinto` (no intermediate bytes object) when it has one."""
    readinto = getattr(stream, "readinto", None)
    total = len(view)
    got = 0
    while got < total:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = stream.read(total - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            break
        got += n
    return got


class HTTPBodyStream(io.RawIOBase):
    """The body of a streamed urllib3 response read straight into the caller's buffers.

    urllib3's and http.client's `read(n)` allocate a fresh bytearray of n bytes and then copy it
    into the bytes they return (two part-sized allocations per read); `readinto` on the
    underlying http.client response fills the caller's buffer with no copy at all. Falls back to
    `read` when the body is content-decoded or partly buffered by urllib3."""

    def __init__(self, raw: Any, closer: Any = None):
        super().__init__()
        self._raw = raw
        self._closer = closer  # e.g. the requests.Response owning `raw`
        fp = getattr(raw, "_fp", None)
        buffered = getattr(raw, "_decoded_buffer", None)
        direct = (
            isinstance(fp, http.client.HTTPResponse)
            and getattr(raw, "_decoder", None) is None
            and (buffered is None or len(buffered) == 0)
        )
        self._fp = fp if direct else None
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._fp is not None:
            n = self._fp.readinto(b)
        else:
            data = self._raw.read(len(b), decode_content=False)
            n = len(data)
            b[:n] = data
        if not n:
            self._eof = True
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._eof and hasattr(self._raw, "release_conn"):
                self._raw.release_conn()  # fully read: the connection goes back to the pool
            else:
                self._raw.close()  # abandoned mid-body: the connection cannot be reused
            if self._closer is not None:
                self._closer.close()
        finally:
            super().close()


class ViewReader(io.RawIOBase):
    """A seekable file-like object over a buffer, read in memoryview slices (an HTTP body that
    SDKs accept as a stream: no copy into bytes, re-readable for retries)."""

    def __init__(self, data: bytes | memoryview):
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> Any:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        out = self._view[self._pos : end]
        self._pos = max(self._pos, end)
        return out

    def readinto(self, b: Any) -> int:
        out = self.read(len(b))
        b[: len(out)] = out
        return len(out)


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


def pin_environment(session: Any, url: str) -> None:
    """Resolve once what a `requests.Session` would re-read from the environment on every
    request (proxies for `url`'s host, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE), then stop it
    re-reading: that scan of os.environ costs about as much CPU as the rest of a small request.
    For sessions that only talk to one endpoint."""
    import os

    from requests.utils import get_environ_proxies

    proxies = get_environ_proxies(url)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.trust_env = False
    session.proxies.update(proxies)
    if bundle and session.verify is True:
        session.verify = bundle


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (metadata or {}).items()}
