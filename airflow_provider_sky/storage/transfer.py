"""The transfer engine: verified, incremental, parallel prefix copies between any two stores.

    report = transfer("s3://src/data/", "az://acct/cont/data/", src_options={...}, dst_options={...})

- Listing of source and destination runs concurrently; the identity checks of objects present on
  both sides run on the worker pool.
- Objects up to `multipart_threshold` are copied in one read and one write; larger ones in parts of
  `part_size`, read with ranged GETs and uploaded as multipart / blocks / composite parts, all in
  parallel on one thread pool. Bytes only ever live in memory, and the bytes in flight are bounded
  by `memory_budget` (a byte semaphore taken, in submission order, before a read starts).
- Same-provider pairs (same endpoint and credentials) use server-side copy.
- Every copied object is verified: size, and MD5/CRC32C computed by the engine against what the
  source claims and what the destination reports (S3 ETag or multipart ETag, GCS MD5/CRC32C,
  Azure Content-MD5 / per-block transactional MD5, file read-back). A mismatch raises
  `TransferError`; nothing is reported as copied unless verified.
- Incremental: an object already at the destination with the same size and checksum (or recorded
  as a copy of the same source ETag) is skipped, so a rerun after a crash copies only what is
  missing. Nothing is deleted at the destination unless `delete_extraneous=True`.
- Resumable inside a large object: its upload's state (S3 upload id, Azure block-id token, GCS
  session URLs) and the size/MD5/CRC32C of every part durably uploaded are recorded in a small
  JSON under `.sky-parts/resume/` in the destination bucket. A later run of the same copy (same
  source ETag and size) asks the destination which of those parts it still has (S3 ListParts,
  Azure uncommitted blocks, GCS acknowledged session bytes) and reads only the others.
- Parts are read with `readinto` into buffers pooled by the byte budget, so the resident memory
  of a copy is about `memory_budget`, not twice it. Each stream reads (and hashes) up to
  `read_ahead` parts ahead of the part it is uploading, within that budget.
- The hot requests skip the SDKs' per-request machinery where the credential allows: S3 GETs
  are SigV4-signed in `s3_direct`, Azure Put Blob / Put Block Shared-Key-signed in
  `azure_sharedkey`, both over bare urllib3 pools (a refused signature falls back to the SDK).
  GCS resumable uploads stream up to `resumable_chunk_size` (64 MiB) of parts per PUT.
- Before copying, the bytes to move give a cost and time estimate (`egress_price_per_gb`);
  progress (bytes, files, rate, ETA) goes to the `progress` callback and to the logger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from .base import (
    META_CRC32C,
    META_MD5,
    META_PART_SIZE,
    META_SRC_ETAG,
    RESUME_PREFIX,
    IntegrityError,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    ResumeError,
    StorageError,
    Store,
    crc32c_combine,
    crc32c_to_b64,
    crc32c_value,
    multipart_etag,
    readinto_full,
)
from .local import FileStore
from .uri import CLOUD_OF_SCHEME, parse_uri, store_for

log = logging.getLogger("airflow_provider_sky.storage.transfer")

MiB = 1 << 20

#: (src_cloud, src_region, dst_cloud, dst_region) -> USD per GB moved, or None when unknown.
EgressPriceFn = Callable[[str, "str | None", str, "str | None"], "float | None"]


# --------------------------------------------------------------------------- records


@dataclass
class TransferProgress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    files_skipped: int
    files_failed: int
    elapsed: float
    rate: float  # bytes/s over the whole run so far
    eta: float | None  # seconds, None until a rate is known

    def __str__(self) -> str:
        eta = f"{self.eta:.0f}s" if self.eta is not None else "?"
        return (
            f"{self.bytes_done / MiB:.1f}/{self.bytes_total / MiB:.1f} MiB, "
            f"{self.files_done}/{self.files_total} files ({self.files_skipped} skipped, "
            f"{self.files_failed} failed), {self.rate / 1e6:.1f} MB/s, ETA {eta}"
        )


@dataclass
class TransferEstimate:
    files: int  # objects to copy
    bytes: int  # bytes to copy
    files_skipped: int
    bytes_skipped: int
    seconds: float
    cost_usd: float | None  # None when no price is known
    price_per_gb: float | None
    server_side: bool
    src_region: str | None
    dst_region: str | None


@dataclass
class TransferReport:
    src_uri: str
    dst_uri: str
    files_copied: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    files_failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    seconds: float = 0.0
    verified: bool = False  # True when every copied object's size and a checksum were verified
    files_size_only: int = 0  # copied objects for which no checksum was available (size checked)
    server_side: bool = False
    estimate: TransferEstimate | None = None
    cost_usd: float | None = None  # bytes_copied x egress price (0 for server-side same region)
    failures: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    bytes_resumed: int = 0  # bytes of large objects an interrupted earlier run had uploaded (not re-read)

    @property
    def estimated_cost_usd(self) -> float | None:
        return self.estimate.cost_usd if self.estimate else None

    @property
    def estimated_seconds(self) -> float | None:
        return self.estimate.seconds if self.estimate else None

    @property
    def throughput(self) -> float:
        """Bytes copied per second."""
        return self.bytes_copied / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.src_uri} -> {self.dst_uri}: {self.files_copied} copied "
            f"({self.bytes_copied / MiB:.1f} MiB), {self.files_skipped} skipped, {self.files_deleted} deleted, "
            f"{self.files_failed} failed in {self.seconds:.1f}s ({self.throughput / 1e6:.1f} MB/s), "
            f"verified={self.verified}"
            + (f", cost ${self.cost_usd:.4f}" if self.cost_usd is not None else "")
        )


class TransferError(StorageError):
    """Some objects could not be copied and verified; `report` says which and why."""

    def __init__(self, message: str, report: TransferReport):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- helpers


class ByteBudget:
    """A FIFO semaphore counted in bytes: bounds the bytes held in memory by in-flight copies.

    It also pools part buffers (`take_buffer` / `give_buffer`): a returned buffer is kept for the
    next part and still counts as held (so `peak` is what the pool really holds); a waiter that
    needs room drops idle buffers first. Reused buffers mean no part-sized allocation, and no
    freed-but-resident heap, per part."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self.available = self.capacity
        self.peak = 0
        self._cond = threading.Condition()
        self._queue: list[object] = []
        self._idle: list[bytearray] = []

    def _wait_turn(self, ticket: object, ready: Callable[[], bool]) -> None:
        self._queue.append(ticket)
        while True:
            if self._queue[0] is ticket:
                if ready():
                    break
                if self._idle:  # room is held by idle pooled buffers: drop one and look again
                    self.available += len(self._idle.pop(0))
                    continue
            self._cond.wait()
        self._queue.pop(0)
        self.peak = max(self.peak, self.capacity - self.available)
        self._cond.notify_all()

    def acquire(self, n: int) -> int:
        n = max(1, min(int(n), self.capacity))
        with self._cond:
            self._wait_turn(object(), lambda: self.available >= n)
            self.available -= n
        return n

    def release(self, n: int) -> None:
        with self._cond:
            self.available += n
            self._cond.notify_all()

    def take_buffer(self, size: int) -> bytearray:
        """A buffer of exactly `size` bytes, counted against the budget until `give_buffer`."""
        if size > self.capacity:  # larger than the whole budget: not pooled
            self.acquire(size)
            return bytearray(size)
        found: list[bytearray] = []

        def ready() -> bool:
            for i, buf in enumerate(self._idle):
                if len(buf) == size:
                    found.append(self._idle.pop(i))
                    return True
            return self.available >= size

        with self._cond:
            self._wait_turn(object(), ready)
            if not found:
                self.available -= size
        return found[0] if found else bytearray(size)

    def give_buffer(self, buf: bytearray) -> None:
        """Return a buffer from `take_buffer`: kept for reuse (still counted as held)."""
        with self._cond:
            if len(buf) > self.capacity:
                self.available += self.capacity
            else:
                self._idle.append(buf)
            self._cond.notify_all()

    def drop_idle(self) -> None:
        """Free the pooled buffers (end of a run)."""
        with self._cond:
            while self._idle:
                self.available += len(self._idle.pop())
            self._cond.notify_all()


_NON_TRANSIENT_STATUS = {400, 401, 403, 404, 405, 409, 411, 412, 413, 416}


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(getattr(response, "status_code", None), int):
        return response.status_code
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying an operation that raised `exc` may succeed (network, 5xx, throttling)."""
    if isinstance(
        exc,
        IntegrityError
        | NotFound
        | ResumeError
        | _Cancelled
        | ValueError
        | TypeError
        | KeyError
        | AttributeError,
    ):
        return False
    status = _status_of(exc)
    return not (status is not None and status in _NON_TRANSIENT_STATUS)


def _retry(fn: Callable[[], Any], what: str, attempts: int, cancelled: threading.Event | None = None) -> Any:
    delay = 0.25
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc) or (cancelled is not None and cancelled.is_set()):
                raise
            log.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.1fs", what, attempt, attempts, exc, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def identical(src_store: Store, s: ObjectInfo, dst_store: Store, d: ObjectInfo, deep: bool = False) -> bool:
    """Whether destination object `d` holds the same bytes as source object `s`.

    Compares sizes, then any checksum both sides know (server-computed or engine-recorded),
    fetching full metadata or hashing file:// content when listing gave too little. `deep=True`
    reads and hashes the destination's bytes whatever the metadata says (bit-rot check)."""
    if s.size != d.size:
        return False
    if deep:
        md5, crc = dst_store.compute_checksums(d.key)
        d = ObjectInfo(d.key, d.size, md5=md5, crc32c=crc)
        s_sums = _full_checksums(src_store, s)
        return _compare(s_sums, {"md5": md5, "crc32c": crc}) is True
    for refresh in (False, True):
        if refresh:
            if not d.metadata_loaded:
                d = dst_store.head(d.key) or d
            if not s.metadata_loaded:
                s = src_store.head(s.key) or s
            if s.size != d.size:
                return False
        if d.metadata_loaded and not d.self_consistent():
            return False
        verdict = _compare(s.checksums(), d.checksums())
        if verdict is not None:
            return verdict
        if d.metadata_loaded and s.etag and d.metadata.get(META_SRC_ETAG) == s.etag:
            return True
    # Nothing in common yet: hash local files (cheap) and compare again.
    s_sums = s.checksums()
    d_sums = d.checksums()
    if isinstance(src_store, FileStore) and not s_sums:
        md5, crc = src_store.compute_checksums(s.key)
        s_sums = {"md5": md5, "crc32c": crc}
    if isinstance(dst_store, FileStore):
        md5, crc = dst_store.compute_checksums(d.key)
        if d_sums and _compare(d_sums, {"md5": md5, "crc32c": crc}) is False:
            return False
        d_sums = {"md5": md5, "crc32c": crc}
    return _compare(s_sums, d_sums) is True


def _full_checksums(store: Store, info: ObjectInfo) -> dict[str, object]:
    sums = info.checksums()
    if not sums and not info.metadata_loaded:
        fresh = store.head(info.key)
        sums = fresh.checksums() if fresh else {}
    if not sums:
        md5, crc = store.compute_checksums(info.key)
        sums = {"md5": md5, "crc32c": crc}
    return sums


def _compare(a: Mapping[str, object], b: Mapping[str, object]) -> bool | None:
    common = set(a) & set(b)
    if not common:
        return None
    return all(a[k] == b[k] for k in common)


def _region_of(store: Store) -> str | None:
    try:
        return store.region()
    except Exception as exc:
        log.debug("region lookup for %s failed: %s", store.uri(), exc)
        return None


# --------------------------------------------------------------------------- the engine


@dataclass
class _Item:
    rel: str
    src: ObjectInfo
    dst_key: str


class _Progress:
    def __init__(self, files_total: int, bytes_total: int, skipped: int, callback, interval: float):
        self.lock = threading.Lock()
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.skipped = skipped
        self.files_done = 0
        self.files_failed = 0
        self.bytes_done = 0
        self.start = time.monotonic()
        self.callback = callback
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes_done += n

    def file_done(self, failed: bool = False) -> None:
        with self.lock:
            if failed:
                self.files_failed += 1
            else:
                self.files_done += 1

    def snapshot(self) -> TransferProgress:
        with self.lock:
            elapsed = time.monotonic() - self.start
            rate = self.bytes_done / elapsed if elapsed > 0 else 0.0
            remaining = max(0, self.bytes_total - self.bytes_done)
            eta = remaining / rate if rate > 0 else None
            return TransferProgress(
                self.bytes_done,
                self.bytes_total,
                self.files_done,
                self.files_total,
                self.skipped,
                self.files_failed,
                elapsed,
                rate,
                eta,
            )

    def emit(self) -> None:
        snap = self.snapshot()
        log.info("transfer progress: %s", snap)
        if self.callback is not None:
            try:
                self.callback(snap)
            except Exception:
                log.exception("progress callback failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()

    def __enter__(self) -> _Progress:
        self._thread = threading.Thread(target=self._run, name="sky-transfer-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.emit()


class _LargeCopy:
    """State of one object copied in parts."""

    def __init__(self, item: _Item, upload: MultipartUpload, nparts: int):
        self.item = item
        self.upload = upload
        self.nparts = nparts
        self.parts: dict[int, PartResult] = {}
        self.lock = threading.Lock()
        self.failed: BaseException | None = None
        self.settled = threading.Event()  # set once the job is finished (done or given up)
        self.part_size = 0
        self.per_stripe = max(1, nparts)
        self.resumed: set[int] = set()  # parts an earlier run uploaded
        self.checkpoint_key: str | None = None  # where the resume state is kept, when resumable
        self.checkpoint_lock = threading.Lock()
        self.checkpoint_pending = False
        self.checkpoint_written = False  # a resume state exists at checkpoint_key
        self.checkpoint_due = 0.0  # monotonic time before which no resume state is written

    @property
    def finished(self) -> bool:
        return self.settled.is_set()

    @finished.setter
    def finished(self, value: bool) -> None:
        if value:
            self.settled.set()
        else:
            self.settled.clear()


class _Cancelled(StorageError):
    """A stripe stopped because its object already failed or the transfer was cancelled."""


class TransferEngine:
    """One prefix (or single object) copy from `src` to `dst`; see `transfer()` for the options."""

    def __init__(
        self,
        src: Store,
        src_key: str,
        dst: Store,
        dst_key: str,
        *,
        workers: int = 16,
        part_size: int = 16 * MiB,
        multipart_threshold: int = 64 * MiB,
        memory_budget: int = 512 * MiB,
        server_side: bool = True,
        skip_identical: bool = True,
        delete_extraneous: bool = False,
        progress: Callable[[TransferProgress], None] | None = None,
        progress_interval: float = 2.0,
        egress_price_per_gb: EgressPriceFn | None = None,
        throughput_hint: float = 100e6,
        max_cost_usd: float | None = None,
        dry_run: bool = False,
        retries: int = 6,
        streams: int | None = None,
        resume: bool = True,
        checkpoint_interval: float = 2.0,
        read_ahead: int = 1,
    ):
        self.src, self.src_key = src, src_key
        self.dst, self.dst_key = dst, dst_key
        self.workers = max(1, workers)
        self.part_size = max(part_size, dst.min_part_size)
        self.multipart_threshold = max(multipart_threshold, self.part_size)
        self.budget = ByteBudget(max(memory_budget, self.part_size))
        self.server_side = server_side and dst.can_server_copy_from(src)
        self.skip_identical = skip_identical
        self.delete_extraneous = delete_extraneous
        self.progress_cb = progress
        self.progress_interval = progress_interval
        self.egress_price_per_gb = egress_price_per_gb
        self.throughput_hint = throughput_hint
        self.max_cost_usd = max_cost_usd
        self.dry_run = dry_run
        self.retries = max(1, retries)
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self.report = TransferReport(src.uri(src_key), dst.uri(dst_key), server_side=self.server_side)
        self._strong = 0
        self._inflight = threading.BoundedSemaphore(self.workers * 4)
        # Concurrent streamed reads of large objects (stripes); default half the workers.
        self.streams = max(1, streams if streams is not None else self.workers // 2)
        self._large_count = 0
        # Large objects continue an interrupted earlier run's multipart upload (see _resume_large).
        self.resume = resume
        self.checkpoint_interval = checkpoint_interval
        # Parts each stream reads ahead of the one it is uploading (0: read, then upload).
        self.read_ahead = max(0, int(read_ahead))
        self._checkpoints: ThreadPoolExecutor | None = None
        self._closing = threading.Event()  # run() is winding down: pending checkpoints go now

    # ---- planning
    def _resolve(self) -> tuple[str, str, ObjectInfo | None]:
        """(source prefix, destination prefix, single source object or None)."""
        key = self.src_key
        if key and not key.endswith("/"):
            single = _retry(lambda: self.src.head(key), f"head {self.src.uri(key)}", self.retries)
            if single is not None:
                if not self.dst_key or self.dst_key.endswith("/"):
                    dst_key = self.dst_key + posixpath.basename(key)
                else:
                    dst_key = self.dst_key
                return key, dst_key, single
            key += "/"
        dst_prefix = self.dst_key
        if dst_prefix and not dst_prefix.endswith("/"):
            dst_prefix += "/"
        return key, dst_prefix, None

    def _list(self, store: Store, prefix: str) -> dict[str, ObjectInfo]:
        def run() -> dict[str, ObjectInfo]:
            try:
                return {o.key[len(prefix) :]: o for o in store.list(prefix) if not o.key.endswith("/")}
            except NotFound:
                return {}

        return _retry(run, f"list {store.uri(prefix)}", self.retries)

    def plan(self, pool: ThreadPoolExecutor) -> tuple[list[_Item], dict[str, ObjectInfo], set[str]]:
        src_prefix, dst_prefix, single = self._resolve()
        if single is not None:
            d = _retry(lambda: self.dst.head(dst_prefix), "head destination", self.retries)
            src_objs = {"": single}
            dst_objs = {"": d} if d is not None else {}
            keys = {"": dst_prefix}
        else:
            f_src = pool.submit(self._list, self.src, src_prefix)
            f_dst = pool.submit(self._list, self.dst, dst_prefix)
            src_objs, dst_objs = f_src.result(), f_dst.result()
            keys = {rel: dst_prefix + rel for rel in src_objs}
        candidates = [rel for rel in src_objs if rel in dst_objs] if self.skip_identical else []
        same: dict[str, bool] = {}
        if candidates:
            futures = {
                rel: pool.submit(
                    _retry,
                    lambda rel=rel: identical(self.src, src_objs[rel], self.dst, dst_objs[rel]),
                    f"compare {rel}",
                    self.retries,
                )
                for rel in candidates
            }
            same = {rel: f.result() for rel, f in futures.items()}
        items = [_Item(rel, src_objs[rel], keys[rel]) for rel in src_objs if not same.get(rel)]
        skipped = {rel for rel, ok in same.items() if ok}
        extraneous = {rel for rel in dst_objs if rel not in src_objs}
        for rel in skipped:
            self.report.files_skipped += 1
            self.report.bytes_skipped += src_objs[rel].size
        return items, {rel: dst_objs[rel] for rel in extraneous}, skipped

    def estimate(self, items: list[_Item]) -> TransferEstimate:
        nbytes = sum(i.src.size for i in items)
        src_region = _region_of(self.src)
        dst_region = _region_of(self.dst)
        price = None
        if self.egress_price_per_gb is not None:
            try:
                price = self.egress_price_per_gb(
                    CLOUD_OF_SCHEME.get(self.src.scheme, self.src.scheme),
                    src_region,
                    CLOUD_OF_SCHEME.get(self.dst.scheme, self.dst.scheme),
                    dst_region,
                )
            except Exception as exc:
                log.warning("egress price lookup failed: %s", exc)
        seconds = nbytes / self.throughput_hint + len(items) * 0.02 / self.workers
        return TransferEstimate(
            files=len(items),
            bytes=nbytes,
            files_skipped=self.report.files_skipped,
            bytes_skipped=self.report.bytes_skipped,
            seconds=seconds,
            cost_usd=None if price is None else nbytes / 1e9 * price,
            price_per_gb=price,
            server_side=self.server_side,
            src_region=src_region,
            dst_region=dst_region,
        )

    # ---- per-object work
    def _meta(self, item: _Item, md5_hex: str | None, crc: int | None) -> dict[str, str]:
        meta: dict[str, str] = {}
        if md5_hex:
            meta[META_MD5] = md5_hex
        if crc is not None:
            meta[META_CRC32C] = crc32c_to_b64(crc)
        if item.src.etag:
            meta[META_SRC_ETAG] = item.src.etag
        return meta

    def _check_source(self, item: _Item, size: int, md5_hex: str | None, crc: int) -> None:
        if size != item.src.size:
            raise IntegrityError(f"{self.src.uri(item.src.key)}: read {size} bytes, listed {item.src.size}")
        got: dict[str, object] = {"crc32c": crc}
        if md5_hex:
            got["md5"] = md5_hex
        if _compare(item.src.checksums(), got) is False:
            raise IntegrityError(
                f"{self.src.uri(item.src.key)}: bytes read do not match the source's checksums "
                f"{item.src.checksums()} (got {got})"
            )

    def _check_dest(
        self,
        item: _Item,
        info: ObjectInfo,
        size: int,
        md5_hex: str | None,
        crc: int,
        part_md5s: list[bytes] | None = None,
        parts_validated: bool = False,
    ) -> bool:
        """Raise IntegrityError on any disagreement; return whether a checksum (not only size) matched."""
        where = self.dst.uri(item.dst_key)
        if info.size != size:
            raise IntegrityError(f"{where}: destination reports {info.size} bytes, sent {size}")
        strong = parts_validated
        if info.md5 and md5_hex:
            if info.md5.lower() != md5_hex:
                raise IntegrityError(f"{where}: destination MD5 {info.md5} != {md5_hex}")
            strong = True
        if info.crc32c is not None:
            if info.crc32c != crc:
                raise IntegrityError(f"{where}: destination CRC32C {info.crc32c:#x} != {crc:#x}")
            strong = True
        if part_md5s and info.etag and info.etag.endswith(f"-{len(part_md5s)}"):
            if info.etag != multipart_etag(part_md5s):
                raise IntegrityError(f"{where}: multipart ETag {info.etag} != {multipart_etag(part_md5s)}")
            strong = True
        if isinstance(self.dst, FileStore):
            got_md5, got_crc = self.dst.compute_checksums(item.dst_key)
            if got_crc != crc or (md5_hex and got_md5 != md5_hex):
                raise IntegrityError(f"{where}: bytes on disk differ from the bytes written")
            strong = True
        return strong

    def _succeeded(self, item: _Item, strong: bool) -> None:
        with self._lock:
            self.report.files_copied += 1
            self.report.bytes_copied += item.src.size
            if strong:
                self._strong += 1
            else:
                self.report.files_size_only += 1
        self.progress.file_done()

    def _failed(self, item: _Item, exc: BaseException) -> None:
        log.error("copy of %s failed: %s", self.src.uri(item.src.key), exc)
        with self._lock:
            self.report.files_failed += 1
            self.report.failures.append((item.rel, f"{type(exc).__name__}: {exc}"))
        self.progress.file_done(failed=True)

    def _copy_small(self, item: _Item, reserved: int) -> None:
        try:
            for attempt in range(1, 3):
                try:
                    data = _retry(
                        lambda: self.src.read(item.src.key),
                        f"read {item.src.key}",
                        self.retries,
                        self.cancelled,
                    )
                    md5 = hashlib.md5(data).digest()
                    crc = crc32c_value(data)
                    self._check_source(item, len(data), md5.hex(), crc)
                    info = _retry(
                        lambda data=data, md5=md5, crc=crc: self.dst.write(
                            item.dst_key, data, metadata=self._meta(item, md5.hex(), crc), md5=md5, crc32c=crc
                        ),
                        f"write {item.dst_key}",
                        self.retries,
                        self.cancelled,
                    )
                    strong = self._check_dest(item, info, len(data), md5.hex(), crc)
                    data = b""
                    self.progress.add_bytes(item.src.size)
                    self._succeeded(item, strong)
                    return
                except IntegrityError as exc:
                    if attempt == 2:
                        raise
                    log.warning("%s; copying %s again", exc, item.rel)
        except Exception as exc:
            self._failed(item, exc)
        finally:
            self.budget.release(reserved)
            self._inflight.release()

    def _copy_server_side(self, item: _Item) -> None:
        try:
            meta = None
            src = item.src
            extra: dict[str, Any] = {}
            if not src.checksums():
                full = self.src.head(src.key) or src
                meta = {**full.metadata, META_SRC_ETAG: src.etag or ""}
                src = full
                # An S3 object the engine uploaded in parts: copy with the same part boundaries,
                # so S3 recomputes the same multipart ETag from the copied bytes.
                if (
                    self.dst.scheme == "s3"
                    and src.etag
                    and "-" in src.etag
                    and src.metadata.get(META_PART_SIZE)
                ):
                    extra = {"part_size": int(src.metadata[META_PART_SIZE]), "size": src.size}
            info = _retry(
                lambda: self.dst.copy_from(self.src, src.key, item.dst_key, metadata=meta, **extra),
                f"server-side copy {item.rel}",
                self.retries,
                self.cancelled,
            )
            if info.size != src.size:
                raise IntegrityError(
                    f"{self.dst.uri(item.dst_key)}: {info.size} bytes after copy, source {src.size}"
                )
            verdict = _compare(src.checksums(), info.checksums())
            if extra:
                if info.etag != src.etag:
                    raise IntegrityError(
                        f"{self.dst.uri(item.dst_key)}: multipart copy ETag {info.etag} != source {src.etag}"
                    )
                verdict = True
            if verdict is None and isinstance(self.dst, FileStore):
                verdict = _compare(_full_checksums(self.src, src), _full_checksums(self.dst, info))
            if verdict is False:
                raise IntegrityError(f"{self.dst.uri(item.dst_key)}: checksums differ after server-side copy")
            self.progress.add_bytes(src.size)
            self._succeeded(item, verdict is True)
        except Exception as exc:
            self._failed(item, exc)
        finally:
            self._inflight.release()

    # ---- large objects: parts in pooled buffers, resumable
    def _checkpoint_key(self, item: _Item) -> str:
        digest = hashlib.sha256(self.dst.uri(item.dst_key).encode()).hexdigest()[:40]
        return f"{RESUME_PREFIX}{digest}.json"

    def _resume_id(self, item: _Item, part_size: int) -> str:
        ident = f"{self.src.uri(item.src.key)}|{item.src.etag}|{item.src.size}|{part_size}|{item.dst_key}"
        return hashlib.sha256(ident.encode()).hexdigest()[:16]

    def _write_checkpoint(self, job: _LargeCopy) -> None:
        """Persist which parts of `job` are durably uploaded (with their checksums, which the
        final verification needs), so a later run can continue the upload."""
        if job.checkpoint_key is None:
            return
        with job.checkpoint_lock:
            if job.checkpoint_key is None:
                return
            item = job.item
            # The upload's state first: the engine records a part right after the store
            # acknowledges it, so the parts this state counts are (nearly always) in `parts`;
            # a stripe whose parts are not all recorded is sent again on resume.
            backend = job.upload.resume_state()
            with job.lock:
                parts = {str(n): [p.size, p.md5.hex(), p.crc32c] for n, p in sorted(job.parts.items())}
            state = {
                "v": 1,
                "src": self.src.uri(item.src.key),
                "etag": item.src.etag,
                "size": item.src.size,
                "dst": self.dst.uri(item.dst_key),
                "part_size": job.part_size,
                "per_stripe": job.per_stripe,
                "backend": backend,
                "parts": parts,
            }
            try:
                self.dst.write(job.checkpoint_key, json.dumps(state).encode())
                job.checkpoint_written = True
            except Exception as exc:  # resuming is an optimisation: never fail a copy for it
                log.warning("cannot record resume state of %s (%s); it will not be resumable", item.rel, exc)
                job.checkpoint_key = None

    def _drop_checkpoint(self, job: _LargeCopy) -> None:
        with job.checkpoint_lock:
            key, job.checkpoint_key = job.checkpoint_key, None
        if key is not None and job.checkpoint_written:
            with contextlib.suppress(Exception):
                self.dst.delete(key)

    def _resume_states_present(self) -> set[str] | None:
        """Keys of the resume states in the destination bucket (one listing), or None when the
        store cannot list them (each object's state is then looked up on its own)."""
        try:
            return {o.key for o in self.dst.list(RESUME_PREFIX, hidden=True)}
        except NotFound:
            return set()
        except Exception as exc:
            log.debug("cannot list resume states (%s): looking each one up", exc)
            return None

    def _resume_large(self, item: _Item) -> _LargeCopy | None:  # see the module docstring
        """The job of an earlier, interrupted copy of `item` (same source version), with the parts
        the destination confirms; None (after discarding a stale upload) otherwise."""
        key = self._checkpoint_key(item)
        try:
            state = json.loads(self.dst.read(key))
        except NotFound:
            return None
        except Exception as exc:
            log.debug("no usable resume state for %s: %s", item.rel, exc)
            return None
        try:
            part_size, per_stripe = int(state["part_size"]), int(state["per_stripe"])
            recorded = {
                int(n): PartResult(int(n), int(v[0]), bytes.fromhex(v[1]), int(v[2]))
                for n, v in state["parts"].items()
            }
            same = (
                state.get("v") == 1
                and state["src"] == self.src.uri(item.src.key)
                and state["etag"] == item.src.etag
                and int(state["size"]) == item.src.size
                and state["dst"] == self.dst.uri(item.dst_key)
                and part_size > 0
                and per_stripe > 0
            )
            upload = self.dst.resume_multipart(item.dst_key, state["backend"], recorded if same else {})
        except Exception as exc:
            log.warning("cannot resume the copy of %s (%s): starting over", item.rel, exc)
            upload, same = None, False
        if upload is not None and not same:
            log.info("earlier partial copy of %s is of another source version: discarded", item.rel)
            upload.abort()
            upload = None
        if upload is None:
            with contextlib.suppress(Exception):
                self.dst.delete(key)
            return None
        nparts = -(-item.src.size // part_size)
        job = _LargeCopy(item, upload, nparts)
        job.part_size, job.per_stripe, job.checkpoint_key = part_size, per_stripe, key
        job.checkpoint_written = True
        for number, part in recorded.items():
            token = upload.tokens.get(number)
            expected = min(part_size, item.src.size - (number - 1) * part_size)
            if token is not None and 1 <= number <= nparts and part.size == expected:
                part.token = token
                job.parts[number] = part
        job.resumed = set(job.parts)
        nbytes = sum(p.size for p in job.parts.values())
        with self._lock:
            self.report.bytes_resumed += nbytes
        log.info(
            "resuming the copy of %s: %d of %d parts (%.1f MiB) already at the destination",
            item.rel,
            len(job.parts),
            nparts,
            nbytes / MiB,
        )
        return job

    def _part_done(self, job: _LargeCopy, part: PartResult) -> None:
        with job.lock:
            if part.number in job.parts:
                return
            job.parts[part.number] = part
            schedule = job.checkpoint_key is not None and not job.checkpoint_pending
            job.checkpoint_pending = job.checkpoint_pending or schedule
        self.progress.add_bytes(part.size)
        if schedule and self._checkpoints is not None:  # in the background, coalescing parts
            self._checkpoints.submit(self._flush_checkpoint, job)

    def _flush_checkpoint(self, job: _LargeCopy) -> None:
        """Write `job`'s resume state, at most once per `checkpoint_interval` (and not before the
        job has run that long: a copy that quick is cheaper to redo than to checkpoint)."""
        delay = job.checkpoint_due - time.monotonic()
        if delay > 0:
            # Woken early when the job settles (a finished copy needs no checkpoint) or the
            # engine winds down, so neither waits out the interval.
            deadline = time.monotonic() + delay
            while not (job.settled.is_set() or self.cancelled.is_set() or self._closing.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                job.settled.wait(min(left, 0.05))
        with job.lock:
            job.checkpoint_pending = False
            if job.finished and job.failed is None:  # completed (or completing): nothing to resume
                return
        job.checkpoint_due = time.monotonic() + self.checkpoint_interval
        self._write_checkpoint(job)

    def _copy_stripe(self, job: _LargeCopy, stripe: int, nstripes: int, first: int, last: int) -> None:
        """Copy parts first..last-1 (0-based) of a large object: one streamed ranged read of the
        source from the first part not yet uploaded, each part read into a pooled buffer, hashed
        once (MD5 + CRC32C) and handed to the destination's `upload_stream` (parts / blocks / a
        resumable upload), with up to `read_ahead` parts read while one is uploaded. A retry
        continues after the parts already uploaded."""
        item = job.item
        size, part_size = item.src.size, job.part_size
        stripe_start, stripe_end = first * part_size, min(size, last * part_size)
        want_md5 = getattr(job.upload, "stream_needs_md5", True)

        def attempt() -> None:
            with job.lock:
                # Parts the destination lost since (a GCS session gone) are sent again.
                lost = [
                    i for i in range(first, last) if i + 1 in job.parts and i + 1 not in job.upload.tokens
                ]
                for i in lost:
                    size_lost = job.parts.pop(i + 1).size
                    self.progress.add_bytes(-size_lost)
                    if i + 1 in job.resumed:
                        job.resumed.discard(i + 1)
                        with self._lock:
                            self.report.bytes_resumed -= size_lost
                begin = next((i for i in range(first, last) if i + 1 not in job.parts), last)
            if begin == last:
                return
            start = begin * part_size
            stream = self.src.open_range(item.src.key, start, stripe_end)
            yielded: list[PartResult] = []
            unacked: list[PartResult] = []

            def chunks():
                # A reader thread fills pooled buffers ahead of the upload (`read_ahead` parts
                # beyond the one being uploaded), so reading and hashing part N+1 overlaps the
                # upload of part N; `slots` bounds the parts this stream holds.
                slots = threading.Semaphore(1 + self.read_ahead)
                ready: queue.SimpleQueue = queue.SimpleQueue()
                stop = threading.Event()

                def reader() -> None:
                    try:
                        for index in range(begin, last):
                            while not slots.acquire(timeout=0.2):
                                if stop.is_set():
                                    return
                            if stop.is_set() or job.failed is not None or self.cancelled.is_set():
                                slots.release()
                                if stop.is_set():
                                    return
                                raise _Cancelled(f"copy of {item.rel} cancelled")
                            offset = index * part_size
                            length = min(part_size, size - offset)
                            buf = self.budget.take_buffer(part_size)
                            if stop.is_set():  # the upload side gave up while this waited
                                self.budget.give_buffer(buf)
                                return
                            try:
                                view = memoryview(buf)[:length]
                                got = readinto_full(stream, view)
                                if got != length:
                                    raise IntegrityError(
                                        f"{self.src.uri(item.src.key)} part {index + 1}: "
                                        f"read {got} of {length} bytes"
                                    )
                                md5 = hashlib.md5(view).digest() if want_md5 else b""
                                part = PartResult(index + 1, length, md5, crc32c_value(view))
                                del view
                            except BaseException:
                                self.budget.give_buffer(buf)
                                slots.release()
                                raise
                            ready.put((part, offset, buf))
                    except BaseException as exc:  # handed to the uploading side
                        ready.put(exc)

                def drain() -> None:
                    while True:
                        try:
                            left = ready.get_nowait()
                        except queue.Empty:
                            return
                        if not isinstance(left, BaseException):
                            self.budget.give_buffer(left[2])

                thread = threading.Thread(target=reader, name="sky-transfer-read", daemon=True)
                thread.start()
                try:
                    for _ in range(begin, last):
                        if job.failed is not None or self.cancelled.is_set():
                            raise _Cancelled(f"copy of {item.rel} cancelled")
                        got = ready.get()
                        if isinstance(got, BaseException):
                            raise got
                        part, offset, buf = got
                        try:
                            view = memoryview(buf)[: part.size]
                            yielded.append(part)
                            unacked.append(part)
                            yield part.number, offset, view, part.md5
                            del view
                            # Asked for the next part: the parts the upload has acknowledged so
                            # far are durable (one PUT may carry several parts: GCS).
                            tokens = job.upload.tokens
                            for done in [p for p in unacked if p.number in tokens]:
                                self._part_done(job, done)
                                unacked.remove(done)
                        finally:
                            self.budget.give_buffer(buf)
                            slots.release()
                finally:
                    # Parts read ahead that this attempt will not upload go back before waiting
                    # for the reader (which may need room for its buffer), and after.
                    stop.set()
                    drain()
                    thread.join()
                    drain()

            parts = chunks()
            try:
                job.upload.upload_stream(
                    stripe, nstripes, stripe_end - stripe_start, parts, start=stripe_start
                )
                for part in yielded:
                    self._part_done(job, part)
            finally:
                # Close the generator now (returning its buffer) rather than when the traceback
                # of a failed attempt lets go of it: a retry may need that buffer.
                parts.close()
                with contextlib.suppress(Exception):
                    stream.close()

        try:
            if job.failed is not None or self.cancelled.is_set():
                return
            _retry(attempt, f"copy {item.rel} stripe {stripe + 1}/{nstripes}", self.retries, self.cancelled)
            with job.lock:
                done = len(job.parts) == job.nparts and job.failed is None and not job.finished
                if done:
                    job.finished = True
            if done:
                self._finish_large(job)
        except Exception as exc:
            with job.lock:
                first_failure = job.failed is None and not job.finished
                if first_failure:
                    job.failed = exc
                    job.finished = True
            if first_failure:
                self._give_up_large(job, exc)
                self._failed(item, exc)

    def _give_up_large(self, job: _LargeCopy, exc: BaseException) -> None:
        """After a failure: keep the uploaded parts for the next run when the upload is resumable
        (and was not already a resumed one failing again), else discard them."""
        keep = (
            job.checkpoint_key is not None
            and not isinstance(exc, IntegrityError)
            and (not job.resumed or isinstance(exc, _Cancelled) or is_transient(exc))
        )
        if keep:
            self._write_checkpoint(job)
            log.info("partial copy of %s kept: a rerun continues it", job.item.rel)
        else:
            job.upload.abort()
            self._drop_checkpoint(job)

    def _finish_large(self, job: _LargeCopy) -> None:
        item = job.item
        parts = [job.parts[n] for n in sorted(job.parts)]
        for p in parts:
            p.token = p.token or job.upload.tokens.get(p.number)
        crc = parts[0].crc32c
        for p in parts[1:]:
            crc = crc32c_combine(crc, p.crc32c, p.size)
        size = sum(p.size for p in parts)
        try:
            self._check_source(item, size, None, crc)
            meta = {**self._meta(item, None, crc), META_PART_SIZE: str(parts[0].size)}
            info = _retry(
                lambda: job.upload.complete(parts, metadata=meta),
                f"complete {item.rel}",
                self.retries,
                self.cancelled,
            )
            try:
                strong = self._check_dest(
                    item,
                    info,
                    size,
                    None,
                    crc,
                    part_md5s=[p.md5 for p in parts] if all(p.md5 for p in parts) else None,
                    parts_validated=self.dst.scheme == "az",
                )
            except IntegrityError:
                self.dst.delete(item.dst_key)
                raise
            self._drop_checkpoint(job)
            self._succeeded(item, strong)
        except Exception as exc:
            job.upload.abort()
            self._drop_checkpoint(job)
            self._failed(item, exc)

    def _stripes_for(self, nparts: int) -> int:
        """Stripes (parallel streamed reads) for one large object: enough that all large objects
        together keep about `streams` reads going, and one when there are that many objects
        (a single GET per object is what the servers serve best)."""
        per_object = -(-self.streams // max(1, self._large_count))
        return max(1, min(nparts, per_object))

    def _start_large(
        self, pool: ThreadPoolExecutor, item: _Item, futures: list[Future], job: _LargeCopy | None = None
    ) -> None:
        """Start (or, with the `job` `_resume_large` found, continue) the copy of a large object."""
        size = item.src.size
        if job is None:
            part_size = max(self.part_size, -(-size // self.dst.max_parts))
            nparts = -(-size // part_size)
            try:
                # S3 takes metadata only when the upload starts: record the source's identity there.
                start_meta = {**self._meta(item, None, None), META_PART_SIZE: str(part_size)}
                if self.resume and item.src.etag:
                    resume_id = self._resume_id(item, part_size)
                    begin = lambda: self.dst.begin_resumable(item.dst_key, resume_id, metadata=start_meta)  # noqa: E731
                else:
                    begin = lambda: self.dst.begin_multipart(item.dst_key, metadata=start_meta)  # noqa: E731
                upload = _retry(begin, f"start upload {item.rel}", self.retries, self.cancelled)
            except Exception as exc:
                self._failed(item, exc)
                return
            job = _LargeCopy(item, upload, nparts)
            job.part_size = part_size
            job.per_stripe = -(-nparts // self._stripes_for(nparts))
            if self.resume and item.src.etag and upload.resume_state() is not None:
                job.checkpoint_key = self._checkpoint_key(item)
                job.checkpoint_due = time.monotonic() + self.checkpoint_interval
        if job.resumed:
            self.progress.add_bytes(sum(job.parts[n].size for n in job.resumed))
        nstripes = -(-job.nparts // job.per_stripe)
        with job.lock:
            job.finished = len(job.parts) == job.nparts
        if job.finished:  # every part was already uploaded by the interrupted run
            futures.append(pool.submit(self._finish_large, job))
            return
        for stripe in range(nstripes):
            first = stripe * job.per_stripe
            last = min(job.nparts, first + job.per_stripe)
            if all(n + 1 in job.parts for n in range(first, last)):
                continue
            futures.append(pool.submit(self._copy_stripe, job, stripe, nstripes, first, last))

    # ---- the run
    def run(self) -> TransferReport:
        t0 = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sky-transfer")
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sky-transfer-resume")
        try:
            items, extraneous, _skipped = self.plan(pool)
            est = self.estimate(items)
            self.report.estimate = est
            log.info(
                "transfer %s -> %s: %d objects / %.1f MiB to copy, %d identical skipped; estimated %.0fs%s%s",
                self.report.src_uri,
                self.report.dst_uri,
                est.files,
                est.bytes / MiB,
                est.files_skipped,
                est.seconds,
                f", ${est.cost_usd:.4f} egress" if est.cost_usd is not None else "",
                " (server-side)" if self.server_side else "",
            )
            if (
                self.max_cost_usd is not None
                and est.cost_usd is not None
                and est.cost_usd > self.max_cost_usd
            ):
                raise TransferError(
                    f"estimated egress cost ${est.cost_usd:.2f} exceeds max_cost_usd ${self.max_cost_usd:.2f}",
                    self.report,
                )
            if self.dry_run:
                self.report.dry_run = True
                self.report.seconds = time.monotonic() - t0
                return self.report
            self.progress = _Progress(
                len(items) + self.report.files_skipped,
                est.bytes,
                self.report.files_skipped,
                self.progress_cb,
                self.progress_interval,
            )
            futures: list[Future] = []
            large = [
                item
                for item in items
                if not (self.server_side and item.src.size <= self.dst.max_server_copy)
                and item.src.size > self.multipart_threshold
            ]
            self._large_count = len(large)
            # Interrupted earlier copies of large objects, looked up in parallel (one small read each).
            resumable = [item for item in large if self.resume and item.src.etag]
            if len(resumable) > 1:  # one listing instead of one lookup per object
                present = self._resume_states_present()
                if present is not None:
                    resumable = [item for item in resumable if self._checkpoint_key(item) in present]
            resumed = dict(zip(map(id, resumable), pool.map(self._resume_large, resumable), strict=True))
            with self.progress:
                try:
                    for item in items:
                        if self.server_side and item.src.size <= self.dst.max_server_copy:
                            self._inflight.acquire()
                            futures.append(pool.submit(self._copy_server_side, item))
                        elif item.src.size <= self.multipart_threshold:
                            self._inflight.acquire()
                            reserved = self.budget.acquire(item.src.size)
                            futures.append(pool.submit(self._copy_small, item, reserved))
                        else:
                            self._start_large(pool, item, futures, resumed.pop(id(item), None))
                        if len(futures) > 4096:
                            futures = [f for f in futures if not f.done()]
                    wait(futures)
                except BaseException:
                    self.cancelled.set()
                    raise
            if self.delete_extraneous and extraneous:
                if self.report.files_failed:
                    log.warning("not deleting extraneous objects: %d copies failed", self.report.files_failed)
                else:
                    for rel, info in extraneous.items():
                        _retry(lambda info=info: self.dst.delete(info.key), f"delete {rel}", self.retries)
                        self.report.files_deleted += 1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._closing.set()
            self._checkpoints.shutdown(wait=True)
            self.budget.drop_idle()
        r = self.report
        r.seconds = time.monotonic() - t0
        r.verified = r.files_failed == 0 and r.files_size_only == 0
        if est.price_per_gb is not None:
            r.cost_usd = 0.0 if self.server_side else r.bytes_copied / 1e9 * est.price_per_gb
        log.info("transfer done: %s (peak buffered %.1f MiB)", r.summary(), self.budget.peak / MiB)
        if r.files_failed:
            raise TransferError(
                f"{r.files_failed} object(s) failed to copy/verify, e.g. {r.failures[0][0]}: {r.failures[0][1]}",
                r,
            )
        return r


def transfer(
    src_uri: str,
    dst_uri: str,
    *,
    src_store: Store | None = None,
    dst_store: Store | None = None,
    src_options: Mapping[str, Any] | None = None,
    dst_options: Mapping[str, Any] | None = None,
    **engine_options: Any,
) -> TransferReport:
    """Copy the object or prefix `src_uri` to `dst_uri`, verified and incremental.

    Stores come from `src_store` / `dst_store` when given (their bucket must match the URI), else
    are built from the URI with `src_options` / `dst_options` (credentials, endpoint; see
    `store_for_uri`). Engine options: workers (16), part_size (16 MiB), multipart_threshold
    (64 MiB), memory_budget (512 MiB), server_side (True), skip_identical (True),
    delete_extraneous (False), progress (callback taking TransferProgress), progress_interval (s),
    egress_price_per_gb (callable (src_cloud, src_region, dst_cloud, dst_region) -> USD/GB),
    throughput_hint (bytes/s for the time estimate), max_cost_usd, dry_run, retries, resume (True:
    a large object whose copy was interrupted continues from the parts already uploaded, see
    `_resume_large`), checkpoint_interval (2 s: how often that resume state is recorded),
    read_ahead (1: parts each stream reads ahead of the one it uploads; 0 reads, then uploads).

    A source URI ending in '/' (or naming no single object) is a prefix: every object under it is
    copied to the same relative key under the destination prefix. Raises TransferError (with
    `.report`) when any object fails to copy or verify."""
    src_loc, dst_loc = parse_uri(src_uri), parse_uri(dst_uri)
    owned: list[Store] = []
    if src_store is None:
        src_store = store_for(src_loc, **dict(src_options or {}))
        owned.append(src_store)
    if dst_store is None:
        dst_store = store_for(dst_loc, **dict(dst_options or {}))
        owned.append(dst_store)
    try:
        return TransferEngine(src_store, src_loc.key, dst_store, dst_loc.key, **engine_options).run()
    finally:
        for store in owned:
            with contextlib.suppress(Exception):
                store.close()


def estimate_transfer(src_uri: str, dst_uri: str, **kwargs: Any) -> TransferEstimate:
    """List both sides and estimate what `transfer` would copy, its egress cost and duration."""
    report = transfer(src_uri, dst_uri, dry_run=True, **kwargs)
    assert report.estimate is not None
    return report.estimate


@dataclass
class VerifyReport:
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched


def verify(
    src_uri: str,
    dst_uri: str,
    *,
    src_store: Store | None = None,
    dst_store: Store | None = None,
    src_options: Mapping[str, Any] | None = None,
    dst_options: Mapping[str, Any] | None = None,
    deep: bool = False,
    workers: int = 8,
) -> VerifyReport:
    """Compare a destination prefix with its source. `deep=True` re-reads and hashes every
    destination object (detects bytes changed behind the store's metadata)."""
    src_loc, dst_loc = parse_uri(src_uri), parse_uri(dst_uri)
    src_store = src_store or store_for(src_loc, **dict(src_options or {}))
    dst_store = dst_store or store_for(dst_loc, **dict(dst_options or {}))
    src_prefix = src_loc.key if not src_loc.key or src_loc.key.endswith("/") else src_loc.key + "/"
    dst_prefix = dst_loc.key if not dst_loc.key or dst_loc.key.endswith("/") else dst_loc.key + "/"
    src_objs = {o.key[len(src_prefix) :]: o for o in src_store.list(src_prefix)}
    dst_objs = {o.key[len(dst_prefix) :]: o for o in dst_store.list(dst_prefix)}
    out = VerifyReport()
    out.missing = sorted(rel for rel in src_objs if rel not in dst_objs)
    out.extra = sorted(rel for rel in dst_objs if rel not in src_objs)
    common = [rel for rel in src_objs if rel in dst_objs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = pool.map(
            lambda rel: identical(src_store, src_objs[rel], dst_store, dst_objs[rel], deep=deep), common
        )
        for rel, ok in zip(common, verdicts, strict=True):
            if ok:
                out.matched += 1
            else:
                out.mismatched.append(rel)
    out.mismatched.sort()
    return out


__all__ = [
    "ByteBudget",
    "TransferEngine",
    "TransferError",
    "TransferEstimate",
    "TransferProgress",
    "TransferReport",
    "VerifyReport",
    "estimate_transfer",
    "identical",
    "is_transient",
    "transfer",
    "verify",
]
