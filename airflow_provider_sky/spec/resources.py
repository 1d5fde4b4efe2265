"""`Resources`: what a task needs (cloud/region/zone, CPUs, memory, accelerators, ...), SkyPilot-compatible."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.spec.accelerator_request import Count, format_item, parse_accelerators
from airflow_provider_sky.spec.autostop import Autostop
from airflow_provider_sky.spec.coerce import (
    as_bool,
    as_int,
    as_str,
    check_keys,
    expect_mapping,
    scalar_to_str,
    str_mapping,
    type_name,
)
from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path
from airflow_provider_sky.spec.frozendict import FrozenDict
from airflow_provider_sky.spec.infra import Location, check_location, parse_cloud, parse_infra, parse_name
from airflow_provider_sky.spec.job_recovery import JobRecovery
from airflow_provider_sky.spec.ports import parse_ports
from airflow_provider_sky.spec.quantity import Quantity

DEFAULT_DISK_SIZE = 256
MAX_DISK_SIZE = 1_000_000
DISK_TIERS: tuple[str, ...] = ("low", "medium", "high", "ultra", "best")

YAML_KEYS: tuple[str, ...] = (
    "infra",
    "cloud",
    "region",
    "zone",
    "cpus",
    "memory",
    "accelerators",
    "accelerator_args",
    "instance_type",
    "use_spot",
    "disk_size",
    "disk_tier",
    "image_id",
    "ports",
    "labels",
    "autostop",
    "job_recovery",
    "any_of",
    "ordered",
)
"""Keys accepted under `resources:` in a task YAML."""

_UNSUPPORTED_KEYS = {
    "spot_recovery": "rename it to job_recovery",
    "network_tier": "remove it; network tiers are not supported",
    "volumes": "remove it; use file_mounts on the task instead",
}
_ALTERNATIVE_KEYS = ("any_of", "ordered")
_ITEM_KEYS = tuple(k for k in YAML_KEYS if k not in _ALTERNATIVE_KEYS)
_LOCATION_KEYS = ("cloud", "region", "zone")
_VALUE_KEYS = tuple(k for k in _ITEM_KEYS if k not in ("infra", *_LOCATION_KEYS))


@dataclass(frozen=True, eq=False, init=False, repr=False)
class Resources:
    """A resource request. Construct from Python (strings are normalized) or with `from_dict` (YAML form).

    `accelerators` maps canonical names to counts; more than one entry means alternatives (in
    preference order when `accelerators_ordered`). `any_of` / `ordered` hold alternative Resources,
    each already merged with the top-level fields. Use `candidates()` for the concrete choices.
    """

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    cpus: Quantity | None = None
    memory: Quantity | None = None
    accelerators: Mapping[str, Count] | None = None
    accelerators_ordered: bool = False
    accelerator_args: Mapping[str, Any] | None = None
    instance_type: str | None = None
    use_spot: bool = False
    disk_size: int = DEFAULT_DISK_SIZE
    disk_tier: str | None = None
    image_id: str | Mapping[str, str] | None = None
    ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=FrozenDict)
    autostop: Autostop | None = None
    job_recovery: JobRecovery | None = None
    any_of: tuple[Resources, ...] = ()
    ordered: tuple[Resources, ...] = ()

    def __init__(
        self,
        *,
        cloud: str | None = None,
        region: str | None = None,
        zone: str | None = None,
        cpus: Quantity | int | float | str | None = None,
        memory: Quantity | int | float | str | None = None,
        accelerators: Any = None,
        accelerators_ordered: bool = False,
        accelerator_args: Mapping[str, Any] | None = None,
        instance_type: str | None = None,
        use_spot: bool | None = False,
        disk_size: int | str | None = DEFAULT_DISK_SIZE,
        disk_tier: str | None = None,
        image_id: str | Mapping[str, str] | None = None,
        ports: Any = (),
        labels: Mapping[str, Any] | None = None,
        autostop: Any = None,
        job_recovery: Any = None,
        any_of: Any = (),
        ordered: Any = (),
        infra: str | None = None,
    ) -> None:
        raw = {
            "infra": infra, "cloud": cloud, "region": region, "zone": zone, "cpus": cpus, "memory": memory,
            "accelerators": accelerators, "accelerator_args": accelerator_args, "instance_type": instance_type,
            "use_spot": use_spot, "disk_size": disk_size, "disk_tier": disk_tier, "image_id": image_id,
            "ports": ports, "labels": labels, "autostop": autostop, "job_recovery": job_recovery,
            "any_of": any_of, "ordered": ordered,
        }  # fmt: skip
        if accelerators_ordered is not False:
            as_bool(accelerators_ordered, "resources.accelerators_ordered")
        values = _normalize(raw, "resources", None, accelerators_ordered)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # ----- construction from / to YAML form -------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, path: str = "resources") -> Resources:
        """Parse the `resources:` mapping of a SkyPilot task YAML (None means no requirements)."""
        if data is None:
            return cls()
        if isinstance(data, Resources):
            return data
        mapping = expect_mapping(data, path)
        check_keys(mapping, YAML_KEYS, path, _UNSUPPORTED_KEYS)
        return cls(**_normalize(mapping, path, None, False))

    def to_dict(self) -> dict[str, Any]:
        """The canonical SkyPilot YAML form (defaults omitted)."""
        out = self._fields_dict(None)
        for key in _ALTERNATIVE_KEYS:
            items: tuple[Resources, ...] = getattr(self, key)
            if items:
                out[key] = [item._fields_dict(self) for item in items]
        return out

    def _fields_dict(self, base: Resources | None) -> dict[str, Any]:
        """Fields that differ from `base` (or from the defaults when base is None), in YAML form."""
        reference = base or _DEFAULT
        out: dict[str, Any] = {}
        if self.location != reference.location:
            out["infra"] = self.location.to_infra()
        for name in _VALUE_KEYS:
            mine = _yaml_value(self, name)
            if mine != _yaml_value(reference, name):
                out[name] = mine
        return out

    # ----- derived views ---------------------------------------------------------------------------
    @property
    def location(self) -> Location:
        """Cloud, region and zone together."""
        return Location(self.cloud, self.region, self.zone)

    @property
    def infra(self) -> str | None:
        """The `infra` string ('aws/us-east-1', 'gcp/*/us-central1-a', 'local'), or None for anywhere."""
        return self.location.to_infra()

    @property
    def is_ordered(self) -> bool:
        """True when the user listed alternatives in preference order."""
        return bool(self.ordered) or (self.accelerators_ordered and len(self.accelerators or ()) > 1)

    def candidates(self) -> list[Resources]:
        """Concrete alternatives (one accelerator entry at most, no any_of/ordered), in order."""
        items = self.ordered or self.any_of
        if items:
            return [candidate for item in items for candidate in item.candidates()]
        if self.accelerators and len(self.accelerators) > 1:
            return [
                dataclasses.replace(self, accelerators={name: count}, accelerators_ordered=False)
                for name, count in self.accelerators.items()
            ]
        return [self]

    # ----- equality --------------------------------------------------------------------------------
    def _accel_key(self) -> Any:
        if self.accelerators is None:
            return None
        items = tuple(self.accelerators.items())
        return items if self.is_ordered else frozenset(items)

    def _key(self) -> tuple[Any, ...]:
        values = tuple(
            getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "accelerators_ordered"
        )
        return (*values, self._accel_key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resources):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Resources(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


# ----- normalization -------------------------------------------------------------------------------
def _normalize(
    raw: Mapping[str, Any], path: str, base: Resources | None, ordered_flag: bool
) -> dict[str, Any]:
    """Field values for a Resources. With `base` (an any_of/ordered item) keys given in `raw` override it."""
    given = {k: v for k, v in raw.items() if base is not None or v is not None}

    def pick(name: str, parse: Any) -> Any:
        if name in given:
            return parse(given[name], join_path(path, name))
        return getattr(base, name) if base is not None else parse(None, join_path(path, name))

    out: dict[str, Any] = {}
    location = _location(given, path, base.location if base is not None else Location())
    out.update(cloud=location.cloud, region=location.region, zone=location.zone)
    out["cpus"] = pick("cpus", lambda v, p: None if v is None else Quantity.parse(v, p))
    out["memory"] = pick("memory", lambda v, p: None if v is None else Quantity.parse(v, p, memory=True))
    if "accelerators" in given:
        accelerators, ordered = parse_accelerators(given["accelerators"], join_path(path, "accelerators"))
        ordered = ordered or (ordered_flag and accelerators is not None and len(accelerators) > 1)
    elif base is not None:
        accelerators, ordered = base.accelerators, base.accelerators_ordered
    else:
        accelerators, ordered = None, False
    out["accelerators"], out["accelerators_ordered"] = accelerators, ordered
    out["accelerator_args"] = pick("accelerator_args", _accelerator_args)
    out["instance_type"] = pick("instance_type", lambda v, p: None if v is None else as_str(v, p).strip())
    out["use_spot"] = pick("use_spot", lambda v, p: False if v is None else as_bool(v, p))
    out["disk_size"] = pick("disk_size", _disk_size)
    out["disk_tier"] = pick("disk_tier", _disk_tier)
    out["image_id"] = pick("image_id", _image_id)
    out["ports"] = pick("ports", parse_ports)
    out["labels"] = pick("labels", lambda v, p: FrozenDict(_labels(v, p)))
    out["autostop"] = pick("autostop", Autostop.parse)
    out["job_recovery"] = pick("job_recovery", JobRecovery.parse)
    out["any_of"], out["ordered"] = _alternatives(given, path, out) if base is None else ((), ())
    return out


def _location(given: Mapping[str, Any], path: str, base: Location) -> Location:
    """Resolve infra / cloud / region / zone; legacy keys override the base field by field."""
    infra = given.get("infra")
    if infra is not None:
        for key in _LOCATION_KEYS:
            if given.get(key) is not None:
                raise SpecError(
                    join_path(path, key),
                    given[key],
                    f"both 'infra' and '{key}' are given",
                    f"use only infra (e.g. infra: {infra if isinstance(infra, str) else 'aws/us-east-1'})",
                )
    if "infra" in given and (infra is not None or not any(k in given for k in _LOCATION_KEYS)):
        return Location() if infra is None else parse_infra(infra, join_path(path, "infra"))
    if not any(k in given for k in _LOCATION_KEYS):
        return base
    fields = tuple(join_path(path, k) for k in _LOCATION_KEYS)
    cloud, region, zone = base.cloud, base.region, base.zone
    if "cloud" in given:
        raw = given["cloud"]
        cloud, region, zone = (None if raw is None else parse_cloud(raw, fields[0])), None, None
    if "region" in given:
        raw = given["region"]
        region, zone = (None if raw is None else parse_name(raw, fields[1], "region")), None
    if "zone" in given:
        raw = given["zone"]
        zone = None if raw is None else parse_name(raw, fields[2], "zone")
    location = Location(cloud, region, zone)
    check_location(location, fields, (given.get("cloud"), given.get("region"), given.get("zone")))
    return location


def _alternatives(
    given: Mapping[str, Any], path: str, top: dict[str, Any]
) -> tuple[tuple[Resources, ...], ...]:
    """Parse any_of / ordered items, each merged over the top-level fields."""
    lists: dict[str, Any] = {}
    for key in _ALTERNATIVE_KEYS:
        value = given.get(key)
        if value is None:
            continue
        if not isinstance(value, list | tuple):
            raise SpecError(
                join_path(path, key),
                value,
                f"expected a list, not {type_name(value)}",
                f"write {key} as a list of resources mappings",
            )
        if value:
            lists[key] = value
    if len(lists) == 2:
        raise SpecError(
            join_path(path, "ordered"),
            given["ordered"],
            "both 'any_of' and 'ordered' are given",
            "use any_of (no preference) or ordered (preference order), not both",
        )
    if not lists:
        return (), ()
    ((key, items),) = lists.items()
    accelerators = top["accelerators"]
    if accelerators is not None and len(accelerators) > 1:
        raise SpecError(
            join_path(path, "accelerators"),
            dict(accelerators),
            f"several accelerators together with '{key}'",
            f"move each accelerator into its own {key} item",
        )
    base = Resources(**top)
    parsed = tuple(_alternative(item, f"{join_path(path, key)}[{i}]", base) for i, item in enumerate(items))
    return (parsed, ()) if key == "any_of" else ((), parsed)


def _alternative(item: Any, path: str, base: Resources) -> Resources:
    if isinstance(item, Resources):
        resources = item
    else:
        mapping = expect_mapping(item, path)
        for key in _ALTERNATIVE_KEYS:
            if key in mapping:
                raise SpecError(
                    join_path(path, key),
                    mapping[key],
                    "any_of / ordered cannot be nested",
                    "flatten the list",
                )
        check_keys(mapping, _ITEM_KEYS, path, _UNSUPPORTED_KEYS)
        resources = Resources(**_normalize(mapping, path, base, False))
    if resources.any_of or resources.ordered:
        raise SpecError(path, resources, "any_of / ordered cannot be nested", "flatten the list")
    if resources.accelerators is not None and len(resources.accelerators) > 1:
        raise SpecError(
            join_path(path, "accelerators"),
            dict(resources.accelerators),
            "an alternative takes one accelerator",
            "list each accelerator as its own item",
        )
    return resources


def _accelerator_args(value: Any, path: str) -> FrozenDict[str, Any] | None:
    """Opaque accelerator options (e.g. TPU runtime_version): scalar values only."""
    if value is None:
        return None
    mapping = expect_mapping(value, path)
    for key, item in mapping.items():
        if item is not None and not isinstance(item, bool):
            scalar_to_str(item, join_path(path, key))  # rejects lists, mappings, huge or non-finite numbers
    return FrozenDict(mapping)


def _disk_size(value: Any, path: str) -> int:
    if value is None:
        return DEFAULT_DISK_SIZE
    if isinstance(value, str) and value.strip().lower().endswith("gb"):
        value = value.strip()[:-2]
    return as_int(value, path, minimum=1, maximum=MAX_DISK_SIZE)


def _disk_tier(value: Any, path: str) -> str | None:
    if value is None:
        return None
    tier = as_str(value, path, what="a disk tier").strip().lower()
    if tier not in DISK_TIERS:
        fix = did_you_mean(tier, DISK_TIERS, "use one of " + ", ".join(DISK_TIERS))
        raise SpecError(path, value, "unknown disk tier", fix)
    return tier


def _image_id(value: Any, path: str) -> str | FrozenDict[str, str] | None:
    if value is None or isinstance(value, str):
        return None if value is None else as_str(value, path).strip()
    if isinstance(value, Mapping):
        images = str_mapping(value, path, allow_none=False)
        if not images:
            raise SpecError(path, value, "is empty", "give an image id, or a mapping region -> image id")
        return FrozenDict(images)
    raise SpecError(
        path, value, f"expected a string or mapping, not {type_name(value)}", "give an image id string"
    )


def _labels(value: Any, path: str) -> dict[str, str]:
    labels = str_mapping(value, path, allow_none=False)
    for key in labels:
        if not key.strip():
            raise SpecError(join_path(path, repr(key)), key, "label keys must not be empty", "name the label")
    return labels  # type: ignore[return-value]


def _yaml_value(resources: Resources, name: str) -> Any:
    """One field in YAML form."""
    value = getattr(resources, name)
    if value is None:
        return None
    if name in ("cpus", "memory"):
        return str(value)
    if name == "accelerators":
        if resources.is_ordered:
            return [format_item(n, c) for n, c in value.items()]
        return dict(value)
    if name in ("accelerator_args", "labels") or isinstance(value, FrozenDict):
        return dict(value)
    if name == "ports":
        return list(value)
    if name == "autostop":
        return value.to_dict()
    if name == "job_recovery":
        return value.to_yaml_value()
    return value


_DEFAULT = Resources()
