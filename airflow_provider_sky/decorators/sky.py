"""`@task.sky`: run a TaskFlow function on a sky cluster.

``mode="python"`` (default) ships the function's source and its JSON arguments to the cluster, runs
it there with ``python`` and brings its JSON return value back as the task's XCom.
``mode="bash"``: the function returns a shell command (built on the worker), which runs on the cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.exceptions import AirflowException

from airflow_provider_sky.operators.sky import SkyTaskOperator
from airflow_provider_sky.spec import SpecError

RESULT_MARK = "__SKY_AIRFLOW_RESULT__ "
_PLACEHOLDER = "# set at run time by @task.sky"
_MODES = ("python", "bash")


def _payload(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Base64 JSON of the call's arguments; a non-JSON argument is an error naming it."""
    for index, value in enumerate(args):
        _check_json(f"op_args[{index}]", value)
    for key, value in kwargs.items():
        _check_json(f"op_kwargs.{key}", value)
    return base64.b64encode(json.dumps({"args": list(args), "kwargs": dict(kwargs)}).encode()).decode()


def _check_json(field: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            field, value, f"cannot be sent to the cluster ({exc})", "pass JSON values (str, number, bool, list, dict)"
        ) from exc


def python_script(source: str, function_name: str, payload_b64: str, python: str = "python3") -> str:
    """The `run` command that calls the function on the node and prints its result on the head node."""
    return (
        f"{python} - <<'__SKY_PY_EOF__'\n"
        "import base64 as _b64, json as _json, os as _os\n"
        f"{source}\n"
        f"_payload = _json.loads(_b64.b64decode({payload_b64!r}))\n"
        f"_result = {function_name}(*_payload['args'], **_payload['kwargs'])\n"
        "if _os.environ.get('SKYPILOT_NODE_RANK', '0') == '0':\n"
        f"    print({RESULT_MARK!r} + _json.dumps(_result), flush=True)\n"
        "__SKY_PY_EOF__\n"
    )


def parse_result(lines: Sequence[str]) -> Any:
    """The function's return value from the head node's output lines (the last result mark)."""
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise AirflowException("the function's return value was not found in the job output")


class _SkyDecoratedOperator(DecoratedOperator, SkyTaskOperator):
    """The operator behind `@task.sky`."""

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *SkyTaskOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **SkyTaskOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.sky"
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        mode: str = "python",
        python: str = "python3",
        **kwargs: Any,
    ) -> None:
        if mode not in _MODES:
            raise SpecError("mode", mode, "is not a @task.sky mode", f"use one of {list(_MODES)}")
        self.mode = mode
        self.python = python
        super().__init__(
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, run=_PLACEHOLDER, **kwargs
        )

    def _build_run(self, context: Any) -> None:
        kwargs = dict(self.determine_kwargs(context))
        if self.mode == "bash":
            command = self.python_callable(*self.op_args, **kwargs)
            if not isinstance(command, str) or not command.strip():
                raise TypeError("a @task.sky(mode='bash') function must return a non-empty shell command")
            self.run = command
            self.render_template_fields(context)
            return
        wanted = {k: v for k, v in kwargs.items() if k in self.op_kwargs or not _is_context_key(k, context)}
        self.run = python_script(
            self.get_python_source(),
            self.python_callable.__name__,
            _payload(self.op_args, wanted),
            self.python,
        )

    def execute(self, context: Any) -> Any:
        self._build_run(context)
        return self._result(SkyTaskOperator.execute(self, context))

    def execute_complete(self, context: Any, event: dict[str, Any], started: float | None = None) -> Any:
        return self._result(SkyTaskOperator.execute_complete(self, context, event, started))

    def _result(self, placement: dict[str, Any]) -> Any:
        if self.mode == "bash":
            return placement
        lines = self.hook.core.log_tail(placement["cluster"], placement["job_id"], 500)
        head_lines = [line for line in lines if not line.startswith("(worker")]
        value = parse_result(head_lines)
        self.log.info("Placement: %s", {k: placement.get(k) for k in ("cluster", "cloud", "region", "job_id")})
        return value


def _is_context_key(key: str, context: Any) -> bool:
    try:
        return key in context
    except TypeError:
        return False


def sky_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Run the decorated function on a sky cluster (see module docs); kwargs go to SkyTaskOperator."""
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_SkyDecoratedOperator,
        **kwargs,
    )
