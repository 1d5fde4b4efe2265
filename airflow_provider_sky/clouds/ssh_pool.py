"""On-prem SSH node pools as a cloud: "launching" leases whole hosts or GPU slots of a fixed pool.

The lease lives in the state store (`state.pools`): the primary key on (pool, host, slot) and a
row lock on the pool make it atomic across threads, processes and Airflow workers. A node that
asks for accelerators gets that many GPU slots of one host (``CUDA_VISIBLE_DEVICES`` set to
them); a node without accelerators gets a whole host. Nodes of one cluster are on distinct
hosts. Each cluster has its own directory on every host (``<home>/clusters/<name>``, home
default ``~/.sky-airflow``) that `terminate` deletes after killing what ran there.

Errors: a request no host of the pool could ever satisfy (an accelerator it lacks, too many
nodes, CPUs or memory) -> `ConfigError`; everything fitting is taken right now ->
`CapacityError`; unreachable host -> `CapacityError`; key or host-key problems -> `CredentialsError`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_sky.clouds.base import Cloud, ClusterHandle
from airflow_provider_sky.clouds.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    ProvisionError,
    TransientError,
)
from airflow_provider_sky.clouds.ssh_pool_config import (
    CLOUD,
    PROBE_SCRIPT,
    PoolConfig,
    PoolHost,
    normalize_gpu_name,
    parse_hosts,
    parse_probe,
    pool_config_from_connection,
)
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.runner import CommandError
from airflow_provider_sky.execution.ssh_keys import (
    HostKeyError,
    HostKeyMode,
    KnownHosts,
    SshAuthError,
    SshError,
)
from airflow_provider_sky.execution.ssh_runner import SshRunner, install_peer_access
from airflow_provider_sky.state import pools
from airflow_provider_sky.state.pools import SlotClaim
from airflow_provider_sky.state.store import StateStore

if TYPE_CHECKING:
    from airflow_provider_sky.execution.runner import CommandRunner
    from airflow_provider_sky.spec.resources import Resources

log = logging.getLogger(__name__)

HOST_SLOT = "host"
DEFAULT_ROOT = ".sky-airflow"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class _Demand:
    """What one node needs: `gpus` of `accelerator` (None: a whole host), at least cpus/memory."""

    accelerator: str | None
    gpus: int
    cpus: float
    memory_gb: float

    def text(self) -> str:
        return f"{self.accelerator}:{self.gpus}" if self.accelerator else "host"


def _gpu_slots(host: PoolHost) -> dict[str, list[int]]:
    """GPU indices of a host by type (types numbered in declaration order)."""
    out, i = {}, 0
    for name, count in (host.gpus or {}).items():
        out[name] = list(range(i, i + count))
        i += count
    return out


def _known_hosts(value: str | KnownHosts | None) -> KnownHosts:
    if isinstance(value, KnownHosts):
        return value
    if value is None:
        return KnownHosts.default()
    looks_like_text = "\n" in value.strip() or re.search(r"\s(ssh-|ecdsa-|sk-)", value) is not None
    return KnownHosts(text=value) if looks_like_text else KnownHosts(path=value)


class SshPoolCloud(Cloud):
    """A fixed pool of machines reached over SSH; region = the pool's name, no zones."""

    name = CLOUD

    def __init__(
        self,
        pool_name: str,
        hosts: Sequence[PoolHost | Mapping[str, Any] | str],
        price_per_hour: float = 0.0,
        store: StateStore | None = None,
        *,
        known_hosts: str | KnownHosts | None = None,
        strict_host_key_checking: HostKeyMode = True,
        python: str = "python3",
        connect_timeout: float = 20.0,
        cancel_grace: float = 5.0,
    ) -> None:
        parsed = [h for h in hosts if isinstance(h, PoolHost)]
        rest = [h for h in hosts if not isinstance(h, PoolHost)]
        self.hosts: tuple[PoolHost, ...] = tuple(parsed) + (parse_hosts(rest) if rest else ())
        if not self.hosts:
            raise ConfigError(
                f"ssh pool {pool_name!r} has no hosts", cloud=CLOUD, fix="list the pool's hosts"
            )
        self.pool_name = pool_name
        self.price_per_hour = float(price_per_hour)
        self.store = store or StateStore()
        self.known_hosts = _known_hosts(known_hosts)
        self.host_key_mode = strict_host_key_checking
        self.python = python
        self.connect_timeout = connect_timeout
        self.cancel_grace = cancel_grace
        self._probed: dict[str, PoolHost] = {}
        self._probe_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: PoolConfig, store: StateStore | None = None, **kwargs: Any) -> SshPoolCloud:
        opts = {
            "known_hosts": config.known_hosts,
            "strict_host_key_checking": config.strict_host_key_checking,
            **kwargs,
        }
        return cls(config.name, config.hosts, config.price_per_hour, store, **opts)

    @classmethod
    def from_connection(
        cls,
        conn: Mapping[str, Any],
        store: StateStore | None = None,
        pool_name: str | None = None,
        **kwargs: Any,
    ) -> SshPoolCloud:
        """Build from an Airflow-connection-shaped mapping of type ``sky_ssh_pool``."""
        return cls.from_config(pool_config_from_connection(conn, pool_name), store, **kwargs)

    def __repr__(self) -> str:
        return f"SshPoolCloud({self.pool_name!r}, hosts={[h.key for h in self.hosts]})"

    def _err(
        self, cls: type[ProvisionError], message: str, fix: str | None = None, **kw: Any
    ) -> ProvisionError:
        return cls(message, cloud=CLOUD, region=self.pool_name, fix=fix, **kw)

    # ---- hosts ----
    def runner_for(
        self, host: PoolHost, home: str | None = None, env: Mapping[str, str] | None = None
    ) -> SshRunner:
        return SshRunner(
            host.host,
            host.user or "",
            port=host.port,
            private_key=host.private_key,
            key_file=host.key_file,
            known_hosts=self.known_hosts,
            strict_host_key_checking=self.host_key_mode,
            home=home,
            node_ip=host.ip,
            python=self.python,
            env=env,
            connect_timeout=self.connect_timeout,
        )

    def probe(self, host: PoolHost) -> PoolHost:
        """Fill the resources a host did not declare from ``nproc``, ``/proc/meminfo``, ``nvidia-smi``."""
        if host.complete:
            return host
        result = (
            self.runner_for(host)
            .run(PROBE_SCRIPT, cwd="/", timeout=60, mark=False)
            .check(f"probing {host.key}")
        )
        cpus, memory, gpus = parse_probe(result.stdout)
        return replace(
            host,
            cpus=host.cpus if host.cpus is not None else cpus,
            memory_gb=host.memory_gb if host.memory_gb is not None else memory,
            gpus=host.gpus if host.gpus is not None else gpus,
        )

    def inventory(self) -> list[PoolHost]:
        """Every host with its resources (probed once per process where not declared)."""
        with self._probe_lock:
            todo = [h for h in self.hosts if not h.complete and h.key not in self._probed]
            if todo:
                with ThreadPoolExecutor(max_workers=min(16, len(todo))) as ex:
                    for h, probed in zip(todo, ex.map(self._probe_or_raise, todo), strict=True):
                        self._probed[h.key] = probed
        return [h if h.complete else self._probed[h.key] for h in self.hosts]

    def _probe_or_raise(self, host: PoolHost) -> PoolHost:
        try:
            return self.probe(host)
        except (SshError, CommandError, ValueError, OSError) as exc:
            raise self.classify_error(exc) from exc

    # ---- Cloud API ----
    def regions(self) -> list[str]:
        return [self.pool_name]

    def zones(self, region: str) -> list[str]:
        return []

    def hourly_price(self, num_nodes: int = 1) -> float:
        """Amortized price of a cluster of `num_nodes` hosts (0 by default)."""
        return self.price_per_hour * num_nodes

    def _demands(self, resources: Resources | None) -> list[_Demand]:
        cpus = float(getattr(getattr(resources, "cpus", None), "value", 0) or 0)
        memory = float(getattr(getattr(resources, "memory", None), "value", 0) or 0)
        accels = dict(getattr(resources, "accelerators", None) or {})
        if not accels:
            return [_Demand(None, 0, cpus, memory)]
        return [_Demand(normalize_gpu_name(n), math.ceil(float(c)), cpus, memory) for n, c in accels.items()]

    @staticmethod
    def _fits(host: PoolHost, d: _Demand) -> bool:
        if (host.cpus or 0) < d.cpus or (host.memory_gb or 0) < d.memory_gb:
            return False
        return d.accelerator is None or (host.gpus or {}).get(d.accelerator, 0) >= d.gpus

    def _check_feasible(self, inv: list[PoolHost], demands: list[_Demand], num_nodes: int) -> list[_Demand]:
        ok = [d for d in demands if sum(self._fits(h, d) for h in inv) >= num_nodes]
        if ok:
            return ok
        have = "; ".join(
            f"{h.key}: {h.cpus:g} CPUs, {h.memory_gb:g} GB, GPUs {h.gpus or 'none'}" for h in inv
        )
        wanted = " or ".join(d.text() for d in demands)
        lacking = [
            d.accelerator
            for d in demands
            if d.accelerator and not any((h.gpus or {}).get(d.accelerator) for h in inv)
        ]
        problem = (
            f"ssh pool {self.pool_name!r} has no accelerator {', '.join(lacking)}"
            if len(lacking) == len(demands)
            else f"ssh pool {self.pool_name!r} cannot fit {num_nodes} node(s) of {wanted}"
        )
        raise self._err(
            ConfigError,
            f"{problem} (hosts: {have})",
            fix="ask for what the pool has, fewer nodes, or run on another cloud",
        )

    def _chooser(self, inv: list[PoolHost], demands: list[_Demand], num_nodes: int) -> pools.Chooser:
        def choose(taken: Mapping[tuple[str, str], str]) -> list[SlotClaim]:
            busy_hosts = {h for h, _ in taken}
            for d in demands:
                picks: list[tuple[PoolHost, list[str]]] = []
                candidates = []
                for h in inv:
                    if not self._fits(h, d):
                        continue
                    if d.accelerator is None:
                        if h.key not in busy_hosts:
                            slots = [HOST_SLOT] + [f"gpu:{i}" for idx in _gpu_slots(h).values() for i in idx]
                            candidates.append((sum((h.gpus or {}).values()), h, slots))
                    elif (h.key, HOST_SLOT) not in taken:
                        free = [i for i in _gpu_slots(h)[d.accelerator] if (h.key, f"gpu:{i}") not in taken]
                        if len(free) >= d.gpus:  # pack: prefer hosts with the fewest free GPUs
                            candidates.append((len(free), h, [f"gpu:{i}" for i in free[: d.gpus]]))
                candidates.sort(key=lambda c: c[0])  # stable: pool order among equals
                picks = [(h, slots) for _, h, slots in candidates[:num_nodes]]
                if len(picks) == num_nodes:
                    return [SlotClaim(h.key, s, rank) for rank, (h, slots) in enumerate(picks) for s in slots]
            wanted = " or ".join(d.text() for d in demands)
            raise self._err(
                CapacityError,
                f"ssh pool {self.pool_name!r} has no {num_nodes} free host(s) for {wanted} right now "
                f"({len(busy_hosts)} of {len(inv)} hosts in use)",
                fix="wait for other clusters to finish, or fail over to another cloud",
            )

        return choose

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
    ) -> ClusterHandle:
        if not _NAME_RE.match(cluster_name or ""):
            raise self._err(
                ConfigError, f"cluster name {cluster_name!r} is not valid", "use a-z, 0-9 and '-'"
            )
        if num_nodes < 1:
            raise self._err(
                ConfigError, f"num_nodes must be at least 1 (got {num_nodes})", "set num_nodes >= 1"
            )
        if use_spot or getattr(resources, "use_spot", False):
            raise self._err(
                ConfigError, "ssh pools have no spot instances", "set use_spot: false for this pool"
            )
        cloud = getattr(resources, "cloud", None)
        region = region or getattr(resources, "region", None)
        if cloud not in (None, CLOUD) or region not in (None, self.pool_name):
            raise self._err(
                ConfigError,
                f"request is for {cloud or CLOUD}/{region}, not ssh pool {self.pool_name!r}",
                "route the task to this pool (infra: ssh/<pool>) or to the other cloud",
            )
        existing = pools.get_lease(self.store, self.pool_name, cluster_name)
        if existing is not None and existing.handle is not None:
            handle = ClusterHandle.from_dict(existing.handle)
            if handle.num_nodes != num_nodes:
                raise self._err(
                    ConfigError,
                    f"cluster {cluster_name} exists with {handle.num_nodes} nodes, {num_nodes} requested",
                    "use another cluster name or terminate the existing cluster",
                )
            return handle
        inv = self.inventory()
        demands = self._check_feasible(inv, self._demands(resources), num_nodes)
        claims = pools.allocate(
            self.store, self.pool_name, cluster_name, self._chooser(inv, demands, num_nodes)
        )
        try:
            handle = self._prepare(cluster_name, claims, inv, demands)
            pools.set_handle(self.store, self.pool_name, cluster_name, handle.to_dict())
        except BaseException as exc:
            pools.release(self.store, self.pool_name, cluster_name)
            if isinstance(exc, Exception):
                raise self.classify_error(exc) from exc
            raise
        log.info("ssh pool %s: cluster %s on %s", self.pool_name, cluster_name, ", ".join(handle.node_ids))
        return handle

    def _prepare(
        self, cluster_name: str, claims: Sequence[SlotClaim], inv: list[PoolHost], demands: list[_Demand]
    ) -> ClusterHandle:
        by_key = {h.key: h for h in inv}
        ranks = sorted({c.rank for c in claims})
        nodes: list[dict[str, Any]] = []
        runners: list[SshRunner] = []
        for rank in ranks:
            mine = [c for c in claims if c.rank == rank]
            host = by_key[mine[0].host]
            gpu_idx = sorted(int(c.slot.split(":")[1]) for c in mine if c.slot.startswith("gpu:"))
            whole = any(c.slot == HOST_SLOT for c in mine)
            env = {} if whole or not gpu_idx else {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_idx))}
            root = (host.home or DEFAULT_ROOT).rstrip("/")
            runner = self.runner_for(host, home=f"{root}/clusters/{cluster_name}", env=env)
            runners.append(runner)
            nodes.append(
                {**host.public(), "ip": None, "home": None, "env": env, "slots": [c.slot for c in mine]}
            )
        with ThreadPoolExecutor(max_workers=min(16, len(runners))) as ex:
            homes = list(ex.map(lambda r: r.home, runners))  # connect, verify, mkdir -p
        for node, runner, home in zip(nodes, runners, homes, strict=True):
            node.update(home=home, ip=runner.node_ip)
        install_peer_access(runners)
        demand = next((d for d in demands if any(c.slot.startswith("gpu:") for c in claims)), None)
        return ClusterHandle(
            cloud=CLOUD,
            cluster_name=cluster_name,
            region=self.pool_name,
            zone=None,
            instance_type=demand.text() if demand and demand.accelerator else HOST_SLOT,
            num_nodes=len(nodes),
            node_ips=tuple(n["ip"] for n in nodes),
            node_ids=tuple(f"{n['user']}@{n['host']}:{n['port']}" for n in nodes),
            extra={"pool": self.pool_name, "nodes": nodes},
        )

    def find(self, cluster_name: str) -> ClusterHandle | None:
        lease = pools.get_lease(self.store, self.pool_name, cluster_name)
        return ClusterHandle.from_dict(lease.handle) if lease and lease.handle else None

    def runners(self, handle: ClusterHandle) -> list[CommandRunner]:
        return list(self._runners(handle))

    def _runners(self, handle: ClusterHandle) -> list[SshRunner]:
        by_key = {h.key: h for h in self.hosts}
        out = []
        for node, key in zip(handle.extra.get("nodes") or [], handle.node_ids, strict=True):
            host = by_key.get(key)
            if host is None:
                raise self._err(
                    ConfigError,
                    f"host {key} of cluster {handle.cluster_name} is no longer in ssh pool {self.pool_name!r}",
                    "add the host back to the pool connection, or release the cluster with release()",
                )
            out.append(
                self.runner_for(replace(host, ip=node.get("ip")), home=node["home"], env=node.get("env"))
            )
        return out

    def terminate(self, handle: ClusterHandle) -> None:
        """Kill the cluster's jobs and processes on every host, delete its directories, free the slots."""
        if pools.get_lease(self.store, self.pool_name, handle.cluster_name) is None:
            return
        runners = self._runners(handle)
        failures: list[str] = []
        try:
            jobs.cancel_all_jobs(runners[0], grace=self.cancel_grace)
        except Exception as exc:
            failures.append(f"{runners[0].target}: cancelling jobs: {exc}")

        def clean(r: SshRunner) -> None:
            r.kill_processes_under(r.home, grace=self.cancel_grace)
            r.run(["rm", "-rf", "--", r.home], cwd="/", timeout=120, mark=False).check(f"removing {r.home}")

        with ThreadPoolExecutor(max_workers=min(16, len(runners))) as ex:
            for r, fut in [(r, ex.submit(clean, r)) for r in runners]:
                try:
                    fut.result()
                except Exception as exc:
                    failures.append(f"{r.target}: {exc}")
        if failures:
            raise self._err(
                TransientError,
                f"could not clean up cluster {handle.cluster_name} on every host (slots stay held): "
                + "; ".join(failures),
                "retry the teardown once the hosts are reachable, or call release() to free the slots anyway",
            )
        self.release(handle.cluster_name)

    def release(self, cluster_name: str) -> int:
        """Free a cluster's slots without touching the hosts (for hosts gone for good)."""
        return pools.release(self.store, self.pool_name, cluster_name)

    def stop(self, handle: ClusterHandle) -> None:
        raise self._err(
            ConfigError, "ssh pool hosts cannot be stopped", "terminate the cluster (down) instead"
        )

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        found = self.find(handle.cluster_name)
        if found is None:
            raise self._err(ConfigError, f"cluster {handle.cluster_name} does not exist", "launch it again")
        return found

    def classify_error(self, exc: BaseException) -> ProvisionError:
        if isinstance(exc, ProvisionError):
            return exc
        if isinstance(exc, HostKeyError | SshAuthError):
            return self._err(CredentialsError, str(exc), "fix the pool's key or known_hosts")
        if isinstance(exc, SshError | OSError | EOFError):
            return self._err(
                CapacityError, f"ssh pool host unreachable: {exc}", "check the host, or fail over"
            )
        return super().classify_error(exc)
