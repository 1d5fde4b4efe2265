"""`file_mounts`, `inputs` and `outputs`: what to copy or mount onto the nodes, and the data a task moves."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.spec.coerce import as_bool, as_number, as_str, check_keys, expect_mapping, type_name
from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path

MODES: tuple[str, ...] = ("COPY", "MOUNT", "MOUNT_CACHED")
STORES: tuple[str, ...] = ("s3", "gcs", "azure")
BUCKET_SCHEMES: tuple[str, ...] = ("s3", "gs")
_AZURE_BLOB_RE = re.compile(r"https://[a-z0-9]+\.blob\.core\.windows\.net/.+")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URI_FIX = "use s3://bucket/path, gs://bucket/path, https://<account>.blob.core.windows.net/<container>, or a local path"
_LIKELY_SCHEMES = {
    "gcs": "gs",
    "gcp": "gs",
    "google": "gs",
    "s3a": "s3",
    "s3n": "s3",
    "aws": "s3",
    "ss3": "s3",
}
_MOUNT_KEYS = ("source", "mode", "store", "name", "persistent", "read_only")
MOUNT_MODES: tuple[str, ...] = ("MOUNT", "MOUNT_CACHED")


def is_bucket_uri(text: str) -> bool:
    """True for s3://, gs:// and Azure blob URLs."""
    match = _SCHEME_RE.match(text)
    return bool(match and match[1].lower() in BUCKET_SCHEMES) or bool(_AZURE_BLOB_RE.match(text))


def check_source(raw: Any, path: str) -> str:
    """A local path or a supported bucket URI."""
    source = as_str(raw, path, what="a local path or bucket URI").strip()
    match = _SCHEME_RE.match(source)
    if match and not is_bucket_uri(source):
        scheme = match[1].lower()
        likely = _LIKELY_SCHEMES.get(scheme)
        fix = f"did you mean '{likely}://'?" if likely else _URI_FIX
        raise SpecError(path, raw, f"unsupported storage URI scheme {scheme!r}", fix)
    return source


@dataclass(frozen=True)
class FileMount:
    """One file mount: `source` (local path or bucket URI) copied or mounted at the destination.

    `mode` None means the default (COPY); `store`/`name`/`persistent` describe a bucket SkyPilot-style.
    `read_only` (MOUNT / MOUNT_CACHED only) mounts the bucket read-only.
    """

    source: str | None = None
    mode: str | None = None
    store: str | None = None
    name: str | None = None
    persistent: bool | None = None
    read_only: bool | None = None

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in _MOUNT_KEYS if getattr(self, k) is not None}
        parsed = FileMount.parse(given, "file_mount")
        for key in _MOUNT_KEYS:
            object.__setattr__(self, key, getattr(parsed, key))

    @property
    def is_bucket(self) -> bool:
        """True when the source is a bucket URI or the mount names a bucket."""
        return (self.source is not None and is_bucket_uri(self.source)) or self.name is not None

    @property
    def effective_mode(self) -> str:
        """The mode in effect (COPY when unset)."""
        return self.mode or "COPY"

    def to_yaml_value(self) -> str | dict[str, Any]:
        """A plain source string when nothing else is set, else the mapping."""
        if self.source is not None and all(getattr(self, k) is None for k in _MOUNT_KEYS[1:]):
            return self.source
        return {k: getattr(self, k) for k in _MOUNT_KEYS if getattr(self, k) is not None}

    @classmethod
    def parse(cls, raw: Any, path: str) -> FileMount:
        """From a source string or {source, mode, store, name, persistent}."""
        if isinstance(raw, FileMount):
            return raw
        if isinstance(raw, str):
            return _make(source=check_source(raw, path))
        if not isinstance(raw, Mapping):
            raise SpecError(
                path, raw, f"expected a path, URI or mapping, not {type_name(raw)}",
                "give a source string or {source: ..., mode: COPY|MOUNT|MOUNT_CACHED, read_only: true|false}",
            )  # fmt: skip
        mapping = expect_mapping(raw, path)
        check_keys(mapping, _MOUNT_KEYS, path)
        source = mapping.get("source")
        source = None if source is None else check_source(source, join_path(path, "source"))
        name = mapping.get("name")
        name = None if name is None else as_str(name, join_path(path, "name"), what="a bucket name").strip()
        if source is None and name is None:
            raise SpecError(
                path, raw, "needs a source or a bucket name", "add source: <path or URI> or name: <bucket>"
            )
        mode = _choice(mapping.get("mode"), join_path(path, "mode"), MODES, upper=True)
        store = _choice(mapping.get("store"), join_path(path, "store"), STORES, upper=False)
        persistent = mapping.get("persistent")
        if persistent is not None:
            persistent = as_bool(persistent, join_path(path, "persistent"))
        if mode in MOUNT_MODES and source is not None and not is_bucket_uri(source):
            raise SpecError(
                join_path(path, "mode"), mapping.get("mode"), f"mode {mode} mounts a bucket, but the source is a local path",
                "use a bucket source (s3://..., gs://..., https://<account>.blob.core.windows.net/...) or mode: COPY",
            )  # fmt: skip
        read_only = mapping.get("read_only")
        if read_only is not None:
            read_only = as_bool(read_only, join_path(path, "read_only"))
            if read_only and mode not in MOUNT_MODES:
                raise SpecError(
                    join_path(path, "read_only"), mapping.get("read_only"), f"only a mounted bucket can be read-only (mode is {mode or 'COPY'})",
                    "add mode: MOUNT (or MOUNT_CACHED), or drop read_only (a COPY is a private copy on each node)",
                )  # fmt: skip
        return _make(
            source=source, mode=mode, store=store, name=name, persistent=persistent, read_only=read_only
        )


def _make(**values: Any) -> FileMount:
    """Build a FileMount from already-checked values without re-validating."""
    mount = object.__new__(FileMount)
    for key in _MOUNT_KEYS:
        object.__setattr__(mount, key, values.get(key))
    return mount


def _choice(raw: Any, path: str, choices: tuple[str, ...], *, upper: bool) -> str | None:
    if raw is None:
        return None
    text = as_str(raw, path).strip()
    text = text.upper() if upper else text.lower()
    if text not in choices:
        fix = did_you_mean(text, choices, "use one of " + ", ".join(choices))
        raise SpecError(path, raw, f"must be one of {', '.join(choices)}", fix)
    return text


def parse_file_mounts(raw: Any, path: str) -> dict[str, FileMount]:
    """`{destination: source-or-mapping}`; destinations are absolute or start with '~'."""
    if raw is None:
        return {}
    mapping = expect_mapping(raw, path)
    out: dict[str, FileMount] = {}
    for dest, value in mapping.items():
        field = join_path(path, dest)
        if not dest.strip() or not (dest.startswith("/") or dest.startswith("~")):
            raise SpecError(
                field,
                dest,
                "destination must be an absolute path or start with '~'",
                "use e.g. /data or ~/data",
            )
        out[dest] = FileMount.parse(value, field)
    return out


def parse_data_sizes(raw: Any, path: str) -> dict[str, float | None]:
    """`inputs` / `outputs`: {uri_or_name: size_gb}, a single URI string, or a list of URIs."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = {raw: None}
    elif isinstance(raw, list | tuple):
        items: dict[str, None] = {}
        for i, item in enumerate(raw):
            items[as_str(item, f"{path}[{i}]", what="a URI or name").strip()] = None
        raw = items
    mapping = expect_mapping(raw, path, what="a mapping {uri: size_gb}, a URI or a list of URIs")
    out: dict[str, float | None] = {}
    for key, size in mapping.items():
        field = join_path(path, key)
        name = as_str(key, field, what="a URI or name").strip()
        out[name] = None if size is None else as_number(size, field, minimum=0.0)
    return out
