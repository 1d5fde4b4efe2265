"""GCP: join accelerator-only price rows with the host VM types that carry them.

GCP bills a GPU separately from its host. In the v8 catalog the GPU rows have an empty instance
type; the price of a GPU VM is host price + GPU price, per zone. Which hosts can carry which GPU is
a fact of GCP's machine families:

* A100 / A100-80GB / H100 / H200 / B200 come with fixed machine types (a2, a3, a4 families);
* L4 comes with g2-standard types;
* T4, V100, P100 and P4 attach to any N1 type up to a vCPU limit per GPU count;
* TPUs need no host VM here (TPU VMs): the row is the whole price, instance type ``TPU-VM``.

Host rows of the GPU-only families (a2, a3, a4, g2) are dropped as CPU offerings.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from airflow_provider_sky.catalog.offerings import OfferingTable

TPU_INSTANCE_TYPE = "TPU-VM"
_GPU_ONLY_FAMILIES = ("a2-", "a3-", "a4-", "g2-")

_FIXED_HOSTS: dict[tuple[str, int], tuple[str, ...]] = {
    **{("A100", n): (f"a2-highgpu-{n}g",) for n in (1, 2, 4, 8)},
    ("A100", 16): ("a2-megagpu-16g",),
    **{("A100-80GB", n): (f"a2-ultragpu-{n}g",) for n in (1, 2, 4, 8)},
    **{("H100", n): (f"a3-highgpu-{n}g",) for n in (1, 2, 4, 8)},
    ("H100-MEGA", 8): ("a3-megagpu-8g",),
    ("H200", 8): ("a3-ultragpu-8g",),
    ("B200", 8): ("a4-highgpu-8g",),
    ("L4", 1): ("g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
    ("L4", 2): ("g2-standard-24",),
    ("L4", 4): ("g2-standard-48",),
    ("L4", 8): ("g2-standard-96",),
}
# Largest N1 host (vCPUs) per GPU count for GPUs attached to N1 VMs.
_N1_MAX_VCPUS: dict[str, dict[int, float]] = {
    "T4": {1: 48, 2: 48, 4: 96},
    "V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "P100": {1: 16, 2: 32, 4: 96},
    "P4": {1: 24, 2: 48, 4: 96},
}


def join_gcp_accelerators(t: OfferingTable) -> OfferingTable:
    """Return GCP offerings with accelerator rows combined with their hosts."""
    host_mask = t.instance_type != ""
    gpu_only_host = np.zeros(len(t), dtype=bool)
    for prefix in _GPU_ONLY_FAMILIES:
        gpu_only_host |= np.char.startswith(t.instance_type, prefix)
    by_zone_type: dict[tuple[str, str], int] = {}
    n1_by_zone: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(host_mask):
        name, zone = str(t.instance_type[i]), str(t.zone[i])
        by_zone_type[(zone, name)] = int(i)
        if name.startswith("n1-"):
            n1_by_zone[zone].append(int(i))

    acc_rows = np.flatnonzero(~host_mask & (t.accelerator != ""))
    host_idx: list[int] = []  # -1 for TPU VMs (no host)
    acc_idx: list[int] = []
    for j in acc_rows:
        name, zone, count = str(t.accelerator[j]), str(t.zone[j]), float(t.accelerator_count[j])
        if name.lower().startswith("tpu"):
            host_idx.append(-1)
            acc_idx.append(int(j))
            continue
        fixed = _FIXED_HOSTS.get((name, int(count)))
        if fixed is not None:
            for host in fixed:
                i = by_zone_type.get((zone, host))
                if i is not None:
                    host_idx.append(i)
                    acc_idx.append(int(j))
            continue
        limit = _N1_MAX_VCPUS.get(name, {}).get(int(count))
        if limit is None:
            continue
        for i in n1_by_zone.get(zone, ()):
            if t.vcpus[i] <= limit:
                host_idx.append(i)
                acc_idx.append(int(j))

    h = np.asarray(host_idx, dtype=np.int64)
    a = np.asarray(acc_idx, dtype=np.int64)
    tpu = h < 0
    hs = np.where(tpu, 0, h)
    nan = np.full(len(a), np.nan)
    combined = OfferingTable(
        cloud=t.cloud[a],
        region=t.region[a],
        zone=t.zone[a],
        instance_type=np.where(tpu, TPU_INSTANCE_TYPE, t.instance_type[hs]) if len(a) else [],
        accelerator=t.accelerator[a],
        vcpus=np.where(tpu, nan, t.vcpus[hs]) if len(a) else [],
        memory_gib=np.where(tpu, nan, t.memory_gib[hs]) if len(a) else [],
        accelerator_count=t.accelerator_count[a],
        gpu_memory_gib=t.gpu_memory_gib[a],
        price=np.where(tpu, 0.0, t.price[hs]) + t.price[a] if len(a) else [],
        spot_price=np.where(tpu, 0.0, t.spot_price[hs]) + t.spot_price[a] if len(a) else [],
    )
    cpu_only = t.take(np.flatnonzero(host_mask & ~gpu_only_host))
    return OfferingTable.concat([cpu_only, combined])
