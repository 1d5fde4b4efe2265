"""`Quantity`: an exact or at-least amount, as in `cpus: 8` or `memory: "32+"`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.spec.coerce import parse_number
from airflow_provider_sky.spec.errors import SpecError

_QUANTITY_RE = re.compile(
    r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"\s*(?P<unit>[a-zA-Z]*)\s*(?P<plus>\+)?\s*$"
)
_MEMORY_UNITS = {"": 1.0, "g": 1.0, "gb": 1.0, "gib": 1.0, "t": 1024.0, "tb": 1024.0, "tib": 1024.0}


@dataclass(frozen=True)
class Quantity:
    """An amount (`value`) that must be matched exactly, or met or exceeded when `at_least`."""

    value: float
    at_least: bool = False

    def __post_init__(self) -> None:
        value = parse_number(self.value)
        if value is None or value <= 0:
            raise SpecError("quantity", self.value, "must be a finite number > 0", "use e.g. 8 or '8+'")
        if not isinstance(self.at_least, bool):
            raise SpecError("quantity.at_least", self.at_least, "expected true or false", "use True or False")
        object.__setattr__(self, "value", float(value))

    def satisfied_by(self, amount: float) -> bool:
        """True when `amount` meets this requirement."""
        if self.at_least:
            return amount >= self.value or math.isclose(amount, self.value)
        return math.isclose(amount, self.value)

    def __str__(self) -> str:
        value = self.value
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
        return text + ("+" if self.at_least else "")

    @classmethod
    def parse(cls, raw: Any, path: str, *, memory: bool = False) -> Quantity:
        """A Quantity from 8, 0.5, "8", "8+" (and for memory also "32GB", "32GB+", "1TB")."""
        if isinstance(raw, Quantity):
            return raw
        example = "'32+' or '32GB'" if memory else "'8' or '8+'"
        fix = f"use a number like {example}"
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number = parse_number(raw)
            if number is None or number <= 0:
                raise SpecError(path, raw, "must be a finite number > 0", fix)
            return cls(number)
        if not isinstance(raw, str):
            raise SpecError(path, raw, f"expected a number or string, not {type(raw).__name__}", fix)
        match = _QUANTITY_RE.match(raw) if len(raw) < 64 else None
        if match is None:
            raise SpecError(path, raw, "not a valid amount", fix)
        unit = match["unit"].lower()
        scale = _MEMORY_UNITS.get(unit) if memory else (1.0 if unit == "" else None)
        if scale is None:
            units = "GB or TB" if memory else "no unit"
            raise SpecError(path, raw, f"unknown unit {match['unit']!r}", f"{fix} ({units})")
        number_text = raw[match.start("num") : match.start("unit")].strip()
        number = float(number_text) * scale
        if not math.isfinite(number) or number <= 0:
            raise SpecError(path, raw, "must be a finite number > 0", fix)
        return cls(number, match["plus"] is not None)
