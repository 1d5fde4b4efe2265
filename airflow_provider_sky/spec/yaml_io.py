"""Reading and writing task YAML: source detection, strict loading with line numbers, readable dumps."""

from __future__ import annotations

import os
from typing import Any

import yaml

from airflow_provider_sky.spec.errors import SpecError

YAML_SUFFIXES = (".yaml", ".yml")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (run, setup) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def read_source(text_or_path: str | bytes | os.PathLike[str]) -> tuple[str, str | None]:
    """(YAML text, file path or None). A str is a path when it is one line and names a file or ends in .yaml/.yml."""
    path: str | None = None
    if isinstance(text_or_path, os.PathLike):
        path = os.fspath(text_or_path)
    elif isinstance(text_or_path, bytes):
        try:
            return text_or_path.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            raise SpecError(
                "<root>", text_or_path[:40], "YAML is not valid UTF-8", "save the file as UTF-8"
            ) from exc
    elif isinstance(text_or_path, str):
        candidate = text_or_path.strip()
        if "\n" not in candidate and (candidate.endswith(YAML_SUFFIXES) or os.path.isfile(candidate)):
            path = candidate
        else:
            return text_or_path, None
    else:
        raise SpecError(
            "<root>", text_or_path, f"expected YAML text or a file path, not {type(text_or_path).__name__}",
            "pass a str, bytes or os.PathLike",
        )  # fmt: skip
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), path
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError(
            "<file>", path, f"cannot read the task file: {reason}", "check the path and permissions"
        ) from exc


def load_documents(text: str, source: str | None = None) -> list[Any]:
    """All YAML documents in `text` (empty documents dropped); parse problems become SpecError with the line."""
    where = f" in {source}" if source else ""
    try:
        return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line_text = ""
        if mark is not None:
            lines = text.splitlines()
            line_text = lines[mark.line] if 0 <= mark.line < len(lines) else ""
            location = f" at line {mark.line + 1}, column {mark.column + 1}"
        else:
            location = ""
        problem = f"invalid YAML{where}{location}: {exc.problem or exc.context or 'syntax error'}"
        raise SpecError(
            "<yaml>", line_text, problem, "fix the YAML syntax (check indentation, quoting and colons)"
        ) from exc
    except RecursionError as exc:
        raise SpecError(
            "<yaml>", text[:40], f"YAML{where} is nested too deeply", "simplify the document"
        ) from exc
    except (
        Exception
    ) as exc:  # yaml.YAMLError and value errors from the safe constructors (bad dates, huge ints)
        raise SpecError(
            "<yaml>", text[:40], f"cannot read YAML{where}: {exc}", "fix the value or quote it"
        ) from exc


def dump(data: Any) -> str:
    """One YAML document."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_all(documents: list[Any]) -> str:
    """Several YAML documents separated by '---'."""
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
