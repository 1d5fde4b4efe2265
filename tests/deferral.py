"""Drive a deferrable operator in-process the way Airflow does: execute -> TaskDeferred -> the trigger,
re-created from its serialized kwargs (JSON round trip, as the triggerer stores them) -> the method the
deferral named, with the event's payload."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

from airflow.sdk.exceptions import TaskDeferred


def recreate(trigger: Any) -> Any:
    """The trigger as the triggerer builds it: from its classpath and JSON kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


def first_event(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event; the payload, JSON round-tripped (as stored for the task)."""

    async def run() -> Any:
        return await anext(trigger.run())

    return json.loads(json.dumps(asyncio.run(run()).payload))


def resume(op: Any, context: dict[str, Any], deferral: TaskDeferred) -> tuple[Any, dict[str, Any]]:
    """Run the deferral's trigger (re-created from JSON) and call the operator's resume method.

    Returns (the resume method's result, the event); a new deferral raises TaskDeferred.
    """
    event = first_event(recreate(deferral.trigger))
    method = getattr(op, deferral.method_name)
    return method(context, event, **json.loads(json.dumps(deferral.kwargs or {}))), event


def run_deferrable(op: Any, context: dict[str, Any], max_deferrals: int = 10) -> tuple[Any, list[Any]]:
    """execute() and every deferral to the end; (the result, the triggers in order)."""
    triggers: list[Any] = []
    try:
        return op.execute(context), triggers
    except TaskDeferred as deferral:
        pending: TaskDeferred | None = deferral
    while pending is not None and len(triggers) < max_deferrals:
        triggers.append(pending.trigger)
        try:
            result, _ = resume(op, context, pending)
            return result, triggers
        except TaskDeferred as again:
            pending = again
    raise AssertionError(f"still deferring after {max_deferrals} deferrals")
