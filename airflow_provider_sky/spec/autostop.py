"""`Autostop`: stop (or tear down) a cluster after it has been idle for a while."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.spec.coerce import as_bool, as_int, check_keys, expect_mapping
from airflow_provider_sky.spec.errors import SpecError, join_path

DEFAULT_IDLE_MINUTES = 5
MAX_IDLE_MINUTES = 10**7
_DURATION_RE = re.compile(r"^\s*([0-9]{1,9})\s*([mhd]?)\s*$", re.IGNORECASE)
_MINUTES_PER_UNIT = {"": 1, "m": 1, "h": 60, "d": 1440}
_FIX = "use true, a number of minutes, a duration like '10m' or '1h', or {idle_minutes: 10, down: true}"


@dataclass(frozen=True)
class Autostop:
    """Stop the cluster after `idle_minutes` without jobs; tear it down instead when `down`."""

    idle_minutes: int = DEFAULT_IDLE_MINUTES
    down: bool = False

    def __post_init__(self) -> None:
        minutes = _parse_minutes(self.idle_minutes, "autostop.idle_minutes")
        object.__setattr__(self, "idle_minutes", minutes)
        as_bool(self.down, "autostop.down")

    def to_dict(self) -> dict[str, Any]:
        """SkyPilot YAML form."""
        return {"idle_minutes": self.idle_minutes, "down": self.down}

    @classmethod
    def parse(cls, raw: Any, path: str) -> Autostop | None:
        """From true/false, minutes, '10m'/'1h'/'1d', or {idle_minutes, down}; None means disabled."""
        if raw is None or raw is False:
            return None
        if isinstance(raw, Autostop):
            return raw
        if raw is True:
            return cls()
        if isinstance(raw, int | str):
            return cls(_parse_minutes(raw, path))
        if isinstance(raw, Mapping):
            mapping = expect_mapping(raw, path)
            check_keys(mapping, ("idle_minutes", "down"), path)
            minutes_raw = mapping.get("idle_minutes")
            minutes = (
                DEFAULT_IDLE_MINUTES
                if minutes_raw is None
                else _parse_minutes(minutes_raw, join_path(path, "idle_minutes"))
            )
            down_raw = mapping.get("down")
            down = False if down_raw is None else as_bool(down_raw, join_path(path, "down"))
            return cls(minutes, down)
        raise SpecError(path, raw, f"unsupported type {type(raw).__name__}", _FIX)


def _parse_minutes(raw: Any, path: str) -> int:
    """Minutes from an int or a duration string ('30', '10m', '2h', '1d')."""
    if isinstance(raw, str):
        match = _DURATION_RE.match(raw)
        if match is None:
            raise SpecError(
                path, raw, "not a duration", "use minutes like 10 or a duration like '10m', '2h', '1d'"
            )
        raw = int(match[1]) * _MINUTES_PER_UNIT[match[2].lower()]
    return as_int(raw, path, minimum=0, maximum=MAX_IDLE_MINUTES)
