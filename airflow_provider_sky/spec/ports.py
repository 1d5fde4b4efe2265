"""Parse `ports`: 8080, "8080", "10000-10010", or a list of those."""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_sky.spec.errors import SpecError

_PORT_RE = re.compile(r"^\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?$")
_FIX = "use ports between 1 and 65535, e.g. 8080, '8080' or '10000-10010'"


def parse_ports(raw: Any, path: str) -> tuple[str, ...]:
    """Normalized port specs ('8080', '10000-10010'), in the given order, duplicates dropped."""
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    out: list[str] = []
    for i, item in enumerate(items):
        spec = _parse_one(item, f"{path}[{i}]" if isinstance(raw, list | tuple) else path)
        if spec not in out:
            out.append(spec)
    return tuple(out)


def _parse_one(item: Any, path: str) -> str:
    if isinstance(item, int) and not isinstance(item, bool):
        if not 1 <= item <= 65535:
            raise SpecError(path, item, "port out of range", _FIX)
        return str(item)
    if not isinstance(item, str):
        raise SpecError(path, item, f"expected a port number or range, not {type(item).__name__}", _FIX)
    match = _PORT_RE.match(item)
    if match is None:
        raise SpecError(path, item, "not a port or port range", _FIX)
    start = int(match[1])
    end = int(match[2]) if match[2] else start
    if not (1 <= start <= 65535 and 1 <= end <= 65535):
        raise SpecError(path, item, "port out of range", _FIX)
    if end < start:
        raise SpecError(
            path, item, "range ends before it starts", "write the range low-high, e.g. '10000-10010'"
        )
    return str(start) if start == end else f"{start}-{end}"
