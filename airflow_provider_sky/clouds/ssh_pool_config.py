"""SSH node pool configuration: hosts, credentials, declared or probed resources.

Pure Python (no Airflow import): `pool_config_from_connection` reads an Airflow-connection-shaped
mapping of type ``sky_ssh_pool``::

    {"conn_id": "gpu_pool", "conn_type": "sky_ssh_pool", "host": ..., "login": ..., "port": ...,
     "extra": {"hosts": ["ubuntu@10.0.0.5:22", ...] or "a@h1:22,h2", "user": "ubuntu",
               "private_key": "-----BEGIN ...", or "key_file": "~/.ssh/id_ed25519",
               "port": 22, "known_hosts": "<known_hosts text or a file path>",
               "strict_host_key_checking": true | "accept-new" | false,
               "price_per_hour": 0.0,
               "hosts_spec": {"10.0.0.5": {"cpus": 32, "memory_gb": 256, "gpus": {"A100": 4}}}}}

``extra`` may also be a JSON string. Host entries of ``hosts`` may be dicts with the same keys as
`PoolHost`. Resources left out are probed over SSH (``nproc``, ``/proc/meminfo``, ``nvidia-smi``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.execution.ssh_keys import HostKeyMode
from airflow_provider_sky.spec.accelerators import canonical_name

CONN_TYPE = "sky_ssh_pool"
CLOUD = "ssh"
_HOST_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d+))?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _bad(problem: str, fix: str) -> ConfigError:
    return ConfigError(problem, cloud=CLOUD, fix=fix)


@dataclass(frozen=True)
class PoolHost:
    """One machine of a pool. ``gpus=None`` / ``cpus=None`` / ``memory_gb=None`` mean "probe"."""

    host: str
    port: int = 22
    user: str | None = None
    private_key: str | None = field(default=None, repr=False)
    key_file: str | None = None
    cpus: float | None = None
    memory_gb: float | None = None
    gpus: dict[str, int] | None = None
    ip: str | None = None
    home: str | None = None  # where cluster directories go on the host (default ~/.sky-airflow)

    @property
    def key(self) -> str:
        """Stable id of the host in the pool: ``user@host:port``."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def complete(self) -> bool:
        return self.cpus is not None and self.memory_gb is not None and self.gpus is not None

    def public(self) -> dict[str, Any]:
        """What may be shown and stored (no key material)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "cpus": self.cpus,
            "memory_gb": self.memory_gb,
            "gpus": dict(self.gpus or {}),
        }


@dataclass(frozen=True)
class PoolConfig:
    name: str
    hosts: tuple[PoolHost, ...]
    price_per_hour: float = 0.0
    known_hosts: str | None = field(default=None, repr=False)  # text, or a path
    strict_host_key_checking: HostKeyMode = True


def normalize_gpu_name(raw: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` -> ``A100-80GB``, ``Tesla T4`` -> ``T4``; unknown names stay as given."""
    name = re.sub(r"^(NVIDIA|Tesla|GeForce|Quadro)\s+", "", raw.strip(), flags=re.I)
    name = re.sub(r"^(NVIDIA|Tesla|GeForce|Quadro)\s+", "", name, flags=re.I)
    if canon := canonical_name(name) or canonical_name(name.replace(" ", "")):
        return canon
    parts = re.split(r"[-\s]+", name)
    base = canonical_name(parts[0])
    if base is None:
        return name
    mem = next((p.upper() for p in parts[1:] if re.fullmatch(r"\d+GB", p, re.I)), None)
    return (mem and canonical_name(f"{base}-{mem}")) or base


def canonical_gpus(gpus: Mapping[str, Any] | None) -> dict[str, int] | None:
    if gpus is None:
        return None
    out: dict[str, int] = {}
    for name, count in gpus.items():
        canon = normalize_gpu_name(str(name))
        out[canon] = out.get(canon, 0) + int(count)
    return {k: v for k, v in out.items() if v > 0}


def parse_probe(output: str) -> tuple[float, float, dict[str, int]]:
    """Parse the probe script's output: nproc, MemTotal kB, then one GPU name per line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected probe output: {output[:200]!r}")
    cpus, mem_kb = float(lines[0]), float(lines[1])
    gpus: dict[str, int] = {}
    for raw in lines[2:]:
        name = normalize_gpu_name(raw)
        gpus[name] = gpus.get(name, 0) + 1
    return cpus, round(mem_kb / (1024 * 1024), 2), gpus


PROBE_SCRIPT = (
    "nproc; awk '/^MemTotal:/ {print $2}' /proc/meminfo; "
    "if command -v nvidia-smi >/dev/null 2>&1; then "
    "nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true; fi"
)


def _host_entry(value: Any, defaults: Mapping[str, Any], where: str) -> PoolHost:
    if isinstance(value, str):
        m = _HOST_RE.match(value.strip())
        if not m:
            raise _bad(
                f"{where}: cannot parse host {value!r}", "write hosts as user@host:port, comma-separated"
            )
        data: dict[str, Any] = {"host": m["host"].strip("[]"), "user": m["user"], "port": m["port"]}
    elif isinstance(value, Mapping):
        data = dict(value)
        if "key" in data and "private_key" not in data:
            data["private_key"] = data.pop("key")
    else:
        raise _bad(
            f"{where}: a host must be a string or a mapping, got {type(value).__name__}", "fix the hosts list"
        )
    if not data.get("host"):
        raise _bad(f"{where}: host entry without 'host'", "give every host a 'host'")
    unknown = set(data) - set(PoolHost.__dataclass_fields__)
    if unknown:
        raise _bad(
            f"{where}: unknown host fields {sorted(unknown)}", f"use {sorted(PoolHost.__dataclass_fields__)}"
        )
    merged = {k: v for k, v in defaults.items() if v is not None}
    merged.update({k: v for k, v in data.items() if v is not None})
    if not merged.get("user"):
        raise _bad(
            f"{where}: no user for host {data['host']}", "set 'user' in the connection (login) or per host"
        )
    if not merged.get("private_key") and not merged.get("key_file"):
        raise _bad(
            f"{where}: no key for host {data['host']}", "set private_key or key_file in the connection"
        )
    try:
        merged["port"] = int(merged.get("port") or 22)
        for k in ("cpus", "memory_gb"):
            if merged.get(k) is not None:
                merged[k] = float(merged[k])
    except (TypeError, ValueError) as exc:
        raise _bad(f"{where}: {exc}", "port, cpus and memory_gb must be numbers") from None
    merged["gpus"] = canonical_gpus(merged.get("gpus"))
    return PoolHost(**merged)


def parse_hosts(
    hosts: Any, defaults: Mapping[str, Any] | None = None, where: str = "hosts"
) -> tuple[PoolHost, ...]:
    """Hosts from a list (strings or mappings) or a comma/newline-separated string."""
    if isinstance(hosts, str):
        hosts = [h for h in re.split(r"[,\s]+", hosts) if h]
    if not hosts:
        raise _bad(
            f"{where}: the pool has no hosts", "list the pool's hosts (user@host:port, comma-separated)"
        )
    out = tuple(_host_entry(h, defaults or {}, f"{where}[{i}]") for i, h in enumerate(hosts))
    keys = [h.key for h in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise _bad(f"{where}: duplicate hosts {dupes}", "list every host once")
    return out


def _apply_spec(hosts: tuple[PoolHost, ...], spec: Any) -> tuple[PoolHost, ...]:
    """Merge per-host resources (keyed by host, host:port or user@host:port) into the hosts."""
    if isinstance(spec, str):
        spec = json.loads(spec) if spec.strip() else {}
    if isinstance(spec, list):
        spec = {str(e.get("host")) + (f":{e['port']}" if e.get("port") else ""): e for e in spec}
    out = []
    for h in hosts:
        entry = spec.get(h.key) or spec.get(f"{h.host}:{h.port}") or spec.get(h.host) or {}
        res = {k: entry[k] for k in ("cpus", "memory_gb", "gpus", "ip", "home") if k in entry}
        if "gpus" in res:
            res["gpus"] = canonical_gpus(res["gpus"])
        out.append(replace(h, **res))
    return tuple(out)


def _bool_mode(value: Any) -> HostKeyMode:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("accept-new", "accept_new"):
        return "accept-new"
    return text not in ("false", "no", "0", "off")


def pool_config_from_connection(conn: Mapping[str, Any], pool_name: str | None = None) -> PoolConfig:
    """A `PoolConfig` from an Airflow-connection-shaped mapping (see the module doc)."""
    extra = conn.get("extra_dejson", conn.get("extra")) or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except ValueError as exc:
            raise _bad(f"connection extra is not valid JSON: {exc}", "fix the connection's extra") from None
    if conn.get("conn_type") not in (None, CONN_TYPE):
        raise _bad(
            f"connection type is {conn.get('conn_type')!r}, not {CONN_TYPE!r}",
            f"use a {CONN_TYPE} connection",
        )
    name = pool_name or extra.get("pool_name") or conn.get("conn_id") or "ssh-pool"
    if not _NAME_RE.match(str(name)):
        raise _bad(f"pool name {name!r} is not valid", "use letters, digits, '_', '.', '-' (at most 64)")
    defaults = {
        "user": extra.get("user") or conn.get("login"),
        "port": extra.get("port") or conn.get("port"),
        "private_key": extra.get("private_key") or conn.get("password") or None,
        "key_file": extra.get("key_file"),
        "home": extra.get("home"),
    }
    hosts = parse_hosts(extra.get("hosts") or conn.get("host"), defaults, "hosts")
    if extra.get("hosts_spec"):
        try:
            hosts = _apply_spec(hosts, extra["hosts_spec"])
        except (ValueError, AttributeError, TypeError) as exc:
            raise _bad(
                f"hosts_spec: {exc}", 'write hosts_spec as JSON {"host": {"cpus": .., "gpus": {..}}}'
            ) from None
    return PoolConfig(
        name=str(name),
        hosts=hosts,
        price_per_hour=float(extra.get("price_per_hour") or 0.0),
        known_hosts=extra.get("known_hosts"),
        strict_host_key_checking=_bool_mode(extra.get("strict_host_key_checking", True)),
    )
