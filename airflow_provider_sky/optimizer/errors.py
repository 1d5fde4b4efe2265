"""Errors raised by the optimizer."""

from __future__ import annotations


class OptimizerError(ValueError):
    """The optimizer cannot produce a plan for the given tasks."""


class InfeasibleTaskError(OptimizerError):
    """No (unblocked) catalog offering satisfies a task's resources."""

    def __init__(self, task: str, message: str):
        super().__init__(message)
        self.task = task
