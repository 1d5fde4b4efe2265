"""Data sizes between tasks, from SkyPilot-style ``inputs`` / ``outputs``.

``outputs: {path: GB}`` of a task is what each of its downstream tasks reads (SkyPilot's model).
Inputs or outputs on a bucket URI (``s3://``, ``gs://``, ``az://``, ``https://<acct>.blob.core
.windows.net``) are pinned to that cloud, region unknown: reading it from another cloud is billed
as that cloud's internet egress; writing to it from another cloud as the task's egress.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SCHEMES = {"s3": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "azure": "azure"}


def store_cloud(uri: str) -> str | None:
    """The cloud holding ``uri``, or None for a local path or unknown scheme."""
    if "://" not in uri:
        return None
    scheme, rest = uri.split("://", 1)
    if scheme.lower() in _SCHEMES:
        return _SCHEMES[scheme.lower()]
    if scheme.lower() == "https" and ".blob.core.windows.net" in rest.split("/", 1)[0]:
        return "azure"
    return None


def data_items(value: Any) -> list[tuple[str, float]]:
    """``[(uri_or_path, gb)]`` from a dict, list, str, number or objects with path/size attributes."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), _gb(v)) for k, v in value.items()]
    if isinstance(value, str):
        return [(value, 0.0)]
    if isinstance(value, int | float):
        return [("", float(value))]
    if isinstance(value, list | tuple):
        out: list[tuple[str, float]] = []
        for item in value:
            out.extend(data_items(item))
        return out
    path = getattr(value, "path", None) or getattr(value, "uri", None) or ""
    size = getattr(value, "size_gb", None)
    if size is None:
        size = getattr(value, "estimated_size_gb", None)
    return [(str(path), _gb(size))]


def _gb(v: Any) -> float:
    if v is None:
        return 0.0
    try:
        return max(0.0, float(v))
    except (TypeError, ValueError):
        return 0.0
