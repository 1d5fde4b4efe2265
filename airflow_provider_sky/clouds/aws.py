"""AWS EC2 backend (boto3).

Identity lives in tags: every instance carries ``sky-cluster``, ``sky-managed-by``, the owner labels
(``sky-dag-id`` / ``sky-run-id`` / ``sky-task-id``) and ``sky-node-rank`` (0 = head), so `find` and
`terminate` work from the cloud alone. RunInstances is idempotent through a ``ClientToken`` derived
from (cluster, region, zone, instance type, market, nodes, attempt): a retry of the same attempt gets
the same instances back instead of a second set. A launch asks for all nodes at once
(MinCount = MaxCount = nodes); nodes that die while booting (``Server.InsufficientInstanceCapacity``)
make it a partial launch, which is terminated before `CapacityError` is raised.

Nodes are reached over SSH at their public IP (``use_private_ips`` for the private one), as
``ssh_user`` on ``ssh_port``, optionally through a bastion (``ssh_jump_host``) or a ProxyCommand
(``ssh_proxy_command``); `settings_options` reads these from the sky connection's ``aws_*``
extras. Instances shut down from inside (the autostop agent's ``shutdown -h``) stop, or terminate
when autostop says ``down`` and for spot (``InstanceInitiatedShutdownBehavior``). `list_managed`
lists every cluster tagged as ours in all enabled regions, for the orphan reaper.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds import aws_resources as res
from airflow_provider_sky.clouds.aws_errors import AWS, classify_aws_error, classify_code, error_code
from airflow_provider_sky.clouds.aws_instances import (
    CLUSTER_TAG,
    LIVE_STATES,
    RANK_TAG,
    clean_tags,
    client_token,
    rank_key,
    tag_value,
)
from airflow_provider_sky.clouds.base import ClusterHandle
from airflow_provider_sky.clouds.errors import CapacityError, ConfigError, ProvisionError
from airflow_provider_sky.clouds.vm import SshVmCloud

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner
    from airflow_provider_sky.spec.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_IMAGE_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
DEFAULT_IMAGE_OWNERS = ("amazon",)
DEFAULT_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1", "eu-west-2",
    "eu-central-1", "eu-north-1", "ap-northeast-1", "ap-southeast-1", "ap-southeast-2", "ap-south-1",
    "sa-east-1",
)  # fmt: skip
RunnerFactory = Callable[[str, ClusterHandle, int], "CommandRunner"]
#: Sky connection extras (``aws_<name>``) that configure `AwsCloud` (see `AwsCloud.settings_options`).
SETTINGS_OPTIONS = (
    "ssh_user", "ssh_port", "ssh_jump_host", "ssh_proxy_command", "use_private_ips",
    "security_group_name", "ssh_cidrs", "ports_cidrs",
)  # fmt: skip
_TRUE = ("1", "true", "yes", "on")


class AwsCloud(SshVmCloud):
    """EC2 clusters; see the module docstring for identity, idempotency and partial launches."""

    name = AWS

    def __init__(
        self,
        session_kwargs: Mapping[str, Any] | None = None,
        *,
        session: Any = None,
        endpoint_url: str | None = None,
        regions: Sequence[str] | None = None,
        default_region: str = "us-east-1",
        default_image_name_pattern: str = DEFAULT_IMAGE_PATTERN,
        image_owners: Sequence[str] = DEFAULT_IMAGE_OWNERS,
        image_id: str | None = None,
        ssh_user: str = "ubuntu",
        key_dir: str | Path | None = None,
        security_group_name: str = "sky-airflow-ssh",
        ssh_cidrs: Sequence[str] = ("0.0.0.0/0",),
        launch_timeout: float = 600.0,
        poll_interval: float = 5.0,
        api_max_attempts: int = 3,
        use_private_ips: bool = False,
        runner_factory: RunnerFactory | None = None,
        ssh_port: int = 22,
        ssh_jump_host: str | None = None,
        ssh_proxy_command: str | None = None,
        list_all_regions: bool = True,
        ports_cidrs: Sequence[str] = ("0.0.0.0/0",),
    ) -> None:
        self._session_kwargs = dict(session_kwargs or {})
        self._session = session
        self.endpoint_url = endpoint_url
        self._regions = tuple(regions or DEFAULT_REGIONS)
        self.default_region = default_region
        self.image_name_pattern = default_image_name_pattern
        self.image_owners = tuple(image_owners)
        self.image_id = image_id
        self.ssh_user = ssh_user
        self.key_dir = Path(key_dir).expanduser() if key_dir else res.default_key_dir()
        self.security_group_name = security_group_name
        self.ssh_cidrs = tuple(ssh_cidrs)
        self.launch_timeout = launch_timeout
        self.poll_interval = poll_interval
        self.api_max_attempts = api_max_attempts
        self.use_private_ips = use_private_ips
        self.runner_factory = runner_factory
        self.configure_ssh(
            ssh_user=ssh_user,
            ssh_port=ssh_port,
            ssh_jump_host=ssh_jump_host,
            ssh_proxy_command=ssh_proxy_command,
        )
        self.list_all_regions = list_all_regions
        self.ports_cidrs = tuple(ports_cidrs)
        self._lock = threading.RLock()
        self._clients: dict[tuple[str, bool], Any] = {}
        self._zones: dict[str, list[str]] = {}
        self._zone_ids: dict[str, dict[str, str]] = {}
        self._prepared: dict[str, tuple[str, str]] = {}  # region -> (key name, security group id)
        self._images: dict[tuple[str, str], tuple[str, str | None]] = {}

    def __repr__(self) -> str:
        return f"AwsCloud(endpoint_url={self.endpoint_url!r}, regions={list(self._regions)!r})"

    @staticmethod
    def settings_options(extra: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor options from sky connection extras ``aws_ssh_user``, ``aws_ssh_port``,
        ``aws_ssh_jump_host``, ``aws_ssh_proxy_command``, ``aws_use_private_ips``,
        ``aws_security_group_name``, ``aws_ssh_cidrs`` / ``aws_ports_cidrs`` (comma-separated); unset
        ones are left out."""
        out: dict[str, Any] = {}
        for name in SETTINGS_OPTIONS:
            raw = extra.get(f"aws_{name}")
            if raw in (None, ""):
                continue
            value = str(raw).strip()
            if name == "use_private_ips":
                out[name] = value.lower() in _TRUE
            elif name in ("ssh_cidrs", "ports_cidrs"):
                out[name] = tuple(c.strip() for c in value.split(",") if c.strip())
            elif name == "ssh_port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise ConfigError(
                        f"aws_ssh_port: {raw!r} is not a TCP port", cloud=AWS, fix="use 1-65535 (default 22)"
                    )
                out[name] = int(value)
            else:
                out[name] = value
        return out

    # ---- clients ----------------------------------------------------------------------------
    def _client(self, region: str, *, launch: bool = False) -> Any:
        """EC2 client for `region`; the launch client never retries (the failover loop does, same token)."""
        with self._lock:
            key = (region, launch)
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session(**self._session_kwargs)
                attempts = 1 if launch else self.api_max_attempts
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": attempts},
                    connect_timeout=10,
                    read_timeout=60,
                )
                self._clients[key] = self._session.client(
                    "ec2", region_name=region, endpoint_url=self.endpoint_url, config=config
                )
            return self._clients[key]

    def _call(self, what: Callable[[], Any], **where: Any) -> Any:
        try:
            return what()
        except ProvisionError:
            raise
        except Exception as exc:
            where.pop("cloud", None)
            raise classify_aws_error(exc, **where) from exc

    # ---- locations --------------------------------------------------------------------------
    def regions(self) -> list[str]:
        return list(self._regions)

    def zones(self, region: str) -> list[str]:
        with self._lock:
            if region in self._zones:
                return list(self._zones[region])
        ec2 = self._client(region)
        filters = [
            {"Name": "state", "Values": ["available"]},
            {"Name": "zone-type", "Values": ["availability-zone"]},
        ]
        found = self._call(lambda: ec2.describe_availability_zones(Filters=filters), region=region)
        zones = sorted(z["ZoneName"] for z in found["AvailabilityZones"])
        ids = {z["ZoneId"]: z["ZoneName"] for z in found["AvailabilityZones"] if z.get("ZoneId")}
        with self._lock:
            self._zones[region] = zones
            self._zone_ids[region] = ids
        return list(zones)

    def zone_name(self, region: str, zone: str | None) -> str | None:
        """A zone name for `zone`, which may be a zone ID (``use1-az2``, as in catalogs; the
        ID-to-name mapping differs per account, so it is looked up in this account)."""
        if not zone or zone.startswith(region):
            return zone
        self.zones(region)
        with self._lock:
            return self._zone_ids.get(region, {}).get(zone, zone)

    # ---- prerequisites ----------------------------------------------------------------------
    def _prepare(self, region: str) -> tuple[str, str]:
        """(key pair name, security group id) for `region`, created on first use."""
        with self._lock:
            if region in self._prepared:
                return self._prepared[region]
        ec2 = self._client(region)

        def create() -> tuple[str, str]:
            _, public = res.ensure_local_key(self.key_dir)
            key_name = res.ensure_key_pair(ec2, res.key_pair_name(public), public)
            vpc_id = res.default_vpc_id(ec2, region)
            group = res.ensure_security_group(
                ec2, self.security_group_name, vpc_id, self.ssh_cidrs, port=self.ssh_port
            )
            return key_name, group

        prepared = self._call(create, region=region)
        with self._lock:
            self._prepared[region] = prepared
        return prepared

    def ports_group_name(self, cluster_name: str) -> str:
        return f"{self.security_group_name}-ports-{cluster_name}"[:255]

    def _ports_groups(self, region: str, cluster_name: str, resources: Resources | None) -> list[str]:
        """[id of the cluster's own group opening `resources.ports` (TCP, from `ports_cidrs`)], or []."""
        ports = tuple(getattr(resources, "ports", None) or ())
        if not ports:
            return []
        ec2 = self._client(region)
        name = self.ports_group_name(cluster_name)

        def ensure() -> str:
            vpc_id = res.default_vpc_id(ec2, region)
            filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
            found = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
            if found:
                group_id = found[0]["GroupId"]
            else:
                group_id = ec2.create_security_group(
                    GroupName=name,
                    Description=f"airflow-provider-sky: resources.ports of {cluster_name}",
                    VpcId=vpc_id,
                    TagSpecifications=[
                        {
                            "ResourceType": "security-group",
                            "Tags": res.managed_tags({CLUSTER_TAG: cluster_name}),
                        }
                    ],
                )["GroupId"]
            res.ensure_ingress(ec2, group_id, res.port_ranges(ports), self.ports_cidrs, "sky ports")
            return group_id

        return [self._call(ensure, region=region)]

    def _delete_ports_group(self, region: str, cluster_name: str) -> None:
        """Best effort: delete the cluster's ports group (after its instances are terminated)."""
        ec2 = self._client(region)
        name = self.ports_group_name(cluster_name)
        try:
            found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])
            for group in found["SecurityGroups"]:
                ec2.delete_security_group(GroupId=group["GroupId"])
        except Exception as exc:  # e.g. DependencyViolation while network interfaces detach
            log.warning("aws: could not delete security group %s in %s: %s", name, region, exc)

    def _image(self, region: str, instance_type: str, resources: Resources | None) -> tuple[str, str | None]:
        """(image id, root device name): resources.image_id, else the newest match of the name pattern,
        else the configured fallback `image_id`."""
        ec2 = self._client(region)
        wanted = getattr(resources, "image_id", None)
        if isinstance(wanted, Mapping):
            wanted = wanted.get(region)
        wanted = wanted or None
        arch = res.architecture_of(instance_type)
        key = (region, wanted or f"pattern:{arch}")
        with self._lock:
            if key in self._images:
                return self._images[key]

        def lookup() -> tuple[str, str | None] | None:
            if wanted:
                image = res.describe_image(ec2, wanted)
                return (wanted, image.get("RootDeviceName") if image else None)
            image = res.find_image(ec2, self.image_name_pattern, self.image_owners, arch)
            if image is not None:
                return image["ImageId"], image.get("RootDeviceName")
            if self.image_id:
                image = res.describe_image(ec2, self.image_id)
                return self.image_id, image.get("RootDeviceName") if image else None
            return None

        found = self._call(lookup, region=region, instance_type=instance_type)
        if found is None:
            raise ConfigError(
                f"no {arch} image named {self.image_name_pattern!r} owned by {list(self.image_owners)} in {region}",
                cloud=AWS,
                region=region,
                instance_type=instance_type,
                fix="set resources.image_id, or image_id / default_image_name_pattern / image_owners in the aws settings",
            )
        with self._lock:
            self._images[key] = found
        return found

    # ---- describe ---------------------------------------------------------------------------
    def _instances(self, region: str, cluster_name: str, states: Sequence[str] = LIVE_STATES) -> list[dict]:
        ec2 = self._client(region)
        filters = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_name]},
            {"Name": f"tag:{res.MANAGED_BY_KEY}", "Values": [res.MANAGED_BY]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]

        def describe() -> list[dict]:
            pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        return sorted(self._call(describe, region=region), key=rank_key)

    def _describe_ids(self, region: str, ids: Sequence[str]) -> list[dict]:
        ec2 = self._client(region)
        out = self._call(lambda: ec2.describe_instances(InstanceIds=list(ids)), region=region)
        return sorted((i for r in out["Reservations"] for i in r["Instances"]), key=rank_key)

    def _handle(
        self, cluster_name: str, region: str, instances: Sequence[Mapping[str, Any]]
    ) -> ClusterHandle:
        private = [i.get("PrivateIpAddress") or "" for i in instances]
        public = [i.get("PublicIpAddress") or "" for i in instances]
        ips = [
            pub if pub and not self.use_private_ips else prv for pub, prv in zip(public, private, strict=True)
        ]
        head = instances[0]
        states = sorted({i["State"]["Name"] for i in instances})
        return ClusterHandle(
            cloud=AWS,
            cluster_name=cluster_name,
            region=region,
            zone=head.get("Placement", {}).get("AvailabilityZone"),
            instance_type=head.get("InstanceType"),
            num_nodes=len(instances),
            node_ips=tuple(ips),
            node_ids=tuple(i["InstanceId"] for i in instances),
            extra={
                "private_ips": private,
                "public_ips": public,
                "states": states,
                "use_spot": head.get("InstanceLifecycle") == "spot",
                "key_name": head.get("KeyName"),
                "ssh_user": self.ssh_user,
                "ssh_port": self.ssh_port,
                "key_path": str(self.key_path()),
                "image_id": head.get("ImageId"),
            },
        )

    def find(self, cluster_name: str, region: str | None = None) -> ClusterHandle | None:
        """The live (pending/running/stopping/stopped) cluster by tags, in `region` or every region."""
        for where in [region] if region else self.regions():
            instances = self._instances(where, cluster_name)
            if instances:
                return self._handle(cluster_name, where, instances)
        return None

    def status(self, cluster_name: str, region: str | None = None) -> str | None:
        """ "UP" (all running), "STOPPED" (all stopped), "INIT" (in between) or None."""
        handle = self.find(cluster_name, region)
        if handle is None:
            return None
        states = set(handle.extra["states"])
        return "UP" if states == {"running"} else "STOPPED" if states == {"stopped"} else "INIT"

    def list_managed(self) -> list[dict[str, Any]]:
        """Every cluster tagged ``sky-managed-by`` (pending to stopped), in all enabled regions.

        For the orphan reaper; items are mappings of `reaper.ManagedCluster` fields (plus region).
        Regions are listed in parallel; a region that cannot be listed fails the whole listing (a
        partial list must not look complete).
        """
        regions = self._listing_regions()
        with ThreadPoolExecutor(max_workers=min(8, len(regions))) as pool:
            found = list(pool.map(self._managed_in, regions))
        return [item for items in found for item in items]

    def _managed_in(self, region: str) -> list[dict[str, Any]]:
        ec2 = self._client(region)
        filters = [
            {"Name": f"tag:{res.MANAGED_BY_KEY}", "Values": [res.MANAGED_BY]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]

        def describe() -> list[dict]:
            pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        groups: dict[str, list[dict]] = {}
        for inst in self._call(describe, region=region):
            name = tag_value(inst, CLUSTER_TAG)
            if name:
                groups.setdefault(name, []).append(inst)
        out = []
        for name, instances in sorted(groups.items()):
            instances.sort(key=rank_key)
            handle = self._handle(name, region, instances)
            states = set(handle.extra["states"])
            launched = [i["LaunchTime"] for i in instances if isinstance(i.get("LaunchTime"), datetime)]
            tags = {t["Key"]: t["Value"] for t in instances[0].get("Tags") or ()}
            out.append(
                {
                    "name": name,
                    "cloud": AWS,
                    "region": region,
                    "labels": {k: v for k, v in tags.items() if k not in (RANK_TAG, "Name")},
                    "status": "UP"
                    if states == {"running"}
                    else "STOPPED"
                    if states == {"stopped"}
                    else "INIT",
                    "created_at": min(launched).astimezone(UTC) if launched else None,
                    "handle": handle,
                }
            )
        return out

    def _listing_regions(self) -> list[str]:
        """The configured regions, plus every region enabled for the account (`list_all_regions`)."""
        regions = list(self._regions)
        if not self.list_all_regions:
            return regions
        ec2 = self._client(self.default_region)
        try:
            found = ec2.describe_regions(
                Filters=[{"Name": "opt-in-status", "Values": ["opt-in-not-required", "opted-in"]}]
            )["Regions"]
        except Exception as exc:  # e.g. no ec2:DescribeRegions permission: the configured ones only
            log.warning("aws: cannot list enabled regions (%s); listing %s", error_code(exc) or exc, regions)
            return regions
        return regions + sorted({r["RegionName"] for r in found} - set(regions))

    def termination_reason(self, handle: ClusterHandle) -> str | None:
        """Why nodes of `handle` are gone (EC2 state reason of terminated or stopped nodes), or None."""
        if not handle.node_ids or not handle.region:
            return None
        try:
            instances = self._describe_ids(handle.region, handle.node_ids)
        except ProvisionError:
            return None
        reasons = []
        for inst in instances:
            state = inst["State"]["Name"]
            if state in ("running", "pending"):
                continue
            reason = inst.get("StateReason") or {}
            code = reason.get("Code") or "unknown"
            message = reason.get("Message") or ""
            text = message if message.startswith(code) else f"{code}: {message}" if message else code
            reasons.append(f"{inst['InstanceId']} {state} ({text})")
        return "; ".join(reasons) or None

    # ---- waiting ----------------------------------------------------------------------------
    def _wait(self, region: str, waiter: str, ids: Sequence[str], timeout: float | None = None) -> None:
        """Run a boto3 waiter with `poll_interval` and a timeout; raises botocore's WaiterError."""
        delay = max(self.poll_interval, 0.01)
        attempts = max(1, math.ceil((timeout or self.launch_timeout) / delay))
        self._client(region).get_waiter(waiter).wait(
            InstanceIds=list(ids), WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
        )

    def _terminate_ids(self, region: str, ids: Sequence[str], wait: bool = True) -> None:
        if not ids:
            return
        ec2 = self._client(region)
        try:
            ec2.terminate_instances(InstanceIds=list(ids))
        except Exception as exc:
            if error_code(exc) != "InvalidInstanceID.NotFound":
                raise classify_aws_error(exc, region=region) from exc
        if wait:
            try:
                self._wait(region, "instance_terminated", ids)
            except Exception as exc:
                raise classify_aws_error(exc, region=region) from exc

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

        `attempt` feeds the ClientToken: the same attempt retried returns the same instances. It must
        not repeat for a cluster name (EC2 keeps tokens of terminated launches); None = a fresh token.
        """
        region = region or getattr(resources, "region", None) or self.default_region
        zone = self.zone_name(region, zone or getattr(resources, "zone", None))
        instance_type = instance_type or getattr(resources, "instance_type", None)
        use_spot = bool(use_spot or getattr(resources, "use_spot", False))
        where = {"cloud": AWS, "region": region, "zone": zone, "instance_type": instance_type}
        if not instance_type:
            raise ConfigError(
                "AWS needs an instance type",
                fix="set resources.instance_type or let the optimizer pick one",
                **where,
            )
        if num_nodes < 1:
            raise ConfigError(
                f"num_nodes must be at least 1 (got {num_nodes})", fix="set num_nodes >= 1", **where
            )
        existing = self.find(cluster_name, region)
        if existing is not None:
            return self._adopt(existing, num_nodes)
        key_name, group_id = self._prepare(region)
        image_id, root_device = self._image(region, instance_type, resources)
        tags = {
            CLUSTER_TAG: cluster_name,
            res.MANAGED_BY_KEY: res.MANAGED_BY,
            "Name": cluster_name,
            **dict(getattr(resources, "labels", None) or {}),
            **dict(labels or {}),
        }
        tags[CLUSTER_TAG] = cluster_name
        tags[res.MANAGED_BY_KEY] = res.MANAGED_BY
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": num_nodes,
            "MaxCount": num_nodes,
            "KeyName": key_name,
            "SecurityGroupIds": [group_id, *self._ports_groups(region, cluster_name, resources)],
            "ClientToken": client_token(
                cluster_name,
                region,
                zone,
                instance_type,
                use_spot,
                num_nodes,
                uuid.uuid4().hex if attempt is None else attempt,
                image_id,
            ),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": clean_tags(tags)},
                {"ResourceType": "volume", "Tags": clean_tags(tags)},
            ],
            "BlockDeviceMappings": [
                {
                    "DeviceName": root_device or "/dev/sda1",
                    "Ebs": {
                        "VolumeSize": int(getattr(resources, "disk_size", None) or 256),
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
        }
        params["InstanceInitiatedShutdownBehavior"] = shutdown_behavior(resources, use_spot)
        if zone:
            params["Placement"] = {"AvailabilityZone": zone}
        if use_spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        ec2 = self._client(region, launch=True)
        log.info("aws: RunInstances %s x%d %s %s%s", cluster_name, num_nodes, instance_type, zone or region,
                 " (spot)" if use_spot else "")  # fmt: skip
        reply = self._call(lambda: ec2.run_instances(**params), **where)
        ids = [
            i["InstanceId"]
            for i in sorted(reply["Instances"], key=lambda i: int(i.get("AmiLaunchIndex") or 0))
        ]
        return self._finish_launch(cluster_name, region, zone, instance_type, num_nodes, ids)

    def _adopt(self, handle: ClusterHandle, num_nodes: int) -> ClusterHandle:
        if handle.num_nodes != num_nodes:
            raise ConfigError(
                f"cluster {handle.cluster_name} exists with {handle.num_nodes} nodes, {num_nodes} requested",
                cloud=AWS,
                region=handle.region,
                zone=handle.zone,
                fix="use another cluster name or terminate the existing cluster",
            )
        states = set(handle.extra.get("states") or ())
        if states == {"running"}:
            return handle
        if states <= {"stopped", "stopping"}:
            return self.start(handle)
        return self._finish_launch(
            handle.cluster_name, handle.region or self.default_region, handle.zone, handle.instance_type or "",
            num_nodes, list(handle.node_ids),
        )  # fmt: skip

    def _finish_launch(
        self,
        cluster_name: str,
        region: str,
        zone: str | None,
        instance_type: str,
        num_nodes: int,
        ids: list[str],
    ) -> ClusterHandle:
        """Wait for running; tag ranks; on a partial launch terminate everything and raise CapacityError."""
        where = {"cloud": AWS, "region": region, "zone": zone, "instance_type": instance_type}
        try:
            self._wait(region, "instance_running", ids)
        except Exception as exc:
            instances = self._describe_ids(region, ids)
            zone = zone or next((i["Placement"]["AvailabilityZone"] for i in instances), None)
            up = [i for i in instances if i["State"]["Name"] == "running"]
            dead = [i for i in instances if i["State"]["Name"] in ("shutting-down", "terminated")]
            self._cleanup(region, ids)
            if dead:
                reason = dead[0].get("StateReason") or {}
                error = classify_code(
                    reason.get("Code") or "Server.InsufficientInstanceCapacity",
                    reason.get("Message") or "instance terminated while launching",
                    region=region,
                    zone=zone,
                    instance_type=instance_type,
                )
                if not isinstance(error, CapacityError):
                    error = CapacityError(error.message, **{**where, "zone": zone})
                error.message = f"partial launch, {len(up)} of {num_nodes} nodes came up ({error.message})"
                raise error from exc
            last = getattr(exc, "last_response", None)
            api_error = last.get("Error") if isinstance(last, dict) else None
            if api_error:  # the waiter's describe call failed (throttling, credentials ...)
                status = (last.get("ResponseMetadata") or {}).get("HTTPStatusCode")
                raise classify_code(
                    api_error.get("Code"),
                    api_error.get("Message") or "",
                    status=status,
                    region=region,
                    zone=zone,
                    instance_type=instance_type,
                ) from exc
            if last is None:
                raise classify_aws_error(exc, region=region, zone=zone, instance_type=instance_type) from exc
            raise CapacityError(
                f"{len(up)} of {num_nodes} nodes reached running within {self.launch_timeout:g}s",
                **{**where, "zone": zone},
            ) from exc
        instances = self._describe_ids(region, ids)
        if len(instances) < num_nodes:  # ids vanished: treat like a partial launch
            self._cleanup(region, ids)
            raise CapacityError(f"partial launch, {len(instances)} of {num_nodes} nodes exist", **where)
        ec2 = self._client(region)
        for rank, inst in enumerate(instances):
            if tag_value(inst, RANK_TAG) != str(rank):
                name = f"{cluster_name}-head" if rank == 0 else f"{cluster_name}-worker{rank}"
                tags = [{"Key": RANK_TAG, "Value": str(rank)}, {"Key": "Name", "Value": name}]
                self._call(
                    lambda i=inst, t=tags: ec2.create_tags(Resources=[i["InstanceId"]], Tags=t), **where
                )
        return self._handle(cluster_name, region, self._describe_ids(region, ids))

    def _cleanup(self, region: str, ids: Sequence[str]) -> None:
        """Best effort: terminate `ids` and wait; never hides the launch error."""
        try:
            self._terminate_ids(region, ids)
        except Exception:
            log.exception("aws: could not terminate partial launch %s in %s", list(ids), region)

    # ---- lifecycle --------------------------------------------------------------------------
    def terminate(self, handle: ClusterHandle) -> None:
        """Terminate every instance tagged with the cluster (and the handle's ids) and wait."""
        regions = [handle.region] if handle.region else self.regions()
        for region in regions:
            ids = {i["InstanceId"] for i in self._instances(region, handle.cluster_name)}
            if handle.region == region:
                ids.update(handle.node_ids)
            self._terminate_ids(region, sorted(ids))
            if ids:
                self._delete_ports_group(region, handle.cluster_name)

    def stop(self, handle: ClusterHandle) -> None:
        if handle.extra.get("use_spot"):
            raise ConfigError(
                f"cluster {handle.cluster_name} runs on spot instances, which cannot be stopped",
                cloud=AWS,
                region=handle.region,
                fix="terminate it (down) instead of stopping",
            )
        region = handle.region or self.default_region
        ids = [i["InstanceId"] for i in self._instances(region, handle.cluster_name)] or list(handle.node_ids)
        ec2 = self._client(region)
        self._call(lambda: ec2.stop_instances(InstanceIds=ids), region=region)
        self._call(lambda: self._wait(region, "instance_stopped", ids), region=region)

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        region = handle.region or self.default_region
        instances = self._instances(region, handle.cluster_name)
        if not instances:
            raise ConfigError(
                f"cluster {handle.cluster_name} does not exist", cloud=AWS, fix="launch it again"
            )
        ids = [i["InstanceId"] for i in instances]
        ec2 = self._client(region)
        stopped = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("stopped", "stopping")]
        if stopped:
            self._call(lambda: self._wait(region, "instance_stopped", stopped), region=region)
            self._call(lambda: ec2.start_instances(InstanceIds=stopped), region=region)
        where = {"region": region, "zone": handle.zone, "instance_type": handle.instance_type}
        self._call(lambda: self._wait(region, "instance_running", ids), **where)
        return self._handle(handle.cluster_name, region, self._describe_ids(region, ids))

    def prepare_autostop(self, handle: ClusterHandle, down: bool) -> str:
        """Make a ``shutdown -h`` on the nodes stop them, or terminate them when `down` (spot:
        always terminate, EC2 cannot stop one-time spot instances). Returns the behaviour set."""
        behavior = "terminate" if down or handle.extra.get("use_spot") else "stop"
        if handle.extra.get("use_spot") and not down:
            log.warning("aws: %s is spot: autostop will terminate it (spot cannot stop)", handle.cluster_name)
        region = handle.region or self.default_region
        ec2 = self._client(region)
        ids = [i["InstanceId"] for i in self._instances(region, handle.cluster_name)] or list(handle.node_ids)
        for instance_id in ids:
            self._call(
                lambda i=instance_id: ec2.modify_instance_attribute(
                    InstanceId=i, Attribute="instanceInitiatedShutdownBehavior", Value=behavior
                ),
                region=region,
            )
        return behavior

    # ---- execution --------------------------------------------------------------------------
    def classify_error(self, exc: BaseException) -> ProvisionError:
        return classify_aws_error(exc)


def shutdown_behavior(resources: Resources | None, use_spot: bool) -> str:
    """``InstanceInitiatedShutdownBehavior`` at launch: terminate for spot or autostop ``down``, else stop."""
    autostop = getattr(resources, "autostop", None)
    return "terminate" if use_spot or (autostop is not None and autostop.down) else "stop"
