"""`Task`: one SkyPilot-style task (a setup + run script on N nodes with given resources)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sky.spec.coerce import (
    as_int,
    as_number,
    as_str,
    check_keys,
    expect_mapping,
    number_out,
    plain_data,
    str_mapping,
    type_name,
)  # fmt: skip
from airflow_provider_sky.spec.dependencies import check_dependencies
from airflow_provider_sky.spec.errors import SpecError
from airflow_provider_sky.spec.file_mounts import FileMount, parse_data_sizes, parse_file_mounts
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.yaml_io import dump, dump_all, load_documents, read_source

TASK_KEYS: tuple[str, ...] = (
    "name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "inputs", "outputs",
    "setup", "run", "estimated_hours", "depends_on", "config", "experimental",
)  # fmt: skip
"""Keys accepted at the top of a task YAML (SkyPilot's plus `estimated_hours` and `depends_on`)."""

_UNSUPPORTED_KEYS = {
    "service": "remove it; SkyServe services are not supported by this provider",
    "event_callback": "remove it; use Airflow callbacks (on_success_callback / on_failure_callback) instead",
    "volumes": "remove it; use file_mounts instead",
    "pool": "remove it; job pools are not supported by this provider",
}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME_HINT = "use letters, digits and '_' (not starting with a digit)"
_SCRIPT_FIX = "give a shell script as a string (use `|` for several lines)"
MAX_NUM_NODES = 100_000
REDACTED = "<redacted>"


@dataclass(repr=False)
class Task:
    """A task. Fields are validated and normalized on construction (and by `validate()`).

    `envs` / `secrets` values are strings; None means "must be provided before running"
    (checked by `validate_for_run`). `secrets` are masked in `repr`.
    """

    name: str | None = None
    workdir: str | None = None
    num_nodes: int = 1
    resources: Resources = field(default_factory=Resources)
    setup: str | None = None
    run: str | None = None
    envs: dict[str, str | None] = field(default_factory=dict)
    secrets: dict[str, str | None] = field(default_factory=dict)
    file_mounts: dict[str, FileMount] = field(default_factory=dict)
    inputs: dict[str, float | None] = field(default_factory=dict)
    outputs: dict[str, float | None] = field(default_factory=dict)
    estimated_hours: float | None = None
    depends_on: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    experimental: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalize every field (raises SpecError); run again after changing fields."""
        for name, value in _normalize(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        ).items():
            object.__setattr__(self, name, value)

    def validate_for_run(self) -> None:
        """Extra checks before running: every env var and secret has a value."""
        for key in ("envs", "secrets"):
            for name, value in getattr(self, key).items():
                if value is None:
                    raise SpecError(
                        f"{key}.{name}", None, "has no value but must be provided before the task runs",
                        f"give {name} a value (in the YAML or as an override, e.g. task.update_{key}(...))",
                    )  # fmt: skip

    def update_envs(self, envs: Mapping[str, Any]) -> None:
        """Set or override env vars (validated like the `envs` field)."""
        self.envs = {**self.envs, **_env_mapping(envs, "envs")}
        self.validate()

    def update_secrets(self, secrets: Mapping[str, Any]) -> None:
        """Set or override secrets (validated like the `secrets` field)."""
        self.secrets = {**self.secrets, **_env_mapping(secrets, "secrets")}
        self.validate()

    # ----- YAML form -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Task:
        """Parse one task mapping in SkyPilot YAML form; `path` prefixes field names in errors."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpecError(
                path or "<root>", data, f"a task must be a mapping, not {type_name(data)}",
                "start the document with keys such as name:, resources: and run:",
            )  # fmt: skip
        try:
            mapping = expect_mapping(data, "")
            check_keys(mapping, TASK_KEYS, "", _UNSUPPORTED_KEYS)
            return cls(**mapping)
        except SpecError as err:
            raise err.with_prefix(path) from None

    def to_dict(self, *, redact_secrets: bool = False) -> dict[str, Any]:
        """SkyPilot YAML form (empty fields omitted); `redact_secrets` masks secret values."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.workdir is not None:
            out["workdir"] = self.workdir
        if self.num_nodes != 1:
            out["num_nodes"] = self.num_nodes
        resources = self.resources.to_dict()
        if resources:
            out["resources"] = resources
        if self.envs:
            out["envs"] = dict(self.envs)
        if self.secrets:
            out["secrets"] = _masked(self.secrets) if redact_secrets else dict(self.secrets)
        if self.file_mounts:
            out["file_mounts"] = {dest: mount.to_yaml_value() for dest, mount in self.file_mounts.items()}
        for key in ("inputs", "outputs"):
            sizes: dict[str, float | None] = getattr(self, key)
            if sizes:
                out[key] = {uri: None if size is None else number_out(size) for uri, size in sizes.items()}
        for key in ("setup", "run"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.estimated_hours is not None:
            out["estimated_hours"] = number_out(self.estimated_hours)
        if self.depends_on:
            out["depends_on"] = list(self.depends_on)
        for key in ("config", "experimental"):
            if getattr(self, key) is not None:
                out[key] = plain_data(getattr(self, key), key)
        return out

    @classmethod
    def from_yaml(cls, text_or_path: str | bytes | os.PathLike[str]) -> Task:
        """Parse a single-task YAML (text or file path). Chains need `load_tasks`."""
        chain_name, tasks = load_chain(text_or_path)
        if len(tasks) != 1 or chain_name is not None:
            raise SpecError(
                "<root>", f"{len(tasks)} tasks", "the YAML holds a chain of several tasks",
                "use spec.load_tasks() or spec.load_chain() for multi-document YAML",
            )  # fmt: skip
        return tasks[0]

    def to_yaml(self, *, redact_secrets: bool = False) -> str:
        """YAML text that `from_yaml` reads back into an equal Task."""
        return dump(self.to_dict(redact_secrets=redact_secrets))

    def __repr__(self) -> str:
        parts = [f"{key}={value!r}" for key, value in self.to_dict(redact_secrets=True).items()]
        return "Task(" + ", ".join(parts) + ")"


def load_chain(text_or_path: str | bytes | os.PathLike[str]) -> tuple[str | None, list[Task]]:
    """(chain name or None, tasks) from YAML text or a file; one task per YAML document.

    A leading document holding only `name` (SkyPilot's chain header) names the chain.
    """
    text, source = read_source(text_or_path)
    documents = load_documents(text, source)
    if not documents:
        raise SpecError(
            "<root>", text[:40], "the YAML holds no task", "add a task with at least a run: command"
        )
    chain_name: str | None = None
    first = 0
    header = documents[0]
    if len(documents) > 1 and isinstance(header, Mapping) and list(header) == ["name"]:
        chain_name = as_str(header["name"], "documents[0].name", what="a chain name", numbers_ok=True)
        first = 1
    multi = len(documents) > 1
    prefixes = [f"documents[{i}]" if multi else "" for i in range(first, len(documents))]
    tasks = [Task.from_dict(doc, prefix) for doc, prefix in zip(documents[first:], prefixes, strict=True)]
    if multi:  # a single task may depend on tasks defined elsewhere (e.g. other Airflow tasks)
        check_dependencies([t.name for t in tasks], [t.depends_on for t in tasks], prefixes)
    return chain_name, tasks


def load_tasks(text_or_path: str | bytes | os.PathLike[str]) -> list[Task]:
    """The tasks of a (possibly multi-document) task YAML, in file order."""
    return load_chain(text_or_path)[1]


def dump_chain(tasks: list[Task], name: str | None = None) -> str:
    """Multi-document YAML for `tasks` (with a chain header when `name` is given); `load_chain` reads it back."""
    documents: list[Any] = [{"name": name}] if name is not None else []
    documents += [task.to_dict() for task in tasks]
    if name is None and len(tasks) > 1 and list(documents[0]) == ["name"]:
        documents[0]["run"] = None  # a name-only first document would read back as a chain header
    return dump_all(documents)


# ----- normalization ---------------------------------------------------------------------------------
def _normalize(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = raw["name"]
    out["name"] = None if name is None else as_str(name, "name", what="a task name", numbers_ok=True).strip()
    workdir = raw["workdir"]
    out["workdir"] = None if workdir is None else as_str(workdir, "workdir", what="a local directory path")
    num_nodes = raw["num_nodes"]
    out["num_nodes"] = (
        1 if num_nodes is None else as_int(num_nodes, "num_nodes", minimum=1, maximum=MAX_NUM_NODES)
    )
    out["resources"] = Resources.from_dict(raw["resources"], "resources")
    out["setup"] = _script(raw["setup"], "setup")
    out["run"] = _script(raw["run"], "run")
    out["envs"] = _env_mapping(raw["envs"], "envs")
    out["secrets"] = _env_mapping(raw["secrets"], "secrets")
    for key in out["envs"]:
        if key in out["secrets"]:
            raise SpecError(
                f"secrets.{key}", REDACTED, "is also set in envs", "set it in envs or in secrets, not both"
            )
    out["file_mounts"] = parse_file_mounts(raw["file_mounts"], "file_mounts")
    out["inputs"] = parse_data_sizes(raw["inputs"], "inputs")
    out["outputs"] = parse_data_sizes(raw["outputs"], "outputs")
    hours = raw["estimated_hours"]
    out["estimated_hours"] = None if hours is None else as_number(hours, "estimated_hours", exclusive=True)
    out["depends_on"] = _depends_on(raw["depends_on"], out["name"])
    for key in ("config", "experimental"):
        value = raw[key]
        out[key] = None if value is None else plain_data(expect_mapping(value, key), key)
    return out


def _script(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if callable(value):
        raise SpecError(path, value, "Python callables are not supported", _SCRIPT_FIX)
    if isinstance(value, list | tuple):
        raise SpecError(
            path, value, "expected one script, not a list", "join the commands into one multi-line string"
        )
    raise SpecError(path, value, f"expected a string, not {type_name(value)}", _SCRIPT_FIX)


def _env_mapping(value: Any, path: str) -> dict[str, str | None]:
    try:
        return str_mapping(value, path, allow_none=True, key_re=_ENV_NAME_RE, key_hint=_ENV_NAME_HINT)
    except SpecError as err:
        if (
            path == "secrets"
            and err.value is not None
            and err.field != path
            and err.problem != "invalid name"
        ):
            raise SpecError(err.field, REDACTED, err.problem, err.fix) from None  # never echo a secret
        raise


def _depends_on(value: Any, own_name: str | None) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise SpecError(
            "depends_on",
            value,
            f"expected a list of task names, not {type_name(value)}",
            "use [task_a, task_b]",
        )
    names: list[str] = []
    for i, item in enumerate(items):
        dep = as_str(item, f"depends_on[{i}]", what="a task name", numbers_ok=True).strip()
        if dep in names:
            raise SpecError(f"depends_on[{i}]", dep, "listed twice", "list each task once")
        if dep == own_name:
            raise SpecError(f"depends_on[{i}]", dep, "a task cannot depend on itself", "remove it")
        names.append(dep)
    return names


def _masked(secrets: Mapping[str, str | None]) -> dict[str, str | None]:
    return {key: None if value is None else REDACTED for key, value in secrets.items()}
