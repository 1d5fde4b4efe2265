"""SkyStorageHook: store credentials from Airflow connections of the standard cloud types.

- ``aws`` (s3://): login / password = access key id / secret; extras ``endpoint_url``,
  ``region_name``, ``aws_session_token``, ``profile_name``, ``verify``, ``account_id``.
- ``google_cloud_platform`` (gs://): extras ``project``, ``keyfile_dict`` (JSON) or ``key_path``,
  ``scope``; ``endpoint`` for emulators (anonymous unless key material is given or
  ``anonymous: false``).
- ``wasb`` (az://): extras ``connection_string``, or ``account_url`` (or Host) with
  ``account_key`` / ``shared_access_key`` (or Password) or ``sas_token``, or a service principal
  (``tenant_id`` + ``client_id`` / Login + ``client_secret`` / Password); ``region`` = the storage
  account's location.

Without a connection id each SDK's default credential chain applies. Secret values are registered
with Airflow's secrets masker and never logged; `describe_options` gives a loggable view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_provider_sky.hooks.sky import connection_fields
from airflow_provider_sky.storage import Store, parse_uri, store_for

#: Connection types accepted for each URI scheme.
CONN_TYPES: dict[str, tuple[str, ...]] = {
    "s3": ("aws", "s3"),
    "gs": ("google_cloud_platform", "gcp"),
    "az": ("wasb", "azure_blob_storage"),
    "file": (),
}
SECRET_OPTIONS = frozenset(
    {"aws_secret_access_key", "aws_session_token", "account_key", "sas_token", "connection_string"}
)
_GCS_SCOPES = ["https://www.googleapis.com/auth/devstorage.full_control"]


def _mask(value: Any) -> None:
    if not value or not isinstance(value, str):
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older SDKs
        return
    mask_secret(value)


def _extras(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Extras with the legacy ``extra__<type>__`` prefix removed (plain keys win)."""
    raw = fields.get("extra") or {}
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    prefix = f"extra__{fields.get('conn_type')}__"
    out = {k.removeprefix(prefix): v for k, v in raw.items() if k.startswith(prefix)}
    out.update({k: v for k, v in raw.items() if not k.startswith("extra__")})
    return {k: v for k, v in out.items() if v not in (None, "")}


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def s3_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """S3Store options from an ``aws`` connection."""
    extra = _extras(fields)
    host = fields.get("host") or ""
    opts = {
        "aws_access_key_id": fields.get("login") or extra.get("aws_access_key_id"),
        "aws_secret_access_key": fields.get("password") or extra.get("aws_secret_access_key"),
        "aws_session_token": extra.get("aws_session_token"),
        "region_name": extra.get("region_name"),
        "profile_name": extra.get("profile_name"),
        "endpoint_url": extra.get("endpoint_url") or (host if "://" in host else None),
    }
    if "verify" in extra:
        verify = extra["verify"]
        opts["verify"] = verify if isinstance(verify, bool) or "/" in str(verify) else _bool(verify)
    return {k: v for k, v in opts.items() if v is not None}


def gcs_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """GCSStore options from a ``google_cloud_platform`` connection (credentials built here)."""
    extra = _extras(fields)
    scopes = [s.strip() for s in str(extra["scope"]).split(",")] if extra.get("scope") else _GCS_SCOPES
    opts: dict[str, Any] = {}
    project = extra.get("project") or extra.get("project_id")
    keyfile = extra.get("keyfile_dict")
    if not keyfile and extra.get("key_path"):
        with open(extra["key_path"]) as fh:
            keyfile = fh.read()
    if keyfile:
        info = json.loads(keyfile) if isinstance(keyfile, str) else dict(keyfile)
        _mask(info.get("private_key"))
        opts["credentials"] = _gcp_credentials(info, scopes)
        project = project or info.get("project_id") or info.get("quota_project_id")
    if extra.get("endpoint"):
        opts["endpoint"] = extra["endpoint"]
        if "credentials" not in opts and _bool(extra.get("anonymous", True)):
            opts["anonymous"] = True
    elif _bool(extra.get("anonymous", False)):
        opts["anonymous"] = True
    if project:
        opts["project"] = project
    return opts


def _gcp_credentials(info: Mapping[str, Any], scopes: list[str]) -> Any:
    """Credentials from a key file's JSON: service account or authorized user (nothing else is loaded
    from connection data, so a crafted external-account config cannot make the worker fetch URLs)."""
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(dict(info), scopes=scopes)
    if kind == "authorized_user":
        from google.oauth2.credentials import Credentials

        return Credentials.from_authorized_user_info(dict(info), scopes=scopes)
    raise ValueError(f"unsupported GCP key file type {kind!r}: use a service_account or authorized_user key")


def azure_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """AzureStore options from a ``wasb`` connection."""
    extra = _extras(fields)
    opts: dict[str, Any] = {}
    if extra.get("region") or extra.get("location"):
        opts["region"] = str(extra.get("region") or extra.get("location")).lower()
    if extra.get("connection_string"):
        opts["connection_string"] = extra["connection_string"]
        return opts
    host = fields.get("host") or ""
    account_url = extra.get("account_url") or (host if "://" in host else None)
    if account_url:
        opts["account_url"] = account_url
    tenant = extra.get("tenant_id")
    client_id = extra.get("client_id") or (fields.get("login") if tenant else None)
    if tenant and client_id:
        from azure.identity import ClientSecretCredential

        secret = extra.get("client_secret") or fields.get("password")
        _mask(secret)
        opts["credential"] = ClientSecretCredential(tenant, client_id, secret)
    elif extra.get("sas_token"):
        opts["sas_token"] = extra["sas_token"]
    elif extra.get("account_key") or extra.get("shared_access_key") or fields.get("password"):
        opts["account_key"] = (
            extra.get("account_key") or extra.get("shared_access_key") or fields.get("password")
        )
    return opts


_BUILDERS = {"s3": s3_options, "gs": gcs_options, "az": azure_options}


def store_options(scheme: str, fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Store options for `scheme` (s3, gs, az, file) from a connection's fields (see
    `hooks.sky.connection_fields`); ``None`` fields: the SDK's default chain. Raises ValueError
    when the connection's type does not fit the scheme."""
    if fields is None or scheme == "file":
        return {}
    accepted = CONN_TYPES.get(scheme, ())
    conn_type = fields.get("conn_type")
    if conn_type not in accepted:
        raise ValueError(
            f"connection {fields.get('conn_id')!r} has type {conn_type!r}, but {scheme}:// URIs need "
            f"one of {', '.join(accepted)}"
        )
    opts = _BUILDERS[scheme](fields)
    for key in SECRET_OPTIONS:
        _mask(opts.get(key))
    _mask(fields.get("password"))
    return opts


def describe_options(options: Mapping[str, Any]) -> dict[str, str]:
    """A loggable view of store options: secrets as '***', credential objects by type."""
    out = {}
    for key, value in options.items():
        if key in SECRET_OPTIONS:
            out[key] = "***"
        elif key in ("credentials", "credential"):
            out[key] = type(value).__name__
        else:
            out[key] = str(value)
    return out


def azure_account_name(options: Mapping[str, Any], login: str | None = None) -> str | None:
    """The storage account an Azure connection points at (connection string, account URL, login)."""
    conn_str = options.get("connection_string")
    if conn_str:
        parts = dict(p.split("=", 1) for p in conn_str.split(";") if "=" in p)
        if parts.get("AccountName"):
            return parts["AccountName"]
        endpoint = parts.get("BlobEndpoint")
        if endpoint:
            return _account_from_url(endpoint)
    if options.get("account_url"):
        return _account_from_url(options["account_url"])
    return login


def _account_from_url(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0]
    path = parts.path.strip("/")  # emulators: http://127.0.0.1:10000/<account>
    return path.split("/", 1)[0] if path else None


class SkyStorageHook(BaseHook):
    """Builds `Store` objects for URIs with credentials from one Airflow connection (or none).

    :param conn_id: an ``aws``, ``google_cloud_platform`` or ``wasb`` connection; None uses the
        SDK's default chain (env vars, instance metadata, ADC, DefaultAzureCredential).
    """

    conn_name_attr = "conn_id"
    hook_name = "Sky storage"

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._fields: dict[str, Any] | None = None

    def connection(self) -> dict[str, Any] | None:
        """The connection's fields (cached), or None without a connection id."""
        if self.conn_id is None:
            return None
        if self._fields is None:
            self._fields = connection_fields(self.get_connection(self.conn_id))
        return self._fields

    def store_options(self, uri: str) -> dict[str, Any]:
        return store_options(parse_uri(uri).scheme, self.connection())

    def get_store(self, uri: str, **overrides: Any) -> Store:
        """The store holding `uri`, with this hook's credentials (plus `overrides`)."""
        return store_for(parse_uri(uri), **{**self.store_options(uri), **overrides})

    def get_conn(self) -> dict[str, Any] | None:
        return self.connection()

    def cloud_matches(self, scheme: str) -> bool:
        """Whether this hook's connection (if any) can serve `scheme`."""
        fields = self.connection()
        return fields is None or fields.get("conn_type") in CONN_TYPES.get(scheme, ())

    def account_identity(self, scheme: str) -> str:
        """What tells one account's staging buckets from another's: the AWS account id (extra
        ``account_id`` or STS; the endpoint and key id on S3-compatible endpoints), the GCP
        project, or the Azure storage account."""
        fields = self.connection() or {}
        options = store_options(scheme, self.connection())
        if scheme == "s3":
            extra = _extras(fields) if fields else {}
            if extra.get("account_id"):
                return str(extra["account_id"])
            if options.get("endpoint_url"):
                return f"{options['endpoint_url']}|{options.get('aws_access_key_id') or ''}"
            return _aws_account_id(options)
        if scheme == "gs":
            if options.get("project"):
                return str(options["project"])
            import google.auth

            _, project = google.auth.default(scopes=_GCS_SCOPES)
            if not project:
                raise ValueError("no GCP project: set the connection's `project` extra")
            return project
        if scheme == "az":
            account = azure_account_name(options, fields.get("login"))
            if not account:
                raise ValueError(
                    "no Azure storage account: set `account_url` or `connection_string` on the wasb connection"
                )
            return account
        return "local"


def _aws_account_id(options: Mapping[str, Any]) -> str:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=options.get("aws_access_key_id"),
        aws_secret_access_key=options.get("aws_secret_access_key"),
        aws_session_token=options.get("aws_session_token"),
        region_name=options.get("region_name"),
        profile_name=options.get("profile_name"),
    )
    return str(session.client("sts").get_caller_identity()["Account"])
