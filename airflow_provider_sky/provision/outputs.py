"""Task outputs: what a job writes under ``$SKY_OUTPUT_DIR/<name>`` on the head node (for an output
named by a bucket URI, ``<name>`` is the URI's last path part) is uploaded
after it succeeds (to the bucket URI the output is named by, or to a staging location next to the
task) and handed on as a URI, so downstream tasks can mount it wherever they run."""

from __future__ import annotations

import logging
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.execution.jobs import node_path

log = logging.getLogger(__name__)

OUTPUT_DIR = "sky_outputs"
OUTPUT_ENV = "SKY_OUTPUT_DIR"

#: name -> (destination URI or local path, store options)
Destination = Callable[[str], tuple[str, Mapping[str, Any]]]


def local_name(name: str) -> str:
    """The directory under $SKY_OUTPUT_DIR for an output: its name, or a bucket URI's last part."""
    return name.rstrip("/").rsplit("/", 1)[-1] if "://" in name else name


def output_env(head: Any) -> dict[str, str]:
    """The job's environment entry pointing at the head node's output directory."""
    return {OUTPUT_ENV: node_path(head, OUTPUT_DIR)}


def _fetch_tree(head: Any, into: Path) -> None:
    """Copy the head node's output directory to `into` (packed on the node, read in chunks)."""
    out_dir = node_path(head, OUTPUT_DIR)
    archive = node_path(head, ".sky/outputs.tar")
    packed = head.run(["tar", "-C", out_dir, "-cf", archive, "."])
    if packed.returncode != 0:
        raise ConfigError(
            f"outputs: nothing to collect in ${OUTPUT_ENV} ({out_dir}): {packed.stderr.strip()[:200]}",
            fix=f"write each declared output under ${OUTPUT_ENV}/<name> on the head node",
        )
    local_tar = into / "outputs.tar"
    with local_tar.open("wb") as f:
        offset = 0
        while chunk := head.read_bytes(archive, offset, 8 << 20):
            f.write(chunk)
            offset += len(chunk)
    with tarfile.open(local_tar) as tar:
        tar.extractall(into / "tree", filter="data")


def collect_outputs(head: Any, names: list[str], destination: Destination) -> dict[str, str]:
    """Upload each declared output; returns name -> where it now lives."""
    if not names:
        return {}
    from airflow_provider_sky.storage import transfer

    uploaded: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sky-outputs-") as tmp:
        _fetch_tree(head, Path(tmp))
        for name in names:
            local = local_name(name)
            source = Path(tmp) / "tree" / local
            if not source.exists():
                raise ConfigError(
                    f"outputs.{name}: the job wrote nothing at ${OUTPUT_ENV}/{local}",
                    fix=f"write the output to \"${OUTPUT_ENV}/{local}\" (a file or a directory) in `run`",
                )
            dest, options = destination(name)
            if "://" not in dest:  # a local path: the local backend's staging area
                Path(dest).mkdir(parents=True, exist_ok=True)
                dest_uri = Path(dest).resolve().as_uri() + "/"
            else:
                dest_uri = dest.rstrip("/") + "/"
            src_uri = source.resolve().as_uri() + ("/" if source.is_dir() else "")
            report = transfer(src_uri, dest_uri if source.is_dir() else dest_uri + source.name, dst_options=options)
            log.info("outputs.%s -> %s (%d objects, %.1f MB)", name, dest, report.files_copied + report.files_skipped,
                     (report.bytes_copied + report.bytes_skipped) / 1e6)  # fmt: skip
            uploaded[name] = dest if "://" not in dest else dest_uri
    return uploaded
