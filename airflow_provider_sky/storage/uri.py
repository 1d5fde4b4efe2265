"""Storage URIs and the store factory.

Accepted forms:
  s3://<bucket>/<key>
  gs://<bucket>/<key>                       (gcs:// is an alias)
  az://<account>/<container>/<key>
  https://<account>.blob.core.windows.net/<container>/<key>
  file:///<absolute path>   or a plain local path
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import StorageError, Store

_AZURE_HOST_SUFFIX = ".blob.core.windows.net"

#: Provider names as the catalog knows them, by URI scheme.
CLOUD_OF_SCHEME = {"s3": "aws", "gs": "gcp", "az": "azure", "file": "local"}


@dataclass(frozen=True)
class StorageURI:
    scheme: str  # s3 | gs | az | file
    bucket: str  # bucket / container; "" for file
    key: str  # key or prefix inside the bucket; for file: absolute path without the leading "/"
    account: str | None = None  # Azure storage account

    @property
    def cloud(self) -> str:
        return CLOUD_OF_SCHEME[self.scheme]

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file:///" + self.key
        if self.scheme == "az":
            return f"az://{self.account}/{self.bucket}/{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"


def parse_uri(uri: str) -> StorageURI:
    """Parse a storage URI (see the module docstring); raises ValueError on an unknown form."""
    if "://" not in uri:
        path = os.path.abspath(os.path.expanduser(uri))
        key = path.lstrip("/")
        if uri.endswith("/") and key:
            key += "/"
        return StorageURI("file", "", key)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    path = unquote(parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI must be file:///absolute/path, got {uri!r}")
        return StorageURI("file", "", path.lstrip("/"))
    if scheme in ("s3", "s3a", "gs", "gcs"):
        if not parts.netloc:
            raise ValueError(f"{uri!r} has no bucket name")
        return StorageURI("s3" if scheme.startswith("s3") else "gs", parts.netloc, path.lstrip("/"))
    if scheme == "az":
        segments = path.lstrip("/").split("/", 1)
        if not parts.netloc or not segments[0]:
            raise ValueError(f"Azure URIs are az://<account>/<container>/<path>, got {uri!r}")
        return StorageURI("az", segments[0], segments[1] if len(segments) > 1 else "", account=parts.netloc)
    if scheme in ("https", "http") and parts.hostname and parts.hostname.endswith(_AZURE_HOST_SUFFIX):
        account = parts.hostname[: -len(_AZURE_HOST_SUFFIX)]
        segments = path.lstrip("/").split("/", 1)
        if not segments[0]:
            raise ValueError(f"{uri!r} has no container")
        return StorageURI("az", segments[0], segments[1] if len(segments) > 1 else "", account=account)
    raise ValueError(
        f"unsupported storage URI {uri!r}: use s3://, gs://, az://<account>/<container>/, "
        "https://<account>.blob.core.windows.net/<container>/ or file:///"
    )


def store_for(loc: StorageURI, **options: Any) -> Store:
    """The store for a parsed URI's bucket. `options` go to the backend's constructor (credentials,
    endpoint, client); see S3Store, GCSStore, AzureStore, FileStore."""
    if loc.scheme == "file":
        from .local import FileStore

        return FileStore(options.pop("root", "/"), **options)
    if loc.scheme == "s3":
        from .s3 import S3Store

        return S3Store(loc.bucket, **options)
    if loc.scheme == "gs":
        from .gcs import GCSStore

        return GCSStore(loc.bucket, **options)
    if loc.scheme == "az":
        from .azure import AzureStore

        return AzureStore(loc.account or "", loc.bucket, **options)
    raise StorageError(f"no store for scheme {loc.scheme!r}")


def store_for_uri(uri: str, **options: Any) -> Store:
    """The store holding `uri` (bound to its bucket/container), built with explicit options:

    - s3: endpoint_url, region_name, aws_access_key_id, aws_secret_access_key, aws_session_token,
      profile_name, client
    - gs: project, credentials (google.auth credentials), endpoint, anonymous, client
    - az: account_url, account_key, connection_string, sas_token, credential, region, client
    - file: nothing
    Without credentials the SDKs' default chains apply."""
    return store_for(parse_uri(uri), **options)


def open_uri(uri: str, **options: Any) -> tuple[Store, str]:
    """(store, key) for a URI."""
    loc = parse_uri(uri)
    return store_for(loc, **options), loc.key
