"""Cluster and job status enums."""

from __future__ import annotations

from enum import StrEnum


class ClusterStatus(StrEnum):
    """Life cycle of a cluster: INIT -> UP -> (STOPPED <-> UP) -> TERMINATED; any -> ERROR."""

    INIT = "INIT"
    UP = "UP"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    @property
    def is_live(self) -> bool:
        """Whether cloud resources may still exist (everything but TERMINATED)."""
        return self is not ClusterStatus.TERMINATED


class JobStatus(StrEnum):
    """Life cycle of a job: PENDING -> SETTING_UP -> RUNNING -> one terminal status."""

    PENDING = "PENDING"
    SETTING_UP = "SETTING_UP"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    @property
    def is_terminal(self) -> bool:
        """Whether the job has finished (no further transitions expected)."""
        return self in _TERMINAL_JOB

    @classmethod
    def terminal(cls) -> frozenset[JobStatus]:
        """All terminal statuses."""
        return _TERMINAL_JOB

    @classmethod
    def non_terminal(cls) -> frozenset[JobStatus]:
        """All statuses of a job that has not finished."""
        return frozenset(cls) - _TERMINAL_JOB


_TERMINAL_JOB = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FAILED_SETUP, JobStatus.CANCELLED, JobStatus.LOST}
)
