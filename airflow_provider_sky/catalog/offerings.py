"""The offering table: one row per (instance type, zone) with prices, stored column-wise."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

STRING_COLUMNS = ("cloud", "region", "zone", "instance_type", "accelerator")
FLOAT_COLUMNS = ("vcpus", "memory_gib", "accelerator_count", "gpu_memory_gib", "price", "spot_price")


@dataclass(frozen=True)
class Offering:
    """One purchasable VM offering. Prices are USD per instance-hour; missing values are NaN/None."""

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    vcpus: float
    memory_gib: float
    accelerator: str | None
    accelerator_count: float
    gpu_memory_gib: float
    price: float
    spot_price: float

    def hourly(self, use_spot: bool) -> float:
        """On-demand or spot price per instance-hour (NaN when not offered)."""
        return self.spot_price if use_spot else self.price

    @property
    def accelerators(self) -> dict[str, int | float] | None:
        """``{name: count}`` as the spec writes it, or None for CPU-only offerings."""
        if not self.accelerator:
            return None
        count = self.accelerator_count
        return {self.accelerator: int(count) if float(count).is_integer() else count}

    def describe(self) -> str:
        """Short human description, e.g. ``aws/us-east-1/use1-az1 p3.2xlarge (V100:1, 8 vCPU, 61 GiB) $3.06/h``."""
        where = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        acc = f"{self.accelerator}:{_num(self.accelerator_count)}, " if self.accelerator else ""
        price = f"${self.price:.4g}/h" if not math.isnan(self.price) else "no on-demand price"
        spot = f", spot ${self.spot_price:.4g}/h" if not math.isnan(self.spot_price) else ""
        return (
            f"{where} {self.instance_type} ({acc}{_num(self.vcpus)} vCPU, {_num(self.memory_gib)} GiB) "
            f"{price}{spot}"
        )


def _num(x: float) -> str:
    if math.isnan(x):
        return "?"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class OfferingTable:
    """Column-wise offerings: string columns are numpy unicode arrays ('' = missing),
    numeric columns float64 arrays (NaN = missing)."""

    __slots__ = (*STRING_COLUMNS, *FLOAT_COLUMNS)

    cloud: np.ndarray
    region: np.ndarray
    zone: np.ndarray
    instance_type: np.ndarray
    accelerator: np.ndarray
    vcpus: np.ndarray
    memory_gib: np.ndarray
    accelerator_count: np.ndarray
    gpu_memory_gib: np.ndarray
    price: np.ndarray
    spot_price: np.ndarray

    def __init__(self, **columns: Sequence) -> None:
        missing = set(self.__slots__) - set(columns)
        if missing:
            raise ValueError(f"OfferingTable is missing columns {sorted(missing)}")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"OfferingTable columns have different lengths: {sorted(lengths)}")
        for name in STRING_COLUMNS:
            setattr(self, name, np.asarray(columns[name], dtype=str))
        for name in FLOAT_COLUMNS:
            setattr(self, name, np.asarray(columns[name], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.price)

    @classmethod
    def empty(cls) -> OfferingTable:
        return cls(**{n: [] for n in cls.__slots__})

    @classmethod
    def from_offerings(cls, rows: Iterable[Offering]) -> OfferingTable:
        rows = list(rows)
        cols: dict[str, list] = {n: [] for n in cls.__slots__}
        for r in rows:
            for f in fields(Offering):
                v = getattr(r, f.name)
                cols[f.name].append(("" if v is None else v) if f.name in STRING_COLUMNS else v)
        return cls(**cols)

    @classmethod
    def concat(cls, tables: Sequence[OfferingTable]) -> OfferingTable:
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.empty()
        return cls(**{n: np.concatenate([getattr(t, n) for t in tables]) for n in cls.__slots__})

    def take(self, idx: np.ndarray) -> OfferingTable:
        """A new table with the rows ``idx``."""
        return OfferingTable(**{n: getattr(self, n)[idx] for n in self.__slots__})

    def row(self, i: int) -> Offering:
        """Row ``i`` as an :class:`Offering`."""
        i = int(i)
        return Offering(
            cloud=str(self.cloud[i]),
            region=str(self.region[i]),
            zone=str(self.zone[i]) or None,
            instance_type=str(self.instance_type[i]),
            vcpus=float(self.vcpus[i]),
            memory_gib=float(self.memory_gib[i]),
            accelerator=str(self.accelerator[i]) or None,
            accelerator_count=float(self.accelerator_count[i]),
            gpu_memory_gib=float(self.gpu_memory_gib[i]),
            price=float(self.price[i]),
            spot_price=float(self.spot_price[i]),
        )
