"""SkyJobTrigger: follow a sky job from the triggerer, streaming its log, without a worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_sky.hooks.sky import SkyHook


class SkyJobTrigger(BaseTrigger):
    """Wait for a job on a cluster to finish, logging its new output by byte offset.

    All kwargs are JSON values; credentials are re-read from the `sky` connection on the triggerer.
    The event payload is ``{"status", "cluster", "job_id", "log_offset", "message"}``.
    """

    def __init__(
        self,
        *,
        cluster_name: str,
        job_id: int,
        log_offset: int = 0,
        sky_conn_id: str = SkyHook.default_conn_name,
        poll_interval: float = 2.0,
        down_on_kill: bool = True,
        secret_count: int = 0,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.job_id = int(job_id)
        self.log_offset = int(log_offset)
        self.sky_conn_id = sky_conn_id
        self.poll_interval = float(poll_interval)
        self.down_on_kill = down_on_kill
        self.secret_count = secret_count

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "cluster_name": self.cluster_name,
                "job_id": self.job_id,
                "log_offset": self.log_offset,
                "sky_conn_id": self.sky_conn_id,
                "poll_interval": self.poll_interval,
                "down_on_kill": self.down_on_kill,
                "secret_count": self.secret_count,
            },
        )

    def _core(self) -> Any:
        return SkyHook(sky_conn_id=self.sky_conn_id).core

    async def run(self) -> AsyncIterator[TriggerEvent]:
        core = await asyncio.to_thread(self._core)
        offset = self.log_offset
        try:
            while True:
                status = await asyncio.to_thread(core.job_status, self.cluster_name, self.job_id)
                terminal = status is None or status.is_terminal
                text, offset = await asyncio.to_thread(
                    core.read_log, self.cluster_name, self.job_id, offset, terminal
                )
                if text and not self.secret_count:
                    # Jobs with secrets are not echoed here: the worker prints them redacted on resume.
                    for line in text.splitlines():
                        self.log.info("%s", line)
                if terminal:
                    yield TriggerEvent(
                        {
                            "status": status.value if status is not None else "LOST",
                            "cluster": self.cluster_name,
                            "job_id": self.job_id,
                            "log_offset": offset if not self.secret_count else self.log_offset,
                            "message": "",
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:  # surface as an event so the task fails with the reason
            yield TriggerEvent(
                {
                    "status": "ERROR",
                    "cluster": self.cluster_name,
                    "job_id": self.job_id,
                    "log_offset": offset,
                    "message": f"{type(exc).__name__}: {exc}",
                }
            )

    async def on_kill(self) -> None:
        """The user killed the deferred task: cancel the job and tear down what the task owns."""
        core = await asyncio.to_thread(self._core)
        await asyncio.to_thread(core.cancel, self.cluster_name, self.job_id)
        if self.down_on_kill:
            await asyncio.to_thread(core.down, self.cluster_name)
