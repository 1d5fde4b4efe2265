"""Facts about accelerators: memory per device and canonical spelling."""

from __future__ import annotations

import re

# GiB of memory per device (public spec sheets).
GPU_MEMORY_GIB: dict[str, float] = {
    "A10": 24, "A10G": 24, "A100": 40, "A100-80GB": 80, "A40": 48, "B200": 180, "H100": 80,
    "H100-MEGA": 80, "H200": 141, "K80": 12, "L4": 24, "L40S": 48, "M60": 8, "P100": 16, "P4": 8,
    "T4": 16, "T4g": 16, "V100": 16, "V100-32GB": 32, "MI300X": 192, "Radeon Pro V520": 8,
}  # fmt: skip

_MIB = re.compile(r"SizeInMiB'?\"?\s*:\s*(\d+)")


def gpu_memory_gib(name: str, gpu_info: str = "") -> float:
    """Memory of one device in GiB: from the catalog's GpuInfo when it says, else from the facts table."""
    if name in GPU_MEMORY_GIB:
        return float(GPU_MEMORY_GIB[name])
    m = _MIB.search(gpu_info or "")
    if m:
        return int(m.group(1)) / 1024.0
    return float("nan")
