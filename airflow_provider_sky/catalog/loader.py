"""Load catalogs: the bundled default, or a SkyPilot v8 directory; cached per path and mtime."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.v8 import load_v8_dir

DEFAULT_CATALOG_DIR = Path(__file__).with_name("data")
CATALOG_ENV = "SKY_CATALOG_DIR"


def _date_of(root: Path) -> str | None:
    stamp = root / "DATE"
    return stamp.read_text().strip() if stamp.is_file() else None


def _mtime_key(root: Path) -> tuple[float, ...]:
    return tuple(p.stat().st_mtime for p in sorted(root.glob("*/vms.csv")))


@functools.lru_cache(maxsize=8)
def _load(root: str, key: tuple[float, ...], include_local: bool) -> Catalog:
    path = Path(root)
    return Catalog(load_v8_dir(path), source=str(path), date=_date_of(path), include_local=include_local)


def load_catalog(path: str | os.PathLike | None = None, *, include_local: bool = True) -> Catalog:
    """The catalog in ``path`` (a v8 directory), else ``$SKY_CATALOG_DIR``, else the bundled default."""
    chosen = path if path is not None else os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG_DIR
    root = Path(chosen).expanduser().resolve()
    return _load(str(root), _mtime_key(root) if root.is_dir() else (), include_local)


def default_catalog() -> Catalog:
    """The bundled catalog (small, dated; see ``catalog/data/SOURCE.md``)."""
    return load_catalog(DEFAULT_CATALOG_DIR)
