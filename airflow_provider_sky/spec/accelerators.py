"""Canonical accelerator names, case-insensitive lookup and did-you-mean.

The list is static: it covers SkyPilot's common accelerator catalog and the accelerators seen in the
AWS, GCP and Azure VM catalogs. TPUs are matched by pattern (`tpu-v<gen>[suffix][-<cores>]`).
"""

from __future__ import annotations

import re

from airflow_provider_sky.spec.errors import closest

NVIDIA_GPUS: tuple[str, ...] = (
    "A10", "A10G", "A30", "A40", "A100", "A100-80GB", "A100-80GB-SXM", "A800",
    "A4000", "A6000", "B200", "B300", "GH200",
    "H100", "H100-MEGA", "H100-NVL", "H100-NVLINK", "H100-SXM", "H200", "H200-SXM",
    "K80", "L4", "L40", "L40S", "M4000", "M60", "P100", "P4", "P4000",
    "GTX1660S", "RTX3060", "RTX3070", "RTX3080", "RTX3090", "RTX4000-Ada", "RTX4090",
    "RTX5060", "RTX5090", "RTX6000", "RTX6000-Ada", "RTX6000Ada", "RTX8000",
    "RTXA4000", "RTXA4500", "RTXA5000", "RTXA6000", "RTXPRO6000S", "RTXPRO6000WS",
    "RTX PRO Server 6000", "T4", "T4g", "V100", "V100-32GB",
)  # fmt: skip
OTHER_ACCELERATORS: tuple[str, ...] = (
    "MI25", "MI300X", "Radeon MI25", "Radeon Pro V520",
    "Gaudi HL-205", "Inferentia", "Inferentia2", "Trainium", "Trainium2",
    "Virtex UltraScale (VU9P)", "Virtex UltraScale+ (VU47P)",
)  # fmt: skip
TPUS: tuple[str, ...] = (
    "tpu-v2-8", "tpu-v3-8", "tpu-v4-8", "tpu-v5litepod-1", "tpu-v5litepod-4", "tpu-v5litepod-8",
    "tpu-v5e-4", "tpu-v5e-8", "tpu-v5p-8", "tpu-v6e-1", "tpu-v6e-4", "tpu-v6e-8",
)  # fmt: skip
"""Well-known TPU names (any name matching TPU_PATTERN is accepted)."""

CANONICAL_NAMES: tuple[str, ...] = NVIDIA_GPUS + OTHER_ACCELERATORS + TPUS
TPU_PATTERN = re.compile(r"tpu-v[0-9]+[a-z]*(-[0-9]+)?", re.IGNORECASE)

_BY_LOWER: dict[str, str] = {name.lower(): name for name in CANONICAL_NAMES}


def canonical_name(name: str) -> str | None:
    """The canonical spelling of an accelerator name (case-insensitive), or None if unknown."""
    key = name.strip().lower()
    if key in _BY_LOWER:
        return _BY_LOWER[key]
    if TPU_PATTERN.fullmatch(key):
        return key
    return None


def is_tpu(name: str) -> bool:
    """True for TPU names such as 'tpu-v4-8'."""
    return TPU_PATTERN.fullmatch(name.strip()) is not None


def suggest(name: str) -> str | None:
    """The known accelerator name closest to `name`, or None (a letter O typed for a zero is common)."""
    zeroed = canonical_name(name.replace("O", "0").replace("o", "0"))
    if zeroed is not None:
        return zeroed
    return closest(name.strip(), CANONICAL_NAMES)
