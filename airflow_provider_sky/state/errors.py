"""Errors raised by the state store."""

from __future__ import annotations


class StateError(Exception):
    """Base class of state store errors."""


class ClusterExistsError(StateError):
    """A live (not TERMINATED) cluster with this name is already recorded."""

    def __init__(self, name: str, status: str) -> None:
        super().__init__(f"cluster {name!r} already exists with status {status}")
        self.name = name
        self.status = status


class ClusterNotFoundError(StateError, KeyError):
    """No cluster with this name is recorded."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no cluster named {name!r} in the state store")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class JobNotFoundError(StateError, KeyError):
    """No job with this id is recorded on this cluster."""

    def __init__(self, cluster_name: str, job_id: int) -> None:
        super().__init__(f"no job {job_id} on cluster {cluster_name!r} in the state store")
        self.cluster_name = cluster_name
        self.job_id = job_id

    def __str__(self) -> str:
        return str(self.args[0])
