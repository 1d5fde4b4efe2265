"""Which files of a local directory are synced to a node.

`.git` is always skipped. Patterns come from the top-level `.skyignore`, or from `.gitignore`
when there is no `.skyignore`. Only simple globs are understood (what most ignore files use):
`name`, `*.pyc`, `dir/`, `/top-level-only`, `sub/path/*.log`, `**/name`. Negations (`!x`) and
nested ignore files are not supported and are skipped.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ALWAYS_EXCLUDED = (".git",)
IGNORE_FILES = (".skyignore", ".gitignore")


@dataclass(frozen=True)
class _Pattern:
    glob: str
    anchored: bool  # match the whole relative path, not just the name
    dir_only: bool

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.glob)
        return fnmatch.fnmatchcase(PurePosixPath(rel).name, self.glob)


@dataclass(frozen=True)
class SyncFilter:
    """Exclusion rules for one directory tree."""

    patterns: tuple[_Pattern, ...] = ()

    @classmethod
    def from_lines(cls, lines: list[str]) -> SyncFilter:
        patterns = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith(("#", "!")):
                continue
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            while line.startswith("**/"):
                line = line[3:]
                # "**/x" is the same as an unanchored "x" when x has no slash.
            anchored = "/" in line
            line = line.lstrip("/")
            if line:
                patterns.append(_Pattern(line, anchored, dir_only))
        return cls(tuple(patterns))

    @classmethod
    def from_dir(cls, root: str | os.PathLike[str]) -> SyncFilter:
        """Rules from `root/.skyignore`, else `root/.gitignore`, else none."""
        for name in IGNORE_FILES:
            path = Path(root) / name
            if path.is_file():
                return cls.from_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())
        return cls()

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """Whether the relative POSIX path `rel` is skipped."""
        if PurePosixPath(rel).name in ALWAYS_EXCLUDED:
            return True
        return any(p.matches(rel, is_dir) for p in self.patterns)


def iter_sync_files(root: str | os.PathLike[str], rules: SyncFilter | None = None) -> Iterator[Path]:
    """Relative paths under `root` to sync (directories before their contents, no symlink following)."""
    rules = rules if rules is not None else SyncFilter.from_dir(root)
    base = Path(root)
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base)
        keep = []
        for name in sorted(dirnames):
            rel = rel_dir / name
            is_link = (base / rel).is_symlink()
            if rules.excluded(rel.as_posix(), is_dir=not is_link):
                continue
            yield rel
            if not is_link:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = rel_dir / name
            if not rules.excluded(rel.as_posix(), is_dir=False):
                yield rel
