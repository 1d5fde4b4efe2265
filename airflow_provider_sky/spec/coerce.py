"""Checks and conversions shared by the spec parsers; every failure is a SpecError."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path, safe_repr

_NUMBER_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$")
_DIGITS_RE = re.compile(r"^\s*[0-9]{1,18}\s*$")
_MAX_DEPTH = 40


def type_name(value: Any) -> str:
    """A short type name for messages."""
    return type(value).__name__


def expect_mapping(value: Any, path: str, what: str = "a mapping") -> Mapping[str, Any]:
    """`value` as a mapping whose keys are all strings."""
    if not isinstance(value, Mapping):
        raise SpecError(
            path, value, f"expected {what}, not {type_name(value)}", f"write {path} as key: value pairs"
        )
    for key in value:
        if not isinstance(key, str):
            raise SpecError(
                join_path(path, safe_repr(key, 40)),
                key,
                f"keys must be strings, not {type_name(key)}",
                "quote the key",
            )
    return value


def check_keys(
    mapping: Mapping[str, Any],
    allowed: Collection[str],
    path: str,
    unsupported: Mapping[str, str] | None = None,
) -> None:
    """Reject keys outside `allowed`, suggesting the closest valid key."""
    for key in mapping:
        if key in allowed:
            continue
        field = join_path(path, key if key.strip() else repr(key))
        if unsupported and key in unsupported:
            raise SpecError(field, mapping[key], "is not supported by this provider", unsupported[key])
        valid = ", ".join(sorted(allowed))
        fix = did_you_mean(key, allowed, f"remove it; valid fields here are: {valid}")
        raise SpecError(field, mapping[key], "unknown field", fix)


def as_str(value: Any, path: str, *, what: str = "a string", numbers_ok: bool = False) -> str:
    """A non-empty string; ints and floats are turned into strings when `numbers_ok`."""
    if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
        value = scalar_to_str(value, path)
    if not isinstance(value, str):
        raise SpecError(path, value, f"expected {what}, not {type_name(value)}", f"give {path} as {what}")
    if not value.strip():
        raise SpecError(path, value, "must not be empty", f"give {path} a value or remove it")
    return value


def as_bool(value: Any, path: str) -> bool:
    """A YAML boolean (strings like "yes" are not accepted)."""
    if not isinstance(value, bool):
        raise SpecError(
            path, value, f"expected true or false, not {type_name(value)}", "use true or false (unquoted)"
        )
    return value


def as_int(value: Any, path: str, *, minimum: int = 0, maximum: int = 10**9) -> int:
    """An integer in [minimum, maximum]; integral floats and digit strings are accepted."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
        isinstance(value, str) and _DIGITS_RE.match(value)
    ):
        number = int(value)
    if number is None:
        raise SpecError(path, value, "expected a whole number", f"give {path} as an integer >= {minimum}")
    if number < minimum:
        raise SpecError(path, value, f"must be >= {minimum}", f"give {path} as an integer >= {minimum}")
    if number > maximum:
        raise SpecError(path, value, f"must be <= {maximum}", f"give {path} as an integer <= {maximum}")
    return number


def parse_number(value: Any) -> float | None:
    """A finite float from an int, float or numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and len(value) < 64 and _NUMBER_RE.match(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def as_number(value: Any, path: str, *, minimum: float = 0.0, exclusive: bool = False) -> float:
    """A finite float >= minimum (> minimum when `exclusive`)."""
    number = parse_number(value)
    bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
    if number is None:
        raise SpecError(path, value, "expected a finite number", f"give {path} as a number {bound}")
    if number < minimum or (exclusive and number == minimum):
        raise SpecError(path, value, f"must be {bound}", f"give {path} as a number {bound}")
    return number


def number_out(value: float) -> int | float:
    """A float as it should appear in YAML: an int when it is whole and of modest size."""
    if value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def scalar_to_str(value: Any, path: str) -> str:
    """A str/int/float/bool turned into a string (bools as 'True'/'False', like SkyPilot)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        if abs(value) >= 10**100:
            raise SpecError(path, value, "number is too large", "quote the value as a string")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, value, "must be a finite number", "quote the value as a string")
        return repr(value)
    raise SpecError(
        path,
        value,
        f"expected a string, number or boolean, not {type_name(value)}",
        "quote the value as a string",
    )


def str_mapping(
    value: Any, path: str, *, allow_none: bool, key_re: re.Pattern[str] | None = None, key_hint: str = ""
) -> dict[str, str | None]:
    """A mapping of str -> str (scalar values stringified; None kept when `allow_none`)."""
    if value is None:
        return {}
    mapping = expect_mapping(value, path)
    out: dict[str, str | None] = {}
    for key, item in mapping.items():
        field = join_path(path, key)
        if key_re is not None and not key_re.fullmatch(key):
            raise SpecError(field, key, "invalid name", key_hint or "use letters, digits and '_'")
        if item is None:
            if not allow_none:
                raise SpecError(field, item, "must have a value", "give it a string value or remove it")
            out[key] = None
        else:
            out[key] = scalar_to_str(item, field)
    return out


def plain_data(value: Any, path: str, depth: int = 0) -> Any:
    """A deep copy of YAML-like data (str-keyed mappings, lists, scalars); rejects anything else."""
    if depth > _MAX_DEPTH:
        raise SpecError(path, "...", "is nested too deeply (or refers to itself)", "simplify the structure")
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if abs(value) >= 10**100:
            raise SpecError(path, value, "number is too large", "quote the value as a string")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, value, "must be a finite number", "use a finite number or a string")
        return value
    if isinstance(value, Mapping):
        mapping = expect_mapping(value, path)
        return {k: plain_data(v, join_path(path, k), depth + 1) for k, v in mapping.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise SpecError(
        path,
        value,
        f"unsupported value type {type_name(value)}",
        "use strings, numbers, booleans, lists or mappings",
    )
