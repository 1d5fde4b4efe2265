"""Parse the `accelerators` field: 'V100:1', 'V100', {V100: 1}, ['V100:1', 'A100:1'] or {'V100', 'T4'}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_sky.spec import accelerators
from airflow_provider_sky.spec.coerce import parse_number
from airflow_provider_sky.spec.errors import SpecError
from airflow_provider_sky.spec.frozendict import FrozenDict

Count = int | float
MAX_COUNT = 10**6
_FORMS = "use 'NAME:COUNT' (e.g. 'V100:1'), {NAME: COUNT}, a list of alternatives in order, or a set"


def parse_accelerators(raw: Any, path: str) -> tuple[FrozenDict[str, Count] | None, bool]:
    """(canonical name -> count, ordered). Several entries are alternatives; `ordered` for a list."""
    if raw is None:
        return None, False
    entries: list[tuple[str, Count]]
    ordered = False
    if isinstance(raw, str):
        entries = [_parse_item(raw, path)]
    elif isinstance(raw, Mapping):
        entries = [_parse_entry(name, count, raw, path) for name, count in raw.items()]
    elif isinstance(raw, list | tuple):
        entries = [_parse_list_item(item, f"{path}[{i}]") for i, item in enumerate(raw)]
        ordered = True
    elif isinstance(raw, set | frozenset):
        entries = sorted((_parse_list_item(item, path) for item in raw), key=lambda entry: entry[0])
    else:
        raise SpecError(path, raw, f"unsupported type {type(raw).__name__}", _FORMS)
    if not entries:
        raise SpecError(path, raw, "is empty", "name at least one accelerator, or remove the field")
    result: dict[str, Count] = {}
    for name, count in entries:
        if name in result:
            raise SpecError(path, raw, f"accelerator {name!r} is listed twice", "list each accelerator once")
        result[name] = count
    return FrozenDict(result), ordered and len(result) > 1


def format_item(name: str, count: Count) -> str:
    """'V100:1' form of one entry."""
    return f"{name}:{count}"


def _parse_list_item(item: Any, path: str) -> tuple[str, Count]:
    if isinstance(item, str):
        return _parse_item(item, path)
    if isinstance(item, Mapping) and len(item) == 1:
        ((name, count),) = item.items()
        return _parse_entry(name, count, item, path)
    raise SpecError(
        path, item, "each alternative must be 'NAME:COUNT' or {NAME: COUNT}", "e.g. ['V100:1', 'A100:1']"
    )


def _parse_item(text: str, path: str) -> tuple[str, Count]:
    """'V100:2' or 'V100' -> ('V100', 2)."""
    parts = text.split(":")
    if len(parts) > 2:
        raise SpecError(path, text, "too many ':'", "use 'NAME:COUNT', e.g. 'V100:1'")
    count: Any = parts[1] if len(parts) == 2 else None
    return _canonical(parts[0], text, path), _parse_count(count, text, path)


def _parse_entry(name: Any, count: Any, raw: Any, path: str) -> tuple[str, Count]:
    if not isinstance(name, str):
        raise SpecError(path, raw, "accelerator names must be strings", "quote the name")
    if ":" in name:
        raise SpecError(
            path, raw, "a name in a mapping must not contain ':'", "use {NAME: COUNT}, e.g. {V100: 1}"
        )
    return _canonical(name, raw, path), _parse_count(count, raw, path)


def _canonical(name: str, raw: Any, path: str) -> str:
    found = accelerators.canonical_name(name)
    if found is not None:
        return found
    stripped = name.strip()
    if not stripped:
        raise SpecError(path, raw, "missing accelerator name", "use 'NAME:COUNT', e.g. 'V100:1'")
    match = accelerators.suggest(stripped)
    fix = (
        f"did you mean {match!r}?"
        if match
        else "use a known name such as 'A100', 'H100', 'L4', 'T4' or 'V100'"
    )
    raise SpecError(path, raw, f"unknown accelerator {stripped!r}", fix)


def _parse_count(count: Any, raw: Any, path: str) -> Count:
    """None -> 1; whole numbers >= 1; fractions strictly between 0 and 1 (a share of one device)."""
    if count is None:
        return 1
    number = parse_number(count)
    if number is not None and number.is_integer() and 1 <= number <= MAX_COUNT:
        return int(number)
    if number is not None and 0 < number < 1:
        return number
    raise SpecError(
        path,
        raw,
        "accelerator count must be a whole number >= 1 or a fraction between 0 and 1",
        "use e.g. 'V100:1', 'V100:8' or 'V100:0.5'",
    )
