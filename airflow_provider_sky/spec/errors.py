"""The one error type the spec layer raises for bad input, plus message helpers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

_MAX_REPR = 200


def safe_repr(value: Any, limit: int = _MAX_REPR) -> str:
    """`repr(value)`, shortened to `limit` characters, and never raising."""
    try:
        text = repr(value)
    except Exception:  # e.g. ints beyond sys.get_int_max_str_digits()
        text = f"<unprintable {type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class SpecError(ValueError):
    """Bad task/resources input: names the field path, the bad value and how to fix it.

    `str(err)` is `"<field>: <problem> (got <value!r>); <fix>"`.
    """

    def __init__(self, field: str, value: Any, problem: str, fix: str) -> None:
        self.field = field or "<root>"
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.field}: {problem} (got {safe_repr(value)}); {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.value, self.problem, self.fix))

    def with_prefix(self, prefix: str) -> SpecError:
        """The same error with `prefix` prepended to the field path."""
        if not prefix:
            return self
        field = prefix if self.field == "<root>" else join_path(prefix, self.field)
        return SpecError(field, self.value, self.problem, self.fix)


def join_path(parent: str, child: str) -> str:
    """Dotted field path: `join_path("resources", "cpus") == "resources.cpus"`."""
    if not parent:
        return child
    if child.startswith("["):
        return parent + child
    return f"{parent}.{child}"


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to `word` (case-insensitive), or None when nothing is close."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    key = word.lower()[:100]
    if key in by_lower:
        return by_lower[key]
    prefixed = [choice for lower, choice in by_lower.items() if len(key) >= 3 and lower.startswith(key)]
    if len(prefixed) == 1:
        return prefixed[0]
    matches = difflib.get_close_matches(key, list(by_lower), n=1, cutoff=cutoff)
    return by_lower[matches[0]] if matches else None


def did_you_mean(word: str, choices: Iterable[str], otherwise: str) -> str:
    """A fix text: "did you mean 'x'?" when something is close, else `otherwise`."""
    match = closest(word, choices)
    return f"did you mean {match!r}?" if match else otherwise
