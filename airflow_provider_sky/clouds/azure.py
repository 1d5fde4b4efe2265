"""Azure backend (azure-mgmt-compute / -network / -resource, azure-identity).

Identity lives in tags: every VM (and its NIC and public IP) carries ``sky-cluster``, ``sky-managed-by``,
the owner tags (``sky-dag-id`` / ``sky-run-id`` / ``sky-task-id``) and ``sky-node-rank``; `find` lists the
subscription's VMs (with power state) and filters by tags. VM, NIC and IP names are deterministic
(``<cluster>-<rank>``, ``-nic``, ``-ip``) and ARM's PUT is idempotent, so a retried launch updates the
same resources instead of creating a second set. Zones are named ``<region>-<n>`` (``eastus-1``).
If any VM fails (allocation, quota) every node of the attempt is deleted before the error is raised;
VMs that failed allocation stay in ARM in state Failed, so they are deleted too. A partial launch
raises `CapacityError`.

Termination deletes the VMs, their NICs, public IPs and OS disks, and the cluster's ports rule in the
region's NSG; then, with ``cleanup_empty_groups`` (default on), a region resource group that we created
(tagged ``sky-managed-by``, named ``<prefix>-<region>``) and that holds nothing but our vnet and NSG is
deleted too, so nothing is left behind. A launch that meets a group deleted meanwhile re-creates it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds import aws_resources as keys
from airflow_provider_sky.clouds import azure_resources as ar
from airflow_provider_sky.clouds.azure_errors import AZURE, FIX_CREDENTIALS, classify_azure_error, error_code
from airflow_provider_sky.clouds.base import ClusterHandle
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    QuotaError,
    TransientError,
)
from airflow_provider_sky.clouds.vm import SshVmCloud

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner
    from airflow_provider_sky.spec.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_REGIONS = (
    "eastus", "eastus2", "westus2", "westus3", "centralus", "southcentralus", "northeurope", "westeurope",
    "uksouth", "swedencentral", "japaneast", "southeastasia", "australiaeast",
)  # fmt: skip
COMPUTE, NETWORK = "Microsoft.Compute", "Microsoft.Network"
RunnerFactory = Callable[[str, ClusterHandle, int], "CommandRunner"]
_TRUE = ("1", "true", "yes", "on")
_GONE_GROUP = ("ResourceGroupNotFound", "ResourceGroupBeingDeleted", "InvalidResourceReference")
_RANK = (CapacityError, QuotaError, CredentialsError, ConfigError, TransientError, ProvisionError)


def _client_class(kind: str) -> Any:
    """The SDK client class; azure-mgmt-resource >= 24 moved its client to ``azure.mgmt.resource.resources``."""
    if kind == "resource":
        try:
            return importlib.import_module("azure.mgmt.resource.resources").ResourceManagementClient
        except (ImportError, AttributeError):
            return importlib.import_module("azure.mgmt.resource").ResourceManagementClient
    module, cls = {"compute": ("azure.mgmt.compute", "ComputeManagementClient"),
                   "network": ("azure.mgmt.network", "NetworkManagementClient")}[kind]  # fmt: skip
    return getattr(importlib.import_module(module), cls)


def _most_telling(errors: Sequence[ProvisionError]) -> ProvisionError:
    return min(errors, key=lambda e: next(i for i, cls in enumerate(_RANK) if isinstance(e, cls)))


class AzureCloud(SshVmCloud):
    """Azure VM clusters; see the module docstring for identity, idempotency and partial launches.

    `credential` is an azure-identity / azure-core ``TokenCredential`` (None: DefaultAzureCredential);
    `base_url` overrides ``https://management.azure.com`` and `connection_verify` the CA bundle
    (tests aim both at a local fake).
    """

    name = AZURE

    def __init__(
        self,
        subscription_id: str,
        *,
        credential: Any = None,
        base_url: str | None = None,
        connection_verify: str | bool | None = None,
        regions: Sequence[str] | None = None,
        zones: Mapping[str, Sequence[str]] | None = None,
        default_zones: Sequence[str] = ("1", "2", "3"),
        default_region: str = "eastus",
        resource_group_prefix: str = "sky-airflow",
        image: str = ar.DEFAULT_IMAGE,
        gpu_image: str = ar.DEFAULT_GPU_IMAGE,
        ssh_user: str = "azureuser",
        key_dir: str | Path | None = None,
        ssh_cidrs: Sequence[str] = ("0.0.0.0/0",),
        launch_timeout: float = 900.0,
        poll_interval: float = 5.0,
        api_retries: int = 3,
        use_private_ips: bool = False,
        runner_factory: RunnerFactory | None = None,
        ports_cidrs: Sequence[str] = ("0.0.0.0/0",),
        cleanup_empty_groups: bool = True,
    ) -> None:
        self.subscription_id = subscription_id
        self._credential = credential
        self.base_url = base_url
        self.connection_verify = connection_verify
        self._regions = tuple(regions or DEFAULT_REGIONS)
        self._zones = {r: tuple(z) for r, z in (zones or {}).items()}
        self.default_zones = tuple(default_zones)
        self.default_region = default_region
        self.resource_group_prefix = resource_group_prefix
        self.image = image
        self.gpu_image = gpu_image
        self.ssh_user = ssh_user
        self.key_dir = Path(key_dir).expanduser() if key_dir else keys.default_key_dir()
        self.ssh_cidrs = tuple(ssh_cidrs)
        self.launch_timeout = launch_timeout
        self.poll_interval = poll_interval
        self.api_retries = api_retries
        self.use_private_ips = use_private_ips
        self.runner_factory = runner_factory
        self.ports_cidrs = tuple(ports_cidrs)
        self.cleanup_empty_groups = cleanup_empty_groups
        self._lock = threading.RLock()
        self._clients: dict[str, Any] = {}
        self._prepared: dict[str, tuple[str, str]] = {}  # region -> (resource group, subnet id)

    @classmethod
    def from_connection(cls, fields: Mapping[str, Any], **options: Any) -> AzureCloud:
        """Build from an Airflow ``azure`` connection: login = client id, password = client secret,
        extras ``tenantId`` and ``subscriptionId`` (``extra__azure__`` prefixes accepted); optional
        ``token`` (static bearer token), ``base_url``, ``ca_bundle``, ``resource_group_prefix``, ``image``,
        ``gpu_image``. Without a service principal: DefaultAzureCredential."""
        extra = fields.get("extra") if isinstance(fields.get("extra"), Mapping) else {}
        merged = {**extra, **{k: v for k, v in fields.items() if k != "extra" and v not in (None, "")}}

        def get(key: str) -> Any:
            return merged.get(key) or merged.get(f"extra__azure__{key}")

        subscription = get("subscriptionId") or get("subscription_id")
        if not subscription:
            raise ConfigError(
                "no Azure subscription configured",
                cloud=AZURE,
                fix="set the extra subscriptionId in the azure connection",
            )
        creds = {"token": get("token"), "login": get("login") or get("client_id"),
                 "password": get("password") or get("client_secret"), "tenant_id": get("tenantId") or get("tenant_id")}  # fmt: skip
        try:
            credential = ar.credential_from_connection(creds)
        except ImportError as exc:
            raise ConfigError(f"the azure cloud needs azure-identity ({exc})", cloud=AZURE,
                              fix="pip install 'airflow-provider-sky[azure]'") from exc  # fmt: skip
        for key, option in (("base_url", "base_url"), ("ca_bundle", "connection_verify"),
                            ("resource_group_prefix", "resource_group_prefix"), ("image", "image"),
                            ("gpu_image", "gpu_image")):  # fmt: skip
            if get(key) and option not in options:
                options[option] = get(key)
        return cls(str(subscription), credential=credential, **options)

    def __repr__(self) -> str:
        return f"AzureCloud(subscription_id={self.subscription_id!r}, base_url={self.base_url!r})"

    def configure_from_extras(self, extra: Mapping[str, Any]) -> None:
        """The shared SSH settings plus ``azure_ssh_cidrs`` / ``azure_ports_cidrs`` (comma-separated) and
        ``azure_cleanup_empty_groups`` (false: keep the region resource groups, vnets and NSGs)."""
        super().configure_from_extras(extra)
        raw = extra.get("azure_cleanup_empty_groups")
        if raw not in (None, ""):
            self.cleanup_empty_groups = str(raw).strip().lower() in _TRUE

    # ---- clients ----------------------------------------------------------------------------
    def _client(self, kind: str) -> Any:
        """The ``compute``, ``network`` or ``resource`` management client, built once."""
        with self._lock:
            if kind not in self._clients:
                try:
                    client_cls = _client_class(kind)
                    if self._credential is None:
                        self._credential = ar.credential_from_connection({})
                except ImportError as exc:
                    raise ConfigError(
                        f"the azure cloud needs the Azure SDK ({exc})",
                        cloud=AZURE,
                        fix="pip install 'airflow-provider-sky[azure]'",
                    ) from exc
                kwargs: dict[str, Any] = {"polling_interval": self.poll_interval, "retry_total": self.api_retries}
                if self.base_url:
                    kwargs["base_url"] = self.base_url
                if self.connection_verify is not None:
                    kwargs["connection_verify"] = self.connection_verify
                self._clients[kind] = client_cls(self._credential, self.subscription_id, **kwargs)
            return self._clients[kind]

    def _call(self, what: Callable[[], Any], **where: Any) -> Any:
        try:
            return what()
        except ProvisionError:
            raise
        except Exception as exc:
            raise classify_azure_error(exc, **where) from exc

    def _lros(self, starts: Sequence[Callable[[], Any]], **where: Any) -> list[Any]:
        """Start every long-running operation, then wait for all; each outcome is a result or a
        `ProvisionError` (a synchronous rejection stops starting the rest)."""
        pollers: list[Any] = []
        for start in starts:
            try:
                pollers.append(start())
            except Exception as exc:
                pollers.append(classify_azure_error(exc, **where))
                break
        outcomes = []
        for poller in pollers:
            if isinstance(poller, ProvisionError):
                outcomes.append(poller)
                continue
            try:
                outcomes.append(poller.result(timeout=self.launch_timeout))
            except Exception as exc:
                outcomes.append(classify_azure_error(exc, **where))
        return outcomes

    def _wait_all(self, starts: Sequence[Callable[[], Any]], **where: Any) -> list[Any]:
        outcomes = self._lros(starts, **where)
        errors = [o for o in outcomes if isinstance(o, ProvisionError)]
        if errors:
            raise _most_telling(errors)
        return outcomes

    # ---- locations --------------------------------------------------------------------------
    def regions(self) -> list[str]:
        return list(self._regions)

    def zones(self, region: str) -> list[str]:
        """``<region>-<n>`` for the configured zone numbers (empty for a region without zones)."""
        return [f"{region}-{z}" for z in self._zones.get(region, self.default_zones)]

    def resource_group(self, region: str) -> str:
        return f"{self.resource_group_prefix}-{region}"

    # ---- prerequisites ----------------------------------------------------------------------
    def _prepare(self, region: str) -> tuple[str, str]:
        """(resource group, subnet id) of `region`, created on first use (idempotent PUTs)."""
        with self._lock:
            if region in self._prepared:
                return self._prepared[region]
        group = self.resource_group(region)
        resource, network = self._client("resource"), self._client("network")
        tags = {ar.MANAGED_BY_KEY: ar.MANAGED_BY}
        self._call(lambda: resource.resource_groups.create_or_update(group, {"location": region, "tags": tags}),
                   region=region)  # fmt: skip
        nsg = self._existing_nsg(group, region)
        if nsg is None:  # a PUT replaces the rule list: never re-PUT an NSG holding clusters' ports rules
            [nsg] = self._wait_all(
                [lambda: network.network_security_groups.begin_create_or_update(group, ar.NSG, ar.nsg_body(region, self.ssh_cidrs))],
                region=region,
            )  # fmt: skip
        self._wait_all(
            [lambda: network.virtual_networks.begin_create_or_update(group, ar.VNET, ar.vnet_body(region, nsg.id))],
            region=region,
        )
        subnet = ar.resource_id(self.subscription_id, group, NETWORK, "virtualNetworks", ar.VNET) + f"/subnets/{ar.SUBNET}"
        with self._lock:
            self._prepared[region] = (group, subnet)
        return group, subnet

    def _existing_nsg(self, group: str, region: str) -> Any | None:
        """The region NSG when it exists with its SSH rule, else None."""
        from azure.core.exceptions import ResourceNotFoundError

        network = self._client("network")
        try:
            nsg = network.network_security_groups.get(group, ar.NSG)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise classify_azure_error(exc, region=region) from exc
        return nsg if any(r.name == "sky-ssh" for r in nsg.security_rules or ()) else None

    # ---- describe ---------------------------------------------------------------------------
    def _vms(self, tags: Mapping[str, str], region: str | None = None) -> list[Any]:
        """The subscription's VMs carrying all `tags` (with power state), in `region` or anywhere."""
        compute = self._client("compute")
        found = self._call(lambda: list(compute.virtual_machines.list_all(status_only="true")), region=region)
        out = [
            vm for vm in found
            if all((vm.tags or {}).get(k) == v for k, v in tags.items()) and (region is None or vm.location == region)
        ]  # fmt: skip
        return sorted(out, key=lambda vm: (int((vm.tags or {}).get(ar.RANK_TAG, "999999")), vm.name))

    def _cluster(self, cluster_name: str, region: str | None = None) -> list[Any]:
        return self._vms({ar.CLUSTER_TAG: cluster_name, ar.MANAGED_BY_KEY: ar.MANAGED_BY}, region)

    def _ips(self, vm: Any) -> tuple[str, str]:
        """(private, public) IP of a VM's primary NIC ("" when unknown)."""
        network = self._client("network")
        refs = vm.network_profile.network_interfaces if vm.network_profile else []
        if not refs:
            return "", ""
        nic_id = refs[0].id
        from azure.core.exceptions import ResourceNotFoundError

        try:
            nic = network.network_interfaces.get(ar.group_of(nic_id), nic_id.rsplit("/", 1)[-1])
        except ResourceNotFoundError:
            return "", ""
        config = nic.ip_configurations[0]
        public = ""
        if config.public_ip_address is not None and config.public_ip_address.id:
            pip_id = config.public_ip_address.id
            try:
                public = network.public_ip_addresses.get(ar.group_of(pip_id), pip_id.rsplit("/", 1)[-1]).ip_address or ""
            except ResourceNotFoundError:
                public = ""
        return config.private_ip_address or "", public

    def _handle(self, cluster_name: str, vms: Sequence[Any]) -> ClusterHandle:
        head = vms[0]
        ips = [self._call(lambda v=vm: self._ips(v), region=head.location) for vm in vms]
        private = [p for p, _ in ips]
        public = [q for _, q in ips]
        chosen = [pub if pub and not self.use_private_ips else prv for prv, pub in ips]
        zone = f"{head.location}-{head.zones[0]}" if head.zones else None
        return ClusterHandle(
            cloud=AZURE,
            cluster_name=cluster_name,
            region=head.location,
            zone=zone,
            instance_type=head.hardware_profile.vm_size if head.hardware_profile else None,
            num_nodes=len(vms),
            node_ips=tuple(chosen),
            node_ids=tuple(vm.name for vm in vms),
            extra={
                "resource_group": ar.group_of(head.id),
                "vm_ids": [vm.id for vm in vms],
                "private_ips": private,
                "public_ips": public,
                "states": sorted({ar.power_state(vm) or (vm.provisioning_state or "unknown").lower() for vm in vms}),
                "use_spot": head.priority == "Spot",
                "ssh_user": self.ssh_user,
                "key_path": str(self.key_path()),
            },
        )

    def find(self, cluster_name: str, region: str | None = None) -> ClusterHandle | None:
        """The live cluster by tags, in `region` or any region."""
        vms = self._cluster(cluster_name, region)
        return self._handle(cluster_name, vms) if vms else None

    def status(self, cluster_name: str, region: str | None = None) -> str | None:
        """ "UP" (all running), "STOPPED" (all deallocated/stopped), "INIT" (in between) or None."""
        vms = self._cluster(cluster_name, region)
        if not vms:
            return None
        states = {ar.power_state(vm) for vm in vms}
        return "UP" if states == {"running"} else "STOPPED" if states <= {"deallocated", "stopped"} else "INIT"

    def list_managed(self) -> list[dict[str, Any]]:
        """Every cluster carrying ``sky-managed-by`` (for the orphan reaper)."""
        groups: dict[str, list[Any]] = {}
        for vm in self._vms({ar.MANAGED_BY_KEY: ar.MANAGED_BY}):
            groups.setdefault((vm.tags or {}).get(ar.CLUSTER_TAG, vm.name), []).append(vm)
        out = []
        for name, vms in sorted(groups.items()):
            states = {ar.power_state(vm) for vm in vms}
            out.append(
                {
                    "name": name,
                    "cloud": AZURE,
                    "region": vms[0].location,
                    "labels": {k: v for k, v in (vms[0].tags or {}).items() if k != ar.RANK_TAG},
                    "status": "UP" if states == {"running"} else "INIT",
                    "created_at": getattr(vms[0], "time_created", None),
                    "handle": self._handle(name, vms),
                }
            )
        return out

    # ---- launch -----------------------------------------------------------------------------
    def launch(
        self,
        cluster_name: str,
        num_nodes: int,
        resources: Resources | None,
        region: str | None = None,
        zone: str | None = None,
        instance_type: str | None = None,
        use_spot: bool = False,
        labels: Mapping[str, str] | None = None,
        *,
        attempt: int | None = None,
    ) -> ClusterHandle:
        """Launch `num_nodes` VMs in one zone (or the region), or return the cluster when it exists.

        `attempt` is accepted for the failover loop; ARM PUTs with deterministic names are idempotent.
        """
        zone = zone or getattr(resources, "zone", None)
        region = region or getattr(resources, "region", None)
        if not region and zone and "-" in zone:
            region = zone.rsplit("-", 1)[0]
        region = region or self.default_region
        zone_no = ar.zone_number(region, zone)
        zone = f"{region}-{zone_no}" if zone_no else None
        size = instance_type or getattr(resources, "instance_type", None)
        use_spot = bool(use_spot or getattr(resources, "use_spot", False))
        where = {"region": region, "zone": zone, "instance_type": size}
        if not size:
            raise ConfigError("Azure needs a VM size", cloud=AZURE, fix="set resources.instance_type or let the optimizer pick one", **where)
        if num_nodes < 1:
            raise ConfigError(f"num_nodes must be at least 1 (got {num_nodes})", cloud=AZURE, fix="set num_nodes >= 1", **where)
        existing = self.find(cluster_name, region)
        if existing is not None:
            return self._adopt(existing, num_nodes)
        try:
            return self._create(cluster_name, num_nodes, resources, region, zone, zone_no, size, use_spot, labels)
        except ProvisionError as exc:
            if not exc.message.startswith(_GONE_GROUP):
                raise
            log.info("azure: resource group of %s was deleted meanwhile; preparing it again", region)
            with self._lock:
                self._prepared.pop(region, None)
            return self._create(cluster_name, num_nodes, resources, region, zone, zone_no, size, use_spot, labels)

    def _create(
        self, cluster_name: str, num_nodes: int, resources: Resources | None, region: str, zone: str | None,
        zone_no: str | None, size: str, use_spot: bool, labels: Mapping[str, str] | None,
    ) -> ClusterHandle:  # fmt: skip
        where = {"region": region, "zone": zone, "instance_type": size}
        group, subnet = self._prepare(region)
        _, public_key = keys.ensure_local_key(self.key_dir)
        wanted_image = getattr(resources, "image_id", None)
        if isinstance(wanted_image, Mapping):
            wanted_image = wanted_image.get(region)
        gpu = bool(getattr(resources, "accelerators", None)) or bool(ar.GPU_SIZE.match(size))
        image = wanted_image or (self.gpu_image if gpu else self.image)
        base_tags = {**dict(getattr(resources, "labels", None) or {}), **dict(labels or {})}
        base_tags.update({ar.CLUSTER_TAG: cluster_name, ar.MANAGED_BY_KEY: ar.MANAGED_BY})
        names = [ar.vm_name(cluster_name, rank) for rank in range(num_nodes)]
        tags = [ar.clean_tags({**base_tags, ar.RANK_TAG: str(rank)}) for rank in range(num_nodes)]
        network, compute = self._client("network"), self._client("compute")
        disk = int(getattr(resources, "disk_size", None) or 256)
        log.info("azure: create %s x%d %s %s%s", cluster_name, num_nodes, size, zone or region, " (spot)" if use_spot else "")
        outcomes: list[Any] = []
        try:
            ips = [] if self.use_private_ips else self._wait_all(
                [lambda n=n, t=t: network.public_ip_addresses.begin_create_or_update(
                    group, f"{n}-ip", ar.public_ip_body(region, zone_no, t)) for n, t in zip(names, tags, strict=True)],
                **where,
            )  # fmt: skip
            nics = self._wait_all(
                [lambda i=i, n=n, t=t: network.network_interfaces.begin_create_or_update(
                    group, f"{n}-nic", ar.nic_body(region, subnet, ips[i].id if ips else None, t))
                 for i, (n, t) in enumerate(zip(names, tags, strict=True))],
                **where,
            )  # fmt: skip
            ports = tuple(getattr(resources, "ports", None) or ())
            if ports:
                self._open_ports(group, cluster_name, ports, nics, region)
            bodies = [
                ar.vm_body(location=region, zone=zone_no, size=size, name=n, nic_id=nics[i].id, tags=t, image=image,
                           disk_size_gb=disk, ssh_user=self.ssh_user, public_key=public_key.decode(), use_spot=use_spot)
                for i, (n, t) in enumerate(zip(names, tags, strict=True))
            ]  # fmt: skip
            outcomes = self._lros(
                [lambda n=n, b=b: compute.virtual_machines.begin_create_or_update(group, n, b)
                 for n, b in zip(names, bodies, strict=True)],
                **where,
            )  # fmt: skip
            errors = [o for o in outcomes if isinstance(o, ProvisionError)]
            if errors:
                raise _most_telling(errors)
        except ProvisionError as error:
            up = sum(1 for o in outcomes if not isinstance(o, ProvisionError))
            self._cleanup(group, names, cluster_name, region)
            if num_nodes > 1 and isinstance(error, CapacityError):
                error = CapacityError(f"partial launch, {up} of {num_nodes} nodes came up ({error.message})",
                                      cloud=AZURE, region=region, zone=error.zone, instance_type=size)  # fmt: skip
            raise error from None
        handle = self.find(cluster_name, region)
        if handle is None or handle.num_nodes < num_nodes:
            self._cleanup(group, names, cluster_name, region)
            raise CapacityError(f"partial launch, VMs of {cluster_name} vanished after creation", cloud=AZURE, **where)
        return handle

    def _adopt(self, handle: ClusterHandle, num_nodes: int) -> ClusterHandle:
        if handle.num_nodes != num_nodes:
            raise ConfigError(
                f"cluster {handle.cluster_name} exists with {handle.num_nodes} nodes, {num_nodes} requested",
                cloud=AZURE, region=handle.region, zone=handle.zone,
                fix="use another cluster name or terminate the existing cluster",
            )  # fmt: skip
        states = set(handle.extra.get("states") or ())
        if states == {"running"}:
            return handle
        if states <= {"deallocated", "deallocating", "stopped", "stopping"}:
            return self.start(handle)
        if "failed" in states:  # a leftover of a failed create: clear it and report no capacity
            self.terminate(handle)
            raise CapacityError(f"cluster {handle.cluster_name} had failed VMs; deleted them", cloud=AZURE,
                                region=handle.region, zone=handle.zone)  # fmt: skip
        return handle

    def _cleanup(self, group: str, names: Sequence[str], cluster_name: str, region: str) -> None:
        """Best effort: delete the VMs (also Failed ones), NICs, IPs, disks and ports rule of the attempt;
        never hides the launch error."""
        try:
            extra = [vm.name for vm in self._cluster(cluster_name, region) if ar.group_of(vm.id) == group]
            self._delete(group, sorted(set(names) | set(extra)))
            self._delete_ports_rule(group, cluster_name)
            if self.cleanup_empty_groups:  # failover may try many regions: leave no empty group behind
                self.cleanup_group(group)
        except Exception:
            log.exception("azure: could not delete partial launch %s in %s", list(names), group)

    def _delete(self, group: str, names: Sequence[str]) -> None:
        """Delete VMs, then their NICs, public IPs and OS disks, waiting for each step (missing ones are fine)."""
        network, compute = self._client("network"), self._client("compute")
        where = {"region": None}
        self._wait_all([lambda n=n: compute.virtual_machines.begin_delete(group, n) for n in names], **where)
        self._wait_all([lambda n=n: network.network_interfaces.begin_delete(group, f"{n}-nic") for n in names], **where)
        self._wait_all([lambda n=n: network.public_ip_addresses.begin_delete(group, f"{n}-ip") for n in names], **where)
        self._wait_all([lambda n=n: compute.disks.begin_delete(group, f"{n}-osdisk") for n in names], **where)

    # ---- ports and cleanup ------------------------------------------------------------------
    def _open_ports(self, group: str, cluster_name: str, ports: tuple[str, ...], nics: Sequence[Any], region: str) -> None:
        """The cluster's inbound rule in the region NSG (TCP `ports` from `ports_cidrs` to its NICs' private
        IPs), at a free priority; a priority taken concurrently (SecurityRuleConflict) moves on."""
        from azure.core.exceptions import HttpResponseError

        network = self._client("network")
        name = ar.ports_rule_name(cluster_name)
        targets = sorted({c.private_ip_address for nic in nics for c in nic.ip_configurations if c.private_ip_address})
        nsg = self._call(lambda: network.network_security_groups.get(group, ar.NSG), region=region)
        taken = {r.priority for r in nsg.security_rules or () if r.direction == "Inbound" and r.name != name}
        for _ in range(5):
            body = ar.ports_rule_body(ports, self.ports_cidrs, targets, ar.ports_priority(cluster_name, taken))
            try:
                poller = network.security_rules.begin_create_or_update(group, ar.NSG, name, body)
                poller.result(timeout=self.launch_timeout)
                return
            except HttpResponseError as exc:
                if error_code(exc) != "SecurityRuleConflict":
                    raise classify_azure_error(exc, region=region) from exc
                taken.add(body["properties"]["priority"])
            except Exception as exc:
                raise classify_azure_error(exc, region=region) from exc
        raise TransientError(f"no free NSG priority for {name} after 5 tries", cloud=AZURE, region=region)

    def _delete_ports_rule(self, group: str, cluster_name: str) -> None:
        """Delete the cluster's ports rule (a missing rule, NSG or group is fine)."""
        from azure.core.exceptions import ResourceNotFoundError

        network = self._client("network")
        try:
            self._wait_all([lambda: network.security_rules.begin_delete(group, ar.NSG, ar.ports_rule_name(cluster_name))])
        except ProvisionError as exc:
            if not exc.message.startswith(("ResourceGroupNotFound", "ResourceNotFound", "NotFound")):
                raise
        except ResourceNotFoundError:
            pass

    def _ours(self, group: str) -> bool:
        """A region group this backend created: named ``<prefix>-<region>`` and tagged as ours."""
        from azure.core.exceptions import ResourceNotFoundError

        if not group.lower().startswith(f"{self.resource_group_prefix}-".lower()):
            return False
        try:
            found = self._client("resource").resource_groups.get(group)
        except ResourceNotFoundError:
            return False
        except Exception as exc:
            raise classify_azure_error(exc) from exc
        return (found.tags or {}).get(ar.MANAGED_BY_KEY) == ar.MANAGED_BY

    def cleanup_group(self, group: str) -> bool:
        """Delete region group `group` when it is ours and holds nothing but our vnet and NSG; True
        when deleted. Anything else in it (another cluster, a user's resource) keeps it."""
        if not self._ours(group):
            return False
        resource = self._client("resource")
        left = self._call(lambda: list(resource.resources.list_by_resource_group(group)))
        infra = {(f"{NETWORK}/virtualNetworks", ar.VNET), (f"{NETWORK}/networkSecurityGroups", ar.NSG)}
        for item in left:
            if (item.type, item.name) not in infra or (item.tags or {}).get(ar.MANAGED_BY_KEY) != ar.MANAGED_BY:
                return False
        nsg = self._call(lambda: self._client("network").network_security_groups.get(group, ar.NSG))
        if any(r.name != "sky-ssh" for r in nsg.security_rules or ()):
            return False  # a ports rule of a cluster being launched, or a user's rule
        log.info("azure: delete empty resource group %s", group)
        with self._lock:
            for region, (name, _) in list(self._prepared.items()):
                if name == group:
                    del self._prepared[region]
        self._wait_all([lambda: resource.resource_groups.begin_delete(group)])
        return True

    # ---- lifecycle --------------------------------------------------------------------------
    def terminate(self, handle: ClusterHandle) -> None:
        """Delete every VM tagged with the cluster (and the handle's VMs), their NICs, IPs and disks, the
        cluster's ports rule, and (`cleanup_empty_groups`) region groups left with nothing of ours."""
        by_group: dict[str, set[str]] = {}
        for vm in self._cluster(handle.cluster_name):
            by_group.setdefault(ar.group_of(vm.id), set()).add(vm.name)
        group = handle.extra.get("resource_group") or (self.resource_group(handle.region) if handle.region else None)
        if group:
            by_group.setdefault(group, set()).update(handle.node_ids)
        for name, vms in sorted(by_group.items()):
            try:
                self._delete(name, sorted(vms))
            except ProvisionError as exc:
                if exc.message.startswith("ResourceGroupNotFound"):
                    continue  # the group (and all it held) is gone already
                raise
            self._delete_ports_rule(name, handle.cluster_name)
            if self.cleanup_empty_groups:
                try:
                    self.cleanup_group(name)
                except ProvisionError as exc:  # the cluster is gone; a kept group costs nothing
                    log.warning("azure: could not delete resource group %s: %s", name, exc)

    def stop(self, handle: ClusterHandle) -> None:
        """Deallocate the VMs (no compute billing; disks stay)."""
        if handle.extra.get("use_spot"):
            raise ConfigError(
                f"cluster {handle.cluster_name} runs on spot VMs with eviction policy Delete, which cannot be stopped",
                cloud=AZURE, region=handle.region, fix="terminate it (down) instead of stopping",
            )  # fmt: skip
        compute = self._client("compute")
        group = handle.extra.get("resource_group") or self.resource_group(handle.region or self.default_region)
        self._wait_all([lambda n=n: compute.virtual_machines.begin_deallocate(group, n) for n in handle.node_ids],
                       region=handle.region)  # fmt: skip

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        compute = self._client("compute")
        group = handle.extra.get("resource_group") or self.resource_group(handle.region or self.default_region)
        self._wait_all([lambda n=n: compute.virtual_machines.begin_start(group, n) for n in handle.node_ids],
                       region=handle.region, zone=handle.zone, instance_type=handle.instance_type)  # fmt: skip
        found = self.find(handle.cluster_name, handle.region)
        if found is None:
            raise ConfigError(f"cluster {handle.cluster_name} does not exist", cloud=AZURE, fix="launch it again")
        return found

    # ---- execution --------------------------------------------------------------------------
    def classify_error(self, exc: BaseException) -> ProvisionError:
        error = classify_azure_error(exc)
        if isinstance(error, CredentialsError) and not error.fix:
            error.fix = FIX_CREDENTIALS
        return error
