"""Triggers of a deferrable sky task: the launch (with failover) and the job wait, without a worker slot.

Every blocking broker call runs in a thread (the triggerer's event loop never waits on a cloud API or
an SSH round trip), with the caller's context variables, so what the broker logs (launch attempts)
goes to the task's trigger log like the trigger's own lines. Kwargs are JSON; credentials are
re-read from the connections on the triggerer, never serialized.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.provision import deferred

#: Broker calls of all sky triggers of a triggerer process (launches may take minutes each, so they
#: do not borrow the event loop's small default executor).
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sky-trigger")
#: How long `on_kill` waits for a launch in flight before tearing down anyway (the triggerer gives
#: on_kill 30 s by default; the launch tears down after itself when it returns later).
KILL_WAIT_SECONDS = 20.0
#: Longest error message an event carries.
MAX_MESSAGE = 8000
#: Teardowns of killed triggers still running (a reference keeps each task alive to its end).
_KILLS: set[asyncio.Future[Any]] = set()


class _SkyTrigger(BaseTrigger):
    """Shared plumbing: the broker core from the connection, and blocking calls in threads."""

    sky_conn_id: str

    def _core(self) -> Any:
        return SkyHook(sky_conn_id=self.sky_conn_id).core

    async def _blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` in a thread. A cancelled trigger stops waiting, but the call itself runs to its
        end (`_inflight`), so `on_kill` can wait for it instead of racing it."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        future = loop.run_in_executor(_EXECUTOR, call)
        self._inflight = future
        return await asyncio.shield(future)

    async def _to_the_end(self, work: Coroutine[Any, Any, None]) -> None:
        """Run an `on_kill` body to its end even when `on_kill` itself is cancelled: Airflow 3.3's
        triggerer cancels a killed trigger again at every state sync (about once a second), which
        would otherwise stop the cancel or the teardown midway and leave the cluster behind."""
        task = asyncio.ensure_future(work)
        _KILLS.add(task)
        task.add_done_callback(_KILLS.discard)
        await asyncio.shield(task)

    async def _settle(self) -> None:
        """Wait (bounded) for a blocking call a cancellation left running."""
        inflight = getattr(self, "_inflight", None)
        if inflight is not None and not inflight.done():
            try:
                await asyncio.wait_for(asyncio.shield(inflight), KILL_WAIT_SECONDS)
            except Exception:  # its own failure, or our timeout: tear down anyway
                self.log.warning("a broker call was still running when the task was killed")


class SkyLaunchTrigger(_SkyTrigger):
    """Launch (or adopt, or reuse) a task's cluster with failover, then fire one event.

    The event is ``{"kind": "launched" | "launch_error" | "cancelled", "cluster", "created", "reused", "placement",
    "attempts", "last_attempts", ["spillover"], ["message"]}``. A re-created trigger (triggerer
    restart) launches again by the same name, which adopts the cluster the first run started.
    """

    def __init__(
        self,
        *,
        cluster_name: str,
        task_spec: dict[str, Any],
        owner: dict[str, Any],
        placement: dict[str, Any] | None = None,
        spill_policy: dict[str, Any] | None = None,
        sky_conn_id: str = SkyHook.default_conn_name,
        down_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.task_spec = dict(task_spec)
        self.owner = dict(owner)
        self.placement = dict(placement) if placement else None
        self.spill_policy = dict(spill_policy) if spill_policy else None
        self.sky_conn_id = sky_conn_id
        self.down_on_kill = bool(down_on_kill)
        self._cancelled = threading.Event()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "cluster_name": self.cluster_name,
                "task_spec": self.task_spec,
                "owner": self.owner,
                "placement": self.placement,
                "spill_policy": self.spill_policy,
                "sky_conn_id": self.sky_conn_id,
                "down_on_kill": self.down_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            core = await self._blocking(self._core)
            where = (
                f"{self.placement.get('cloud')}/{self.placement.get('region')}" if self.placement else "any"
            )
            self.log.info("Provisioning cluster %s in the triggerer (planned: %s)", self.cluster_name, where)
            event = await self._blocking(
                deferred.launch, core, self.task_spec, self.cluster_name, deferred.owner_from(self.owner),
                self.placement, self.spill_policy, cancelled=self._cancelled,
                down_if_cancelled=self.down_on_kill, on_log=self.log.info,
            )  # fmt: skip
        except Exception as exc:  # surfaced as an event: the task fails with the reason
            self.log.warning("Provisioning %s failed: %s", self.cluster_name, exc)
            yield TriggerEvent(
                {
                    "kind": "launch_error",
                    "cluster": self.cluster_name,
                    "message": f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE],
                }
            )
            return
        p = event["placement"]
        self.log.info(
            "Cluster %s %s in the triggerer on %s/%s (%s x%d) after %d launch attempt(s)",
            self.cluster_name, "reused" if event["reused"] else "launched", p["cloud"], p["region"],
            p["instance_type"], p["num_nodes"], event["attempts"],
        )  # fmt: skip
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """The deferred task was killed mid-launch: let the launch finish (bounded), tear down."""
        self._cancelled.set()
        await self._to_the_end(self._kill())

    async def _kill(self) -> None:
        await self._settle()
        core = await asyncio.to_thread(self._core)
        done = await asyncio.to_thread(deferred.kill, core, self.cluster_name, None, self.down_on_kill)
        self.log.info("Task killed while provisioning: %s", "; ".join(done) or "nothing to tear down")


class SkyJobTrigger(_SkyTrigger):
    """Wait for a job on a cluster to finish, logging its new output by byte offset.

    All kwargs are JSON values; credentials are re-read from the `sky` connection on the triggerer.
    The event payload is ``{"kind": "job", "status", "cluster", "job_id", "log_offset", "message"}``:
    ``log_offset`` is how far the trigger logged, so the resumed task prints only the rest. A job
    with secrets is not echoed here (the trigger cannot know the values to redact): the worker prints
    it, redacted, on resume. A re-created trigger follows the same job id (it never submits).
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

    def _event(self, status: str, offset: int, message: str = "") -> TriggerEvent:
        return TriggerEvent(
            {
                "kind": "job",
                "status": status,
                "cluster": self.cluster_name,
                "job_id": self.job_id,
                "log_offset": offset,
                "message": message[:MAX_MESSAGE],
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        offset = self.log_offset
        try:
            core = await self._blocking(self._core)
            while True:
                status = await self._blocking(core.job_status, self.cluster_name, self.job_id)
                terminal = status is None or status.is_terminal
                if self.secret_count:  # the worker prints it all, redacted, on resume
                    if terminal:
                        yield self._event(status.value if status is not None else "LOST", self.log_offset)
                        return
                else:
                    text, offset = await self._blocking(
                        core.read_log, self.cluster_name, self.job_id, offset, terminal
                    )
                    for line in text.splitlines():
                        self.log.info("%s", line)
                    if terminal:
                        yield self._event(status.value if status is not None else "LOST", offset)
                        return
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:  # surface as an event so the task fails (or recovers) with the reason
            yield self._event("ERROR", offset, f"{type(exc).__name__}: {exc}")

    async def on_kill(self) -> None:
        """The user killed the deferred task: cancel the job and tear down what the task owns."""
        await self._to_the_end(self._kill())

    async def _kill(self) -> None:
        await self._settle()
        core = await asyncio.to_thread(self._core)
        done = await asyncio.to_thread(deferred.kill, core, self.cluster_name, self.job_id, self.down_on_kill)
        self.log.info("Task killed while its job ran: %s", "; ".join(done))
