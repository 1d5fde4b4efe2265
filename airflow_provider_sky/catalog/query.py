"""What a catalog lookup asks for: one concrete resource request, as plain values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfferingQuery:
    """Filter for :meth:`Catalog.find`. ``None`` means "any"; ``*_at_least`` False means exactly."""

    accelerator: str | None = None
    accelerator_count: float | None = None
    cpus: float | None = None
    cpus_at_least: bool = True
    memory_gib: float | None = None
    memory_at_least: bool = True
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool = False

    def describe(self) -> str:
        """The request in SkyPilot words, e.g. ``accelerators A100:16, cpus 8+ in aws/eu-north-1``."""
        parts = []
        if self.accelerator:
            count = self.accelerator_count if self.accelerator_count is not None else 1
            parts.append(f"accelerators {self.accelerator}:{count:g}")
        if self.instance_type:
            parts.append(f"instance_type {self.instance_type}")
        if self.cpus is not None:
            parts.append(f"cpus {self.cpus:g}{'+' if self.cpus_at_least else ''}")
        if self.memory_gib is not None:
            parts.append(f"memory {self.memory_gib:g}{'+' if self.memory_at_least else ''}")
        if self.use_spot:
            parts.append("spot")
        text = ", ".join(parts) or "any resources"
        where = self.location_text()
        return f"{text} in {where}" if where else text

    def location_text(self) -> str:
        """``cloud/region/zone`` as far as pinned, or '' when not pinned."""
        if self.zone and not self.region and not self.cloud:
            return f"zone {self.zone}"
        if self.region and not self.cloud:
            return f"region {self.region}" + (f"/{self.zone}" if self.zone else "")
        return "/".join(p for p in (self.cloud, self.region, self.zone) if p)
