"""Location parsing: `infra: aws/us-east-1/us-east-1a` and the legacy `cloud` / `region` / `zone` keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.spec.coerce import as_str
from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path

SUPPORTED_CLOUDS: tuple[str, ...] = ("aws", "gcp", "azure", "local", "ssh")
"""Clouds this provider can launch on. `local` is the embedded backend, `ssh` a pool of SSH hosts."""

_UNSUPPORTED_CLOUDS = frozenset(
    {"kubernetes", "k8s", "lambda", "runpod", "oci", "ibm", "scp", "vsphere", "cudo", "fluidstack",
     "paperspace", "do", "nebius", "vast", "hyperbolic", "seeweb", "primeintellect", "slurm"}
)  # fmt: skip
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_SUPPORTED_TEXT = "use one of aws, gcp, azure, local or ssh/<pool>"


@dataclass(frozen=True)
class Location:
    """Where to run: any part may be None (meaning "any")."""

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None

    def to_infra(self) -> str | None:
        """The canonical `infra` string, e.g. 'aws/us-east-1', 'gcp/*/us-central1-a', or None."""
        if self.cloud is None and self.region is None and self.zone is None:
            return None
        parts = [self.cloud or "*", self.region or "*", self.zone or "*"]
        while parts and parts[-1] == "*":
            parts.pop()
        return "/".join(parts)


def parse_cloud(raw: Any, path: str) -> str:
    """A supported cloud name in lower case."""
    name = as_str(raw, path, what="a cloud name").strip().lower()
    if name in SUPPORTED_CLOUDS:
        return name
    if name in _UNSUPPORTED_CLOUDS:
        raise SpecError(path, raw, f"cloud {name!r} is not supported by this provider", _SUPPORTED_TEXT)
    if "/" in name:
        raise SpecError(path, raw, "a cloud name has no '/'", f"use infra: {name} instead of cloud:")
    raise SpecError(
        path, raw, f"unknown cloud {name!r}", did_you_mean(name, SUPPORTED_CLOUDS, _SUPPORTED_TEXT)
    )


def parse_name(raw: Any, path: str, what: str) -> str:
    name = as_str(raw, path, what=f"a {what} name").strip()
    if not _NAME_RE.fullmatch(name) or len(name) > 128:
        raise SpecError(path, raw, f"invalid {what} name", f"use a {what} name such as 'us-east-1'")
    return name


def parse_infra(raw: Any, path: str) -> Location:
    """Parse 'cloud[/region[/zone]]'; '*' means any ('gcp/*/us-central1-a', '*/us-east-1')."""
    text = as_str(raw, path, what="a string like 'aws/us-east-1'").strip()
    parts = text.split("/")
    if len(parts) > 3:
        raise SpecError(path, raw, "too many parts", "use cloud, cloud/region or cloud/region/zone")
    if any(part.strip() == "" for part in parts):
        raise SpecError(path, raw, "empty part", "remove the extra '/' (use '*' for any region)")
    cloud = None if parts[0].strip() == "*" else parse_cloud(parts[0], path)
    names: list[str | None] = [None, None]
    for i, part in enumerate(parts[1:]):
        names[i] = None if part.strip() == "*" else parse_name(part, path, ("region", "zone")[i])
    location = Location(cloud, names[0], names[1])
    check_location(location, (path, path, path), (raw, raw, raw))
    return location


def parse_legacy(cloud: Any, region: Any, zone: Any, path: str) -> Location:
    """Parse the legacy `cloud` / `region` / `zone` keys (None = not given)."""
    fields = (join_path(path, "cloud"), join_path(path, "region"), join_path(path, "zone"))
    location = Location(
        None if cloud is None else parse_cloud(cloud, fields[0]),
        None if region is None else parse_name(region, fields[1], "region"),
        None if zone is None else parse_name(zone, fields[2], "zone"),
    )
    check_location(location, fields, (cloud, region, zone))
    return location


def check_location(location: Location, fields: tuple[str, str, str], raws: tuple[Any, Any, Any]) -> None:
    """Cross-field rules: local has no region/zone; ssh has a pool but no zone; a zone needs a cloud or region."""
    _, region_field, zone_field = fields
    if location.cloud == "local" and location.region:
        raise SpecError(region_field, raws[1], "the local backend has no regions", "use infra: local")
    if location.cloud == "local" and location.zone:
        raise SpecError(zone_field, raws[2], "the local backend has no zones", "use infra: local")
    if location.cloud == "ssh" and location.zone:
        raise SpecError(zone_field, raws[2], "ssh takes a pool name only, no zone", "use infra: ssh/<pool>")
    if location.zone and not (location.cloud or location.region):
        raise SpecError(
            zone_field,
            raws[2],
            "a zone needs a cloud or a region",
            "use infra: <cloud>/*/<zone>, e.g. gcp/*/us-central1-a",
        )
