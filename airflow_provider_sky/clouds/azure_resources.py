"""Pure helpers for Azure: credentials, names, tags and the ARM request bodies (REST form).

Per region the backend keeps one resource group (``<prefix>-<region>``) holding a virtual network,
a subnet and an SSH-only network security group, created on demand and tagged ``sky-managed-by``.
Per node it creates a public IP, a NIC and the VM (OS disk ``<vm>-osdisk``); the VM marks its NIC and
disk and the NIC its public IP ``deleteOption: Delete``, so deleting the VM removes them (the backend
also deletes them by name). A cluster with ``resources.ports`` gets an inbound rule
``sky-ports-<cluster>`` in the region's NSG, aimed at its nodes' private IPs.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

CLUSTER_TAG = "sky-cluster"
RANK_TAG = "sky-node-rank"
MANAGED_BY_KEY = "sky-managed-by"
MANAGED_BY = "airflow-provider-sky"
DEFAULT_IMAGE = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest"
DEFAULT_GPU_IMAGE = "microsoft-dsvm:ubuntu-hpc:2204:latest"
VNET, SUBNET, NSG = "sky-vnet", "sky-subnet", "sky-nsg"
PORTS_PRIORITIES = (1100, 4000)  # the range the per-cluster ports rules pick their priority from
GPU_SIZE = re.compile(r"^Standard_N", re.IGNORECASE)
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,58}[a-z0-9]$")


class StaticTokenCredential:
    """A `TokenCredential` returning a fixed bearer token (for tests and pre-fetched tokens)."""

    def __init__(self, token: str, expires_in: float = 3600.0) -> None:
        self._token = token
        self._expires_in = expires_in

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time() + self._expires_in))


def credential_from_connection(fields: Mapping[str, Any]) -> Any:
    """A credential from Airflow `azure` connection fields: ``token`` (static), service principal
    (``client_id``/``login`` + ``client_secret``/``password`` + ``tenant_id``), else DefaultAzureCredential."""
    if fields.get("token"):
        return StaticTokenCredential(str(fields["token"]))
    client_id = fields.get("client_id") or fields.get("login")
    secret = fields.get("client_secret") or fields.get("password")
    tenant = fields.get("tenant_id") or fields.get("tenantId")
    from azure import identity

    if client_id and secret and tenant:
        return identity.ClientSecretCredential(tenant, client_id, secret)
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)


def resource_id(subscription: str, group: str, provider: str, kind: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{provider}/{kind}/{name}"


def group_of(rid: str) -> str:
    """The resource group of an ARM id."""
    parts = rid.split("/")
    return parts[parts.index("resourceGroups") + 1] if "resourceGroups" in parts else parts[4]


def vm_name(cluster_name: str, rank: int) -> str:
    """Deterministic VM name ``<cluster>-<rank>`` (hashed when it would not be a valid host name)."""
    name = f"{cluster_name}-{rank}"
    if _NAME_RE.match(name):
        return name
    slug = re.sub(r"[^a-z0-9-]", "-", cluster_name.lower()).strip("-") or "sky"
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{slug[:44].rstrip('-')}-{digest}-{rank}"


def zone_number(region: str, zone: str | None) -> str | None:
    """``eastus-2`` or ``2`` -> ``2``; None for a regional (non-zonal) request."""
    if not zone:
        return None
    return zone.removeprefix(f"{region}-")


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """ARM tags: no None values, keys <= 512 and values <= 256 characters, no ``<>%&\\?/`` in keys."""
    out = {}
    for key, value in tags.items():
        if value is None:
            continue
        out[re.sub(r"[<>%&\\?/]", "-", str(key))[:512]] = str(value)[:256]
    return out


def image_reference(image: str) -> dict[str, str]:
    """``publisher:offer:sku:version`` URN -> imageReference; anything else is an image resource id."""
    parts = image.split(":")
    if len(parts) == 4:
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
    return {"id": image}


def nsg_body(location: str, ssh_cidrs: tuple[str, ...]) -> dict[str, Any]:
    return {
        "location": location,
        "tags": {MANAGED_BY_KEY: MANAGED_BY},
        "properties": {
            "securityRules": [
                {
                    "name": "sky-ssh",
                    "properties": {
                        "priority": 1000, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                        "sourcePortRange": "*", "destinationPortRange": "22",
                        "sourceAddressPrefixes": list(ssh_cidrs), "destinationAddressPrefix": "*",
                    },
                }
            ]
        },
    }  # fmt: skip


def ports_rule_name(cluster_name: str) -> str:
    """``sky-ports-<cluster>`` (at most 80 characters, hashed when longer)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"sky-ports-{cluster_name}")
    if len(name) <= 80:
        return name
    return f"{name[:70]}-{hashlib.sha256(cluster_name.encode()).hexdigest()[:8]}"


def ports_priority(cluster_name: str, taken: set[int]) -> int:
    """A free inbound priority for the cluster's ports rule: a hash of the name, probing upwards."""
    low, high = PORTS_PRIORITIES
    span = high - low
    start = int(hashlib.sha256(cluster_name.encode()).hexdigest()[:8], 16) % span
    for step in range(span):
        priority = low + (start + step) % span
        if priority not in taken:
            return priority
    raise ValueError("no free NSG priority left")


def ports_rule_body(ports: tuple[str, ...], sources: tuple[str, ...], destinations: list[str], priority: int) -> dict[str, Any]:
    """Inbound TCP `ports` (``8080`` / ``10000-10010``) from `sources` to the nodes' private IPs."""
    return {
        "properties": {
            "priority": priority, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
            "sourcePortRange": "*", "destinationPortRanges": list(ports),
            "sourceAddressPrefixes": list(sources), "destinationAddressPrefixes": list(destinations),
            "description": f"{MANAGED_BY}: resources.ports",
        }
    }  # fmt: skip


def vnet_body(location: str, nsg_id: str, cidr: str = "10.100.0.0/16") -> dict[str, Any]:
    return {
        "location": location,
        "tags": {MANAGED_BY_KEY: MANAGED_BY},
        "properties": {
            "addressSpace": {"addressPrefixes": [cidr]},
            "subnets": [{"name": SUBNET, "properties": {"addressPrefix": cidr.replace("/16", "/20"),
                                                        "networkSecurityGroup": {"id": nsg_id}}}],
        },
    }  # fmt: skip


def public_ip_body(location: str, zone: str | None, tags: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location": location,
        "tags": dict(tags),
        "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
    }
    if zone:
        body["zones"] = [zone]
    return body


def nic_body(location: str, subnet_id: str, public_ip_id: str | None, tags: Mapping[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = {"subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic"}
    if public_ip_id:
        config["publicIPAddress"] = {"id": public_ip_id, "properties": {"deleteOption": "Delete"}}
    return {
        "location": location,
        "tags": dict(tags),
        "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": config}]},
    }


def vm_body(
    *,
    location: str,
    zone: str | None,
    size: str,
    name: str,
    nic_id: str,
    tags: Mapping[str, str],
    image: str,
    disk_size_gb: int,
    ssh_user: str,
    public_key: str,
    use_spot: bool,
) -> dict[str, Any]:
    """The VirtualMachine resource for a PUT (REST form)."""
    props: dict[str, Any] = {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {
            "imageReference": image_reference(image),
            "osDisk": {
                "name": f"{name}-osdisk",
                "createOption": "FromImage",
                "diskSizeGB": disk_size_gb,
                "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
        },
        "osProfile": {
            "computerName": name,
            "adminUsername": ssh_user,
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {"publicKeys": [{"path": f"/home/{ssh_user}/.ssh/authorized_keys", "keyData": public_key}]},
            },
        },
        "networkProfile": {
            "networkInterfaces": [{"id": nic_id, "properties": {"primary": True, "deleteOption": "Delete"}}]
        },
    }
    if use_spot:
        props.update(priority="Spot", evictionPolicy="Delete", billingProfile={"maxPrice": -1})
    body: dict[str, Any] = {"location": location, "tags": dict(tags), "properties": props}
    if zone:
        body["zones"] = [zone]
    return body


def power_state(vm: Any) -> str | None:
    """``running`` / ``deallocated`` / ``stopped`` / ... from a VM's instance view, else None."""
    view = getattr(vm, "instance_view", None)
    for status in getattr(view, "statuses", None) or ():
        code = status.code or ""
        if code.startswith("PowerState/"):
            return code.split("/", 1)[1]
    return None
