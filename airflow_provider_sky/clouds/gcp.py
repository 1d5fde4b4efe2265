"""GCP Compute Engine backend (google-cloud-compute, REST transport).

Identity lives in labels: every instance carries ``sky-cluster``, ``sky-managed-by``, the owner labels
(``sky-dag-id`` / ``sky-run-id`` / ``sky-task-id``, sanitized to GCE's label alphabet; the exact values
are kept in the ``sky-labels`` metadata item) and ``sky-node-rank``. `find` is one aggregated list
filtered by labels. Instance names are deterministic (``<cluster>-<rank>``) and every insert carries a
``requestId`` derived from (cluster, zone, name, attempt), so a retried attempt gets GCE's first
operation back instead of a second instance. Nodes are inserted one by one and waited for together;
if any fails (stockout, quota) every node of the attempt is deleted before the error is raised, and a
partial launch raises `CapacityError`.

Firewall (`gcp_firewall`): before the first launch on a network the shared SSH rule (ingress tcp:22 from
``ssh_cidrs`` to the ``network_tags``) is created when missing; a cluster with ``resources.ports`` gets
its own rule (target tag ``sky-<cluster>``, from ``ports_cidrs``), deleted when the cluster terminates.
``manage_firewall=False`` leaves firewall rules to the user.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds import aws_resources as keys
from airflow_provider_sky.clouds import gcp_firewall as fw
from airflow_provider_sky.clouds import gcp_instances as gi
from airflow_provider_sky.clouds.base import ClusterHandle
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    TransientError,
)
from airflow_provider_sky.clouds.gcp_errors import (
    FIX_CREDENTIALS,
    FIX_FIREWALL,
    GCP,
    classify_gcp_error,
    classify_operation_errors,
)
from airflow_provider_sky.clouds.vm import SshVmCloud

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner
    from airflow_provider_sky.spec.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_REGIONS = (
    "us-central1", "us-east1", "us-east4", "us-west1", "us-west4", "europe-west1", "europe-west4",
    "europe-west2", "asia-east1", "asia-northeast1", "asia-southeast1", "australia-southeast1",
)  # fmt: skip
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
RunnerFactory = Callable[[str, ClusterHandle, int], "CommandRunner"]
_TRUE = ("1", "true", "yes", "on")


def _getter(fields: Mapping[str, Any], prefix: str) -> Callable[[str], Any]:
    """Look a key up in connection fields, their ``extra`` dict, with or without the legacy prefix."""
    extra = fields.get("extra") if isinstance(fields.get("extra"), Mapping) else {}
    merged = {**extra, **{k: v for k, v in fields.items() if k != "extra"}}
    return lambda key: merged.get(key) or merged.get(f"{prefix}{key}")


class GcpCloud(SshVmCloud):
    """GCE clusters; see the module docstring for identity, idempotency and partial launches.

    `credentials` is a google-auth credentials object (None: application-default credentials);
    `api_endpoint` overrides ``https://compute.googleapis.com`` (tests aim it at a local fake).
    """

    name = GCP

    def __init__(
        self,
        project: str | None = None,
        *,
        credentials: Any = None,
        api_endpoint: str | None = None,
        regions: Sequence[str] | None = None,
        zones: Mapping[str, Sequence[str]] | None = None,
        default_region: str = "us-central1",
        image: str = gi.DEFAULT_IMAGE,
        gpu_image: str = gi.DEFAULT_GPU_IMAGE,
        ssh_user: str = "sky",
        key_dir: str | Path | None = None,
        network: str = "global/networks/default",
        subnetwork: str | None = None,
        network_tags: Sequence[str] = ("sky-ssh",),
        disk_type: str = "pd-balanced",
        service_account: str | None = None,
        launch_timeout: float = 600.0,
        poll_interval: float = 2.0,
        use_private_ips: bool = False,
        runner_factory: RunnerFactory | None = None,
        ssh_cidrs: Sequence[str] = ("0.0.0.0/0",),
        ports_cidrs: Sequence[str] = ("0.0.0.0/0",),
        manage_firewall: bool = True,
    ) -> None:
        self.project = project
        self._credentials = credentials
        self.api_endpoint = api_endpoint
        self._regions = tuple(regions or DEFAULT_REGIONS)
        self._zones: dict[str, list[str]] = {r: list(z) for r, z in (zones or {}).items()}
        self.default_region = default_region
        self.image = image
        self.gpu_image = gpu_image
        self.ssh_user = ssh_user
        self.key_dir = Path(key_dir).expanduser() if key_dir else keys.default_key_dir()
        self.network = network
        self.subnetwork = subnetwork
        self.network_tags = tuple(network_tags)
        self.disk_type = disk_type
        self.service_account = service_account
        self.launch_timeout = launch_timeout
        self.poll_interval = poll_interval
        self.use_private_ips = use_private_ips
        self.runner_factory = runner_factory
        self.ssh_cidrs = tuple(ssh_cidrs)
        self.ports_cidrs = tuple(ports_cidrs)
        self.manage_firewall = manage_firewall
        self._lock = threading.RLock()
        self._clients: dict[str, Any] = {}
        self._ssh_rule_ready: set[str] = set()  # networks whose SSH rule exists

    @classmethod
    def from_connection(cls, fields: Mapping[str, Any], **options: Any) -> GcpCloud:
        """Build from the extras of an Airflow ``google_cloud_platform`` connection (``project``,
        ``keyfile_dict`` (JSON text or dict), ``key_path``; optional ``api_endpoint``, ``image``,
        ``gpu_image``, ``network``, ``subnetwork``, ``service_account``); no key = application-default
        credentials. `options` are passed to the constructor (regions, key_dir, ...)."""
        get = _getter(fields, "extra__google_cloud_platform__")
        project, credentials = get("project") or get("project_id"), None
        keyfile, key_path = get("keyfile_dict"), get("key_path")
        if keyfile or key_path:
            try:
                from google.oauth2 import service_account

                if keyfile:
                    info = json.loads(keyfile) if isinstance(keyfile, str) else dict(keyfile)
                    credentials = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
                    project = project or info.get("project_id")
                else:
                    credentials = service_account.Credentials.from_service_account_file(key_path, scopes=list(SCOPES))
                    project = project or credentials.project_id
            except (ValueError, OSError) as exc:
                raise CredentialsError(f"unusable GCP service account key: {exc}", cloud=GCP, fix=FIX_CREDENTIALS) from exc
        for key in ("api_endpoint", "image", "gpu_image", "network", "subnetwork", "service_account"):
            if get(key) and key not in options:
                options[key] = get(key)
        return cls(project, credentials=credentials, **options)

    def __repr__(self) -> str:
        return f"GcpCloud(project={self.project!r}, api_endpoint={self.api_endpoint!r})"

    def configure_from_extras(self, extra: Mapping[str, Any]) -> None:
        """The shared SSH settings plus ``gcp_ssh_cidrs`` / ``gcp_ports_cidrs`` (comma-separated) and
        ``gcp_manage_firewall`` (false: never create or delete firewall rules)."""
        super().configure_from_extras(extra)
        raw = extra.get("gcp_manage_firewall")
        if raw not in (None, ""):
            self.manage_firewall = str(raw).strip().lower() in _TRUE

    # ---- clients ----------------------------------------------------------------------------
    def _client(self, kind: str) -> Any:
        """``instances``, ``zone_operations``, ``regions``, ``firewalls`` or ``global_operations`` client
        (REST), built once."""
        with self._lock:
            if kind not in self._clients:
                try:
                    from google.cloud import compute_v1
                except ImportError as exc:
                    raise ConfigError(
                        f"the gcp cloud needs google-cloud-compute ({exc})",
                        cloud=GCP,
                        fix="pip install 'airflow-provider-sky[gcp]'",
                    ) from exc
                credentials = self._resolve_credentials()
                options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
                cls = {
                    "instances": compute_v1.InstancesClient,
                    "zone_operations": compute_v1.ZoneOperationsClient,
                    "regions": compute_v1.RegionsClient,
                    "firewalls": compute_v1.FirewallsClient,
                    "global_operations": compute_v1.GlobalOperationsClient,
                }[kind]
                self._clients[kind] = cls(credentials=credentials, transport="rest", client_options=options)
            return self._clients[kind]

    def _resolve_credentials(self) -> Any:
        if self._credentials is None:
            try:
                import google.auth

                self._credentials, project = google.auth.default(scopes=list(SCOPES))
            except Exception as exc:
                raise CredentialsError(f"no Google credentials found: {exc}", cloud=GCP, fix=FIX_CREDENTIALS) from exc
            self.project = self.project or project
        if not self.project:
            raise ConfigError(
                "no GCP project configured",
                cloud=GCP,
                fix="set project (extra 'project') in the google_cloud_platform connection",
            )
        return self._credentials

    def _call(self, what: Callable[[], Any], **where: Any) -> Any:
        try:
            return what()
        except ProvisionError:
            raise
        except Exception as exc:
            raise classify_gcp_error(exc, **where) from exc

    # ---- locations --------------------------------------------------------------------------
    def regions(self) -> list[str]:
        return list(self._regions)

    def zones(self, region: str) -> list[str]:
        with self._lock:
            if region in self._zones:
                return list(self._zones[region])
        regions = self._client("regions")
        found = self._call(lambda: regions.get(project=self.project, region=region), region=region)
        zones = sorted(gi.last_segment(z) for z in found.zones)
        with self._lock:
            self._zones[region] = zones
        return list(zones)

    # ---- describe ---------------------------------------------------------------------------
    def _list(self, labels: Mapping[str, str], region: str | None = None) -> list[Any]:
        """Instances carrying all `labels` (any zone, or zones of `region`), head first."""
        expr = " AND ".join(f'(labels.{k} = "{gi.label_value(v)}")' for k, v in labels.items())
        instances = self._client("instances")

        def listing() -> list[Any]:
            pager = instances.aggregated_list(
                request={"project": self.project, "filter": expr}
            )
            return [i for _, scoped in pager for i in scoped.instances]

        found = self._call(listing, region=region)
        if region:
            found = [i for i in found if gi.region_of_zone(gi.last_segment(i.zone)) == region]
        return sorted(found, key=lambda i: (gi.rank_of(i), i.name))

    def _cluster(self, cluster_name: str, region: str | None = None) -> list[Any]:
        return self._list({gi.CLUSTER_LABEL: cluster_name, gi.MANAGED_BY_KEY: gi.MANAGED_BY}, region)

    def _handle(self, cluster_name: str, instances: Sequence[Any]) -> ClusterHandle:
        head = instances[0]
        zone = gi.last_segment(head.zone)
        instances = [i for i in instances if gi.last_segment(i.zone) == zone]
        private = [i.network_interfaces[0].network_i_p if i.network_interfaces else "" for i in instances]
        public = []
        for i in instances:
            configs = i.network_interfaces[0].access_configs if i.network_interfaces else []
            public.append(configs[0].nat_i_p if configs else "")
        ips = [pub if pub and not self.use_private_ips else prv for pub, prv in zip(public, private, strict=True)]
        return ClusterHandle(
            cloud=GCP,
            cluster_name=cluster_name,
            region=gi.region_of_zone(zone),
            zone=zone,
            instance_type=gi.last_segment(head.machine_type),
            num_nodes=len(instances),
            node_ips=tuple(ips),
            node_ids=tuple(i.name for i in instances),
            extra={
                "project": self.project,
                "private_ips": private,
                "public_ips": public,
                "states": sorted({i.status for i in instances}),
                "use_spot": head.scheduling.provisioning_model == "SPOT",
                "ssh_user": self.ssh_user,
                "key_path": str(self.key_path()),
            },
        )

    def find(self, cluster_name: str, region: str | None = None) -> ClusterHandle | None:
        """The live cluster by labels (one aggregated list over every zone, or the zones of `region`)."""
        instances = self._cluster(cluster_name, region)
        return self._handle(cluster_name, instances) if instances else None

    def status(self, cluster_name: str, region: str | None = None) -> str | None:
        """ "UP" (all running), "STOPPED" (all stopped), "INIT" (in between) or None."""
        handle = self.find(cluster_name, region)
        if handle is None:
            return None
        states = set(handle.extra["states"])
        return "UP" if states == {gi.RUNNING} else "STOPPED" if states <= set(gi.STOPPED_STATES) else "INIT"

    def list_managed(self) -> list[dict[str, Any]]:
        """Every cluster carrying ``sky-managed-by`` (for the orphan reaper)."""
        groups: dict[str, list[Any]] = {}
        for inst in self._list({gi.MANAGED_BY_KEY: gi.MANAGED_BY}):
            groups.setdefault(gi.exact_labels(inst).get(gi.CLUSTER_LABEL) or inst.labels[gi.CLUSTER_LABEL], []).append(inst)
        out = []
        for name, instances in sorted(groups.items()):
            handle = self._handle(name, instances)
            created = instances[0].creation_timestamp
            out.append(
                {
                    "name": name,
                    "cloud": GCP,
                    "region": handle.region,
                    "labels": {k: v for k, v in gi.exact_labels(instances[0]).items() if k != gi.RANK_LABEL},
                    "status": "UP" if handle.extra["states"] == [gi.RUNNING] else "INIT",
                    "created_at": datetime.fromisoformat(created) if created else None,
                    "handle": handle,
                }
            )
        return out

    # ---- operations -------------------------------------------------------------------------
    def _wait_ops(self, zone: str, ops: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Poll zone operations until all are DONE; returns the finished operations (in order)."""
        client = self._client("zone_operations")
        deadline = time.monotonic() + (timeout or self.launch_timeout)
        done: dict[str, Any] = {}
        while True:
            for op in ops:
                if op.name in done:
                    continue
                current = op if op.status == op.Status.DONE else self._call(
                    lambda o=op: client.get(project=self.project, zone=zone, operation=o.name), zone=zone
                )
                if current.status == current.Status.DONE:
                    done[op.name] = current
            if len(done) == len(ops):
                return [done[op.name] for op in ops]
            if time.monotonic() >= deadline:
                raise CapacityError(
                    f"{len(ops) - len(done)} operation(s) not done within {timeout or self.launch_timeout:g}s",
                    cloud=GCP, region=gi.region_of_zone(zone), zone=zone,
                )  # fmt: skip
            time.sleep(self.poll_interval)

    def _wait_status(self, zone: str, names: Sequence[str], wanted: str) -> list[Any]:
        """Poll instances.get until every instance has status `wanted` (or one is gone / terminated)."""
        deadline = time.monotonic() + self.launch_timeout
        while True:
            found = [self._get(zone, n) for n in names]
            if all(i is not None and i.status == wanted for i in found):
                return found
            lost = [n for n, i in zip(names, found, strict=True) if i is None or (
                wanted == gi.RUNNING and i.status in gi.STOPPED_STATES)]  # fmt: skip
            if lost or time.monotonic() >= deadline:
                up = sum(1 for i in found if i is not None and i.status == wanted)
                reason = "were preempted or deleted while booting" if lost else f"not {wanted} in time"
                raise CapacityError(
                    f"{len(names) - up} of {len(names)} nodes {reason}",
                    cloud=GCP, region=gi.region_of_zone(zone), zone=zone,
                )  # fmt: skip
            time.sleep(self.poll_interval)

    def _get(self, zone: str, name: str) -> Any | None:
        from google.api_core import exceptions as gex

        client = self._client("instances")
        try:
            return client.get(project=self.project, zone=zone, instance=name)
        except gex.NotFound:
            return None
        except Exception as exc:
            raise classify_gcp_error(exc, region=gi.region_of_zone(zone), zone=zone) from exc

    def _delete(self, zone: str, names: Sequence[str], wait: bool = True) -> None:
        from google.api_core import exceptions as gex

        client = self._client("instances")
        ops = []
        for name in names:
            try:
                ops.append(client.delete_unary(project=self.project, zone=zone, instance=name))
            except gex.NotFound:
                continue
            except Exception as exc:
                raise classify_gcp_error(exc, region=gi.region_of_zone(zone), zone=zone) from exc
        if wait and ops:
            failed = [op for op in self._wait_ops(zone, ops) if op.error.errors]
            if failed:
                raise classify_operation_errors(failed[0].error.errors, region=gi.region_of_zone(zone), zone=zone)

    def _cleanup(self, zone: str, names: Sequence[str], cluster_name: str) -> None:
        """Best effort: delete `names` and whatever else of the cluster is in `zone`; never hides the launch error."""
        try:
            extra = [i.name for i in self._cluster(cluster_name) if gi.last_segment(i.zone) == zone]
            self._delete(zone, sorted(set(names) | set(extra)))
        except Exception:
            log.exception("gcp: could not delete partial launch %s in %s", list(names), zone)

    # ---- firewall ---------------------------------------------------------------------------
    def _firewall_call(self, what: Callable[[], Any], region: str | None) -> Any:
        """Run a firewall API call; a permission error gets the firewall-specific fix."""
        try:
            return what()
        except ProvisionError:
            raise
        except Exception as exc:
            error = classify_gcp_error(exc, region=region)
            if isinstance(error, CredentialsError):
                error.fix = FIX_FIREWALL
            raise error from exc

    def _wait_global(self, op: Any, region: str | None) -> None:
        """Wait for a global operation (firewall insert/delete); a failed one raises classified."""
        client = self._client("global_operations")
        deadline = time.monotonic() + self.launch_timeout
        while op.status != op.Status.DONE:
            if time.monotonic() >= deadline:
                raise TransientError(f"firewall operation {op.name} not done in time", cloud=GCP, region=region)
            time.sleep(self.poll_interval)
            op = self._firewall_call(lambda o=op: client.get(project=self.project, operation=o.name), region)
        if op.error.errors:
            error = classify_operation_errors(op.error.errors, status=op.http_error_status_code or None, region=region)
            if isinstance(error, CredentialsError):
                error.fix = FIX_FIREWALL
            raise error

    def _get_rule(self, name: str, region: str | None) -> Any | None:
        from google.api_core import exceptions as gex

        client = self._client("firewalls")

        def get() -> Any | None:
            try:
                return client.get(project=self.project, firewall=name)
            except gex.NotFound:
                return None

        return self._firewall_call(get, region)

    def _insert_rule(self, body: Mapping[str, Any], region: str | None) -> None:
        """Insert a rule and wait; a rule created concurrently under the same name is fine."""
        from google.api_core import exceptions as gex

        client = self._client("firewalls")

        def insert() -> Any | None:
            try:
                return client.insert_unary(project=self.project, firewall_resource=dict(body))
            except gex.Conflict:
                return None

        op = self._firewall_call(insert, region)
        if op is not None:
            self._wait_global(op, region)

    def delete_rule(self, name: str, region: str | None = None) -> bool:
        """Delete firewall rule `name` and wait; False when it does not exist."""
        from google.api_core import exceptions as gex

        client = self._client("firewalls")

        def delete() -> Any | None:
            try:
                return client.delete_unary(project=self.project, firewall=name)
            except gex.NotFound:
                return None

        op = self._firewall_call(delete, region)
        if op is None:
            return False
        self._wait_global(op, region)
        return True

    def ensure_ssh_rule(self, region: str | None = None) -> str | None:
        """Create the shared SSH rule of the network when missing (once per process); its name, or None
        when firewall management is off."""
        if not self.manage_firewall:
            return None
        name = fw.ssh_rule_name(self.network)
        with self._lock:
            if self.network in self._ssh_rule_ready:
                return name
        tags, port = list(self.network_tags), [str(self.ssh_port)]
        found = self._get_rule(name, region)
        if found is None:
            log.info("gcp: create firewall rule %s (tcp:%s from %s)", name, port[0], ",".join(self.ssh_cidrs))
            body = fw.rule_body(name=name, network=self.network, ports=port, source_ranges=self.ssh_cidrs,
                                target_tags=tags, description="SSH to the nodes")  # fmt: skip
            self._insert_rule(body, region)
        elif not fw.covers(found, port, self.ssh_cidrs, tags):
            log.warning("gcp: firewall rule %s exists but does not allow tcp:%s from %s to %s; left as it is",
                        name, port[0], ",".join(self.ssh_cidrs), ",".join(tags))  # fmt: skip
        with self._lock:
            self._ssh_rule_ready.add(self.network)
        return name

    def ensure_ports_rule(self, cluster_name: str, ports: Sequence[str], region: str | None = None) -> str | None:
        """The cluster's own rule opening `ports` (TCP) to its tag; a stale rule that differs is replaced."""
        ports = fw.allowed_ports(ports)
        if not ports or not self.manage_firewall:
            return None
        name, tags = fw.ports_rule_name(cluster_name), [fw.cluster_tag(cluster_name)]
        found = self._get_rule(name, region)
        if found is not None and fw.covers(found, ports, self.ports_cidrs, tags):
            return name
        if found is not None:
            self.delete_rule(name, region)
        body = fw.rule_body(name=name, network=self.network, ports=ports, source_ranges=self.ports_cidrs,
                            target_tags=tags, description=f"resources.ports of {cluster_name}")  # fmt: skip
        self._insert_rule(body, region)
        return name

    def _delete_ports_rule(self, cluster_name: str) -> None:
        """Best effort: the cluster's ports rule (after its instances are gone)."""
        if not self.manage_firewall:
            return
        try:
            self.delete_rule(fw.ports_rule_name(cluster_name))
        except ProvisionError as exc:
            log.warning("gcp: could not delete firewall rule %s: %s", fw.ports_rule_name(cluster_name), exc)

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
        """Launch `num_nodes` instances in one zone, or return the cluster when it already exists.

        `attempt` feeds the requestIds: the same attempt retried gets the same operations back.
        """
        zone = zone or getattr(resources, "zone", None)
        region = region or (gi.region_of_zone(zone) if zone else None) or getattr(resources, "region", None)
        region = region or self.default_region
        instance_type = instance_type or getattr(resources, "instance_type", None)
        use_spot = bool(use_spot or getattr(resources, "use_spot", False))
        where = {"cloud": GCP, "region": region, "zone": zone, "instance_type": instance_type}
        if not instance_type:
            raise ConfigError("GCP needs a machine type", fix="set resources.instance_type or let the optimizer pick one", **where)
        if num_nodes < 1:
            raise ConfigError(f"num_nodes must be at least 1 (got {num_nodes})", fix="set num_nodes >= 1", **where)
        existing = self.find(cluster_name, region)
        if existing is not None:
            return self._adopt(existing, num_nodes)
        zone = zone or self.zones(region)[0]
        where["zone"] = zone
        _, public_key = keys.ensure_local_key(self.key_dir)
        accelerator = gi.accelerator_of(resources)
        wanted_image = getattr(resources, "image_id", None)
        if isinstance(wanted_image, Mapping):
            wanted_image = wanted_image.get(region)
        gpu = accelerator is not None or instance_type.startswith(gi.BUILT_IN_GPU_FAMILIES)
        image = wanted_image or (self.gpu_image if gpu else self.image)
        all_labels = {**dict(getattr(resources, "labels", None) or {}), **dict(labels or {})}
        all_labels.update({gi.CLUSTER_LABEL: cluster_name, gi.MANAGED_BY_KEY: gi.MANAGED_BY})
        token = uuid.uuid4().hex if attempt is None else attempt
        names = [gi.instance_name(cluster_name, rank) for rank in range(num_nodes)]
        self.ensure_ssh_rule(region)
        ports = tuple(getattr(resources, "ports", None) or ())
        ports_rule = self.ensure_ports_rule(cluster_name, ports, region)
        network_tags = (*self.network_tags, fw.cluster_tag(cluster_name))
        client = self._client("instances")
        log.info("gcp: insert %s x%d %s %s%s", cluster_name, num_nodes, instance_type, zone, " (spot)" if use_spot else "")
        ops, error = [], None
        for rank, name in enumerate(names):
            body = gi.instance_body(
                name=name, zone=zone, machine_type=instance_type,
                labels={**all_labels, gi.RANK_LABEL: str(rank)}, image=image,
                disk_size_gb=int(getattr(resources, "disk_size", None) or 256), disk_type=self.disk_type,
                ssh_user=self.ssh_user, public_key=public_key.decode(), use_spot=use_spot, accelerator=accelerator,
                network=self.network, subnetwork=self.subnetwork, network_tags=network_tags,
                external_ip=not self.use_private_ips, service_account=self.service_account,
            )  # fmt: skip
            request = {
                "project": self.project,
                "zone": zone,
                "instance_resource": body,
                "request_id": gi.request_id(cluster_name, zone, name, token),
            }
            try:
                ops.append(client.insert_unary(request=request))
            except Exception as exc:
                if type(exc).__name__ == "Conflict":  # alreadyExists: a concurrent launch of this cluster
                    continue
                error = classify_gcp_error(exc, region=region, zone=zone, instance_type=instance_type)
                break
        try:
            finished = self._wait_ops(zone, ops)
        except ProvisionError as exc:
            error = error or exc
            finished = []
        failures = [op for op in finished if op.error.errors]
        if failures and error is None:
            op = failures[0]
            error = classify_operation_errors(
                op.error.errors, status=op.http_error_status_code or None,
                region=region, zone=zone, instance_type=instance_type,
            )  # fmt: skip
        if error is None:
            try:
                self._wait_status(zone, names, gi.RUNNING)
            except ProvisionError as exc:
                error = exc
        if error is not None:
            up = len(finished) - len(failures)
            self._cleanup(zone, names, cluster_name)
            if ports_rule:
                self._delete_ports_rule(cluster_name)
            if num_nodes > 1 and isinstance(error, CapacityError):
                error = CapacityError(f"partial launch, {up} of {num_nodes} nodes came up ({error.message})", **where)
            raise error
        return self._handle(cluster_name, self._cluster(cluster_name, region))

    def _adopt(self, handle: ClusterHandle, num_nodes: int) -> ClusterHandle:
        if handle.num_nodes != num_nodes:
            raise ConfigError(
                f"cluster {handle.cluster_name} exists with {handle.num_nodes} nodes, {num_nodes} requested",
                cloud=GCP, region=handle.region, zone=handle.zone,
                fix="use another cluster name or terminate the existing cluster",
            )  # fmt: skip
        states = set(handle.extra.get("states") or ())
        if states == {gi.RUNNING}:
            return handle
        if states <= set(gi.STOPPED_STATES) | {"STOPPING"}:
            return self.start(handle)
        self._wait_status(handle.zone or "", list(handle.node_ids), gi.RUNNING)
        return self.find(handle.cluster_name, handle.region) or handle

    # ---- lifecycle --------------------------------------------------------------------------
    def terminate(self, handle: ClusterHandle) -> None:
        """Delete every instance labelled with the cluster (and the handle's instances), wait, then
        delete the cluster's ports firewall rule."""
        by_zone: dict[str, set[str]] = {}
        for inst in self._cluster(handle.cluster_name):
            by_zone.setdefault(gi.last_segment(inst.zone), set()).add(inst.name)
        if handle.zone:
            by_zone.setdefault(handle.zone, set()).update(handle.node_ids)
        for zone, names in sorted(by_zone.items()):
            self._delete(zone, sorted(names))
        self._delete_ports_rule(handle.cluster_name)

    def stop(self, handle: ClusterHandle) -> None:
        zone = handle.zone or ""
        client = self._client("instances")
        where = {"region": handle.region, "zone": zone}
        ops = [self._call(lambda n=n: client.stop_unary(project=self.project, zone=zone, instance=n), **where)
               for n in handle.node_ids]  # fmt: skip
        self._wait_ops(zone, ops)
        self._wait_status(zone, list(handle.node_ids), "TERMINATED")

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        zone = handle.zone or ""
        client = self._client("instances")
        where = {"region": handle.region, "zone": zone, "instance_type": handle.instance_type}
        names = list(handle.node_ids)
        pending = [i for i in (self._get(zone, n) for n in names) if i is not None and i.status == "STOPPING"]
        if pending:
            self._wait_status(zone, [i.name for i in pending], "TERMINATED")
        ops = [self._call(lambda n=n: client.start_unary(project=self.project, zone=zone, instance=n), **where)
               for n in names]  # fmt: skip
        self._wait_ops(zone, ops)
        self._wait_status(zone, names, gi.RUNNING)
        found = self.find(handle.cluster_name, handle.region)
        if found is None:
            raise ConfigError(f"cluster {handle.cluster_name} does not exist", cloud=GCP, fix="launch it again")
        return found

    # ---- execution --------------------------------------------------------------------------
    def classify_error(self, exc: BaseException) -> ProvisionError:
        return classify_gcp_error(exc)
