"""`JobRecovery`: how a managed job recovers from preemption and errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sky.spec.coerce import as_int, as_str, check_keys, expect_mapping
from airflow_provider_sky.spec.errors import SpecError, did_you_mean, join_path

STRATEGIES: tuple[str, ...] = ("FAILOVER", "EAGER_NEXT_REGION")
MAX_RESTARTS = 10**6


@dataclass(frozen=True)
class JobRecovery:
    """Recovery `strategy` (None = the default) and restarts allowed on user-code errors."""

    strategy: str | None = None
    max_restarts_on_errors: int = 0

    def __post_init__(self) -> None:
        if self.strategy is not None:
            object.__setattr__(self, "strategy", _parse_strategy(self.strategy, "job_recovery.strategy"))
        restarts = as_int(
            self.max_restarts_on_errors,
            "job_recovery.max_restarts_on_errors",
            minimum=0,
            maximum=MAX_RESTARTS,
        )
        object.__setattr__(self, "max_restarts_on_errors", restarts)

    def to_yaml_value(self) -> str | dict[str, Any]:
        """SkyPilot YAML form: the strategy string alone, or the full mapping."""
        if self.max_restarts_on_errors == 0 and self.strategy is not None:
            return self.strategy
        out: dict[str, Any] = {}
        if self.strategy is not None:
            out["strategy"] = self.strategy
        out["max_restarts_on_errors"] = self.max_restarts_on_errors
        return out

    @classmethod
    def parse(cls, raw: Any, path: str) -> JobRecovery | None:
        """From a strategy name or {strategy, max_restarts_on_errors}."""
        if raw is None or isinstance(raw, JobRecovery):
            return raw
        if isinstance(raw, str):
            return cls(_parse_strategy(raw, path))
        if isinstance(raw, Mapping):
            mapping = expect_mapping(raw, path)
            check_keys(mapping, ("strategy", "max_restarts_on_errors"), path)
            strategy = mapping.get("strategy")
            if strategy is not None:
                strategy = _parse_strategy(strategy, join_path(path, "strategy"))
            restarts_raw = mapping.get("max_restarts_on_errors")
            restarts = (
                0
                if restarts_raw is None
                else as_int(
                    restarts_raw, join_path(path, "max_restarts_on_errors"), minimum=0, maximum=MAX_RESTARTS
                )
            )
            return cls(strategy, restarts)
        raise SpecError(
            path,
            raw,
            f"unsupported type {type(raw).__name__}",
            "use a strategy name (FAILOVER or EAGER_NEXT_REGION) or {strategy: ..., max_restarts_on_errors: N}",
        )


def _parse_strategy(raw: Any, path: str) -> str:
    name = as_str(raw, path, what="a strategy name").strip().upper().replace("-", "_")
    if name not in STRATEGIES:
        raise SpecError(
            path,
            raw,
            "unknown recovery strategy",
            did_you_mean(name, STRATEGIES, "use FAILOVER or EAGER_NEXT_REGION"),
        )
    return name
