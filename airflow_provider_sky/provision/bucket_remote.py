"""An rclone remote for a bucket URI, built from the same store options the transfer engine uses.

The remote is described only by `RCLONE_CONFIG_SKY_*` environment variables (rclone's documented
way to define a remote without a config file), so credentials reach the mount process through its
environment and never a command line or a log. Emulator endpoints (moto S3, fake-gcs-server,
Azurite) are honoured from the options (`endpoint_url`, `endpoint`, `account_url`, a connection
string's `BlobEndpoint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_sky.storage import parse_uri

REMOTE = "SKY"
_PREFIX = f"RCLONE_CONFIG_{REMOTE}_"


class UnsupportedCredentials(ValueError):
    """The store options hold credentials rclone cannot be given (the mount falls back to COPY)."""


@dataclass(frozen=True)
class RcloneRemote:
    """`remote` is what `rclone mount` gets (``SKY:bucket/prefix``); `env` defines SKY (secret)."""

    remote: str
    env: dict[str, str] = field(repr=False)


def rclone_remote(uri: str, options: Mapping[str, Any] | None = None) -> RcloneRemote:
    """The remote for `uri` (s3://, gs://, az:// or an Azure blob URL) with these store options."""
    loc = parse_uri(uri)
    opts = dict(options or {})
    path = f"{loc.bucket}/{loc.key}".rstrip("/")
    if loc.scheme == "s3":
        conf = _s3(opts)
    elif loc.scheme == "gs":
        conf = _gcs(opts)
    elif loc.scheme == "az":
        conf = _azure(opts, loc.account or "", loc.bucket)
    else:
        raise UnsupportedCredentials(f"{uri} is not a bucket rclone can mount")
    tls = {k: conf.pop(k) for k in ("no_check_certificate", "ca_cert") if k in conf}  # global flags
    env = {(_PREFIX + k.upper()): str(v) for k, v in conf.items() if v not in (None, "")}
    env.update({("RCLONE_" + k.upper()): str(v) for k, v in tls.items()})
    return RcloneRemote(f"{REMOTE}:{path}", env)


def _s3(opts: dict[str, Any]) -> dict[str, Any]:
    endpoint = opts.get("endpoint_url")
    conf: dict[str, Any] = {
        "type": "s3",
        "provider": "Other" if endpoint else "AWS",
        "endpoint": endpoint,
        "region": opts.get("region_name") or ("us-east-1" if endpoint else None),
        "force_path_style": "true" if endpoint else None,
    }
    if opts.get("aws_access_key_id") and opts.get("aws_secret_access_key"):
        conf["access_key_id"] = opts["aws_access_key_id"]
        conf["secret_access_key"] = opts["aws_secret_access_key"]
        conf["session_token"] = opts.get("aws_session_token")
    else:  # the node's own chain (instance profile, env, shared config)
        conf["env_auth"] = "true"
        conf["profile"] = opts.get("profile_name")
    verify = opts.get("verify")
    if verify is False:
        conf["no_check_certificate"] = "true"
    elif isinstance(verify, str) and verify:
        conf["ca_cert"] = verify
    return conf


def _gcs(opts: dict[str, Any]) -> dict[str, Any]:
    conf: dict[str, Any] = {"type": "google cloud storage", "bucket_policy_only": "true"}
    endpoint = opts.get("endpoint")
    if endpoint:
        base = str(endpoint).rstrip("/")
        conf["endpoint"] = base if base.endswith("/storage/v1") else base + "/storage/v1/"
    if opts.get("project"):
        conf["project_number"] = opts["project"]
    credentials = opts.get("credentials")
    if opts.get("anonymous"):
        conf["anonymous"] = "true"
    elif credentials is not None:
        conf["access_token"] = _gcp_token(credentials)
    else:
        conf["env_auth"] = "true"
    return conf


def _gcp_token(credentials: Any) -> str:
    """A fresh access token from google-auth credentials (valid about an hour)."""
    try:
        from google.auth.transport.requests import Request

        if not getattr(credentials, "valid", False):
            credentials.refresh(Request())
        token = credentials.token
    except Exception as exc:
        raise UnsupportedCredentials(
            f"cannot get a GCS access token for the mount: {type(exc).__name__}"
        ) from None
    if not token:
        raise UnsupportedCredentials("the GCS credentials gave no access token")
    return str(token)


def _conn_string(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in text.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            parts[k.strip().lower()] = v.strip()
    return parts


def _azure(opts: dict[str, Any], account: str, container: str) -> dict[str, Any]:
    conf: dict[str, Any] = {"type": "azureblob", "account": account}
    endpoint = opts.get("account_url")
    key = opts.get("account_key")
    sas = opts.get("sas_token")
    if opts.get("connection_string"):
        cs = _conn_string(str(opts["connection_string"]))
        if cs.get("usedevelopmentstorage", "").lower() == "true":
            return {"type": "azureblob", "use_emulator": "true"}
        conf["account"] = cs.get("accountname") or account
        key = cs.get("accountkey") or key
        sas = cs.get("sharedaccesssignature") or sas
        endpoint = cs.get("blobendpoint") or endpoint
    elif opts.get("credential") is not None:
        raise UnsupportedCredentials("an Azure service principal credential cannot be handed to rclone")
    if endpoint and not str(urlsplit(str(endpoint)).hostname or "").endswith(".blob.core.windows.net"):
        conf["endpoint"] = str(endpoint).rstrip("/")
    if key:
        conf["key"] = key
    elif sas:
        base = str(endpoint or f"https://{conf['account']}.blob.core.windows.net").rstrip("/")
        conf["sas_url"] = f"{base}/{container}?{str(sas).lstrip('?')}"
    else:
        conf["env_auth"] = "true"
    return conf
