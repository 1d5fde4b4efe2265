"""Bucket sources in `file_mounts`: fetched once (verified, incremental) and copied onto every node.

COPY mode only: the objects under the bucket URI land at the mount path on each node. The fetch
goes through the transfer engine into a per-cluster cache directory on this machine, so a retry
or the next task on a reused cluster copies only what changed. MOUNT / MOUNT_CACHED need a FUSE
tool on the node and are refused with the fix.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.spec.file_mounts import FileMount, is_bucket_uri

log = logging.getLogger(__name__)

StoreOptions = Callable[[str], Mapping[str, Any]]


def _uri_for_engine(source: str) -> str:
    """Azure blob URLs are accepted by the engine as is; s3:// and gs:// too."""
    return source


def bucket_mounts(mounts: Mapping[str, FileMount]) -> dict[str, FileMount]:
    """The mounts whose source is a bucket URI."""
    return {dst: m for dst, m in mounts.items() if m.source and is_bucket_uri(m.source)}


def fetch_bucket_mounts(
    mounts: Mapping[str, FileMount],
    cache_dir: Path,
    store_options: StoreOptions | None = None,
) -> dict[str, Path]:
    """Fetch each bucket mount into `cache_dir`; returns mount path -> local directory or file."""
    fetched: dict[str, Path] = {}
    for dst, mount in bucket_mounts(mounts).items():
        if (mount.mode or "COPY") != "COPY":
            raise ConfigError(
                f"file_mounts.{dst}: mode {mount.mode} needs a FUSE mount tool on the nodes",
                fix="use mode: COPY (the objects are copied onto every node before the job starts)",
            )
        from airflow_provider_sky.storage import transfer

        source = _uri_for_engine(str(mount.source))
        target = cache_dir / hashlib.sha256(f"{dst}\0{source}".encode()).hexdigest()[:16]
        target.mkdir(parents=True, exist_ok=True)
        prefix = source if source.endswith("/") else source + "/"
        options = dict(store_options(source)) if store_options else {}
        try:
            report = transfer(prefix, target.as_uri() + "/", src_options=options)
        except Exception as exc:
            raise ConfigError(
                f"file_mounts.{dst}: could not fetch {source}: {exc}",
                fix="check the bucket URI and the storage connection (or the SDK credentials)",
            ) from exc
        if report.files_copied + report.files_skipped == 0:
            raise ConfigError(
                f"file_mounts.{dst}: {source} holds no objects",
                fix="point the mount at an existing bucket prefix",
            )
        log.info(
            "file_mounts.%s: %s -> %d objects (%d copied, %d unchanged, %.1f MB)",
            dst,
            source,
            report.files_copied + report.files_skipped,
            report.files_copied,
            report.files_skipped,
            report.bytes_copied / 1e6,
        )
        fetched[dst] = target
    return fetched
