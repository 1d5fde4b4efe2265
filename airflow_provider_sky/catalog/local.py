"""The ``local`` pseudo-cloud: this machine, free, so the local backend can be planned."""

from __future__ import annotations

import os

from airflow_provider_sky.catalog.offerings import Offering

LOCAL_CLOUD = "local"


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return float("nan")


def local_offering() -> Offering:
    """One offering for this machine: price 0, region and zone ``local``.

    The local backend emulates a cluster with processes, so it is planned for any cpus/memory
    request (it does not refuse oversubscription); it has no accelerators.
    """
    return Offering(
        cloud=LOCAL_CLOUD,
        region=LOCAL_CLOUD,
        zone=LOCAL_CLOUD,
        instance_type=LOCAL_CLOUD,
        vcpus=float(os.cpu_count() or 1),
        memory_gib=round(_memory_gib(), 1),
        accelerator=None,
        accelerator_count=0.0,
        gpu_memory_gib=float("nan"),
        price=0.0,
        spot_price=0.0,
    )
