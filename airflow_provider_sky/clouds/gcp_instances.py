"""Pure helpers for GCE instances: names, labels, request ids, accelerators and the insert body."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

CLUSTER_LABEL = "sky-cluster"
RANK_LABEL = "sky-node-rank"
MANAGED_BY_KEY = "sky-managed-by"
MANAGED_BY = "airflow-provider-sky"
LABELS_METADATA_KEY = "sky-labels"  # the exact (unsanitized) labels, as JSON
RUNNING = "RUNNING"
STOPPED_STATES = ("STOPPED", "TERMINATED", "SUSPENDED")  # GCE "TERMINATED" means stopped, not deleted
DEFAULT_IMAGE = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts"
DEFAULT_GPU_IMAGE = "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204-py310"
_NAMESPACE = uuid.UUID("6f1c3e4a-93a1-4c43-9a56-2c1e0d5b7a11")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

# Canonical accelerator name -> GCE accelerator type.
ACCELERATOR_TYPES = {
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "P100": "nvidia-tesla-p100",
    "P4": "nvidia-tesla-p4",
    "K80": "nvidia-tesla-k80",
    "L4": "nvidia-l4",
    "A100": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "H100": "nvidia-h100-80gb",
    "H100-MEGA": "nvidia-h100-mega-80gb",
    "H200": "nvidia-h200-141gb",
    "B200": "nvidia-b200",
}
# Families whose GPUs come with the machine type (no guestAccelerators in the request).
BUILT_IN_GPU_FAMILIES = ("a2-", "a3-", "a4-", "g2-")


def last_segment(url: str | None) -> str:
    """``.../zones/us-central1-a`` -> ``us-central1-a``."""
    return (url or "").rstrip("/").rsplit("/", 1)[-1]


def region_of_zone(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def label_value(value: Any) -> str:
    """A valid GCE label value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def label_key(key: Any) -> str:
    text = label_value(key)
    return text if text[:1].isalpha() else f"k-{text}"[:63]


def clean_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """GCE labels (sanitized keys and values, None dropped, at most 64)."""
    out = {label_key(k): label_value(v) for k, v in labels.items() if v is not None}
    return dict(list(out.items())[:64])


def instance_name(cluster_name: str, rank: int) -> str:
    """Deterministic instance name ``<cluster>-<rank>`` (hashed when the cluster name does not fit)."""
    name = f"{cluster_name}-{rank}"
    if _NAME_RE.match(name):
        return name
    slug = re.sub(r"[^a-z0-9-]", "-", cluster_name.lower()).strip("-") or "sky"
    if not slug[0].isalpha():
        slug = f"s-{slug}"
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{slug[:48].rstrip('-')}-{digest}-{rank}"


def request_id(cluster_name: str, zone: str, name: str, attempt: int | str) -> str:
    """Deterministic ``requestId`` (a UUID): GCE answers a repeated insert with the first operation."""
    return str(uuid.uuid5(_NAMESPACE, f"{cluster_name}|{zone}|{name}|{attempt}"))


def accelerator_of(resources: Any) -> tuple[str, int] | None:
    """(GCE accelerator type, count) of ``resources.accelerators``, or None."""
    accs = getattr(resources, "accelerators", None) or {}
    if not accs:
        return None
    name, count = next(iter(accs.items()))
    gce = ACCELERATOR_TYPES.get(str(name).upper(), str(name).lower())
    return gce, int(float(count))


def rank_of(instance: Any) -> int:
    rank = (instance.labels or {}).get(RANK_LABEL, "")
    return int(rank) if rank.isdigit() else 1 << 30


def exact_labels(instance: Any) -> dict[str, str]:
    """The labels as given at launch (from metadata), else the sanitized GCE labels."""
    for item in getattr(getattr(instance, "metadata", None), "items", None) or ():
        if item.key == LABELS_METADATA_KEY:
            try:
                return {str(k): str(v) for k, v in json.loads(item.value).items()}
            except ValueError:
                break
    return dict(instance.labels or {})


def instance_body(
    *,
    name: str,
    zone: str,
    machine_type: str,
    labels: Mapping[str, str],
    image: str,
    disk_size_gb: int,
    disk_type: str,
    ssh_user: str,
    public_key: str,
    use_spot: bool,
    accelerator: tuple[str, int] | None,
    network: str,
    subnetwork: str | None,
    network_tags: tuple[str, ...],
    external_ip: bool,
    service_account: str | None,
) -> dict[str, Any]:
    """The ``Instance`` resource for instances.insert (proto field names; proto-plus takes dicts)."""
    gpu = accelerator is not None or machine_type.startswith(BUILT_IN_GPU_FAMILIES)
    interface: dict[str, Any] = {"network": network}
    if subnetwork:
        interface["subnetwork"] = subnetwork
    if external_ip:
        interface["access_configs"] = [{"name": "External NAT", "type_": "ONE_TO_ONE_NAT"}]
    scheduling: dict[str, Any] = {
        "on_host_maintenance": "TERMINATE" if gpu or use_spot else "MIGRATE",
        "automatic_restart": not use_spot,
    }
    if use_spot:
        scheduling.update(provisioning_model="SPOT", instance_termination_action="DELETE")
    body: dict[str, Any] = {
        "name": name,
        "machine_type": f"zones/{zone}/machineTypes/{machine_type}",
        "labels": clean_labels(labels),
        "disks": [
            {
                "boot": True,
                "auto_delete": True,
                "initialize_params": {
                    "source_image": image,
                    "disk_size_gb": disk_size_gb,
                    "disk_type": f"zones/{zone}/diskTypes/{disk_type}",
                    "labels": clean_labels({MANAGED_BY_KEY: MANAGED_BY, CLUSTER_LABEL: labels.get(CLUSTER_LABEL)}),
                },
            }
        ],
        "network_interfaces": [interface],
        "metadata": {
            "items": [
                {"key": "ssh-keys", "value": f"{ssh_user}:{public_key} {ssh_user}"},
                {"key": LABELS_METADATA_KEY, "value": json.dumps(dict(labels), sort_keys=True)},
            ]
        },
        "scheduling": scheduling,
        "tags": {"items": list(network_tags)},
    }
    if accelerator is not None and not machine_type.startswith(BUILT_IN_GPU_FAMILIES):
        kind, count = accelerator
        body["guest_accelerators"] = [
            {"accelerator_type": f"zones/{zone}/acceleratorTypes/{kind}", "accelerator_count": count}
        ]
    if service_account:
        body["service_accounts"] = [
            {"email": service_account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ]
    return body
