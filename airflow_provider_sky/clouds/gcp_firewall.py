"""GCE VPC firewall rules for the nodes: names, tags and request bodies (pure helpers).

Two kinds of rule, both ingress TCP on the instances' network:

- the SSH rule ``sky-ssh-<network>`` (port 22 from ``ssh_cidrs``, target: the configured network tags,
  default ``sky-ssh``), shared by every cluster, created once when missing and never deleted;
- the ports rule ``sky-ports-<cluster>`` (``resources.ports`` from ``ports_cidrs``, target: the
  cluster's own tag ``sky-<cluster>``), created at launch and deleted at termination.

Firewall rules carry no labels, so ownership is marked in the description (`OWNED`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_sky.clouds.gcp_instances import last_segment

OWNED = "airflow-provider-sky"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def gce_name(prefix: str, text: str) -> str:
    """``<prefix>-<text>`` as a valid GCE name / network tag (RFC 1035, <= 63); hashed when it is not."""
    name = f"{prefix}-{text}"
    if _NAME_RE.match(name):
        return name
    slug = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{prefix}-{slug[: 62 - len(prefix) - 9].strip('-')}-{digest}".replace("--", "-")


def cluster_tag(cluster_name: str) -> str:
    """The network tag every instance of the cluster gets (the ports rule's target)."""
    return gce_name("sky", cluster_name)


def ssh_rule_name(network: str) -> str:
    return gce_name("sky-ssh", last_segment(network) or "default")


def ports_rule_name(cluster_name: str) -> str:
    return gce_name("sky-ports", cluster_name)


def allowed_ports(ports: Sequence[str]) -> list[str]:
    """``('8080', '10000-10010')`` -> GCE port specs (same syntax), de-duplicated, in order."""
    return list(dict.fromkeys(str(p).strip() for p in ports if str(p).strip()))


def rule_body(
    *, name: str, network: str, ports: Sequence[str], source_ranges: Sequence[str],
    target_tags: Sequence[str], description: str,
) -> dict[str, Any]:  # fmt: skip
    """A ``Firewall`` resource (proto field names) allowing TCP `ports` from `source_ranges`."""
    return {
        "name": name,
        "network": network,
        "direction": "INGRESS",
        "priority": 1000,
        "description": f"{OWNED}: {description}",
        "allowed": [{"I_p_protocol": "tcp", "ports": list(ports)}],
        "source_ranges": list(source_ranges),
        "target_tags": list(target_tags),
    }


def covers(rule: Any, ports: Sequence[str], source_ranges: Sequence[str], target_tags: Sequence[str]) -> bool:
    """Whether an existing rule (proto message or REST dict) allows exactly what `rule_body` would."""
    if isinstance(rule, Mapping):
        allowed = [(a.get("IPProtocol"), list(a.get("ports") or ())) for a in rule.get("allowed") or ()]
        ranges, tags, disabled = rule.get("sourceRanges") or (), rule.get("targetTags") or (), rule.get("disabled")
    else:
        allowed = [(a.I_p_protocol, list(a.ports)) for a in rule.allowed]
        ranges, tags, disabled = rule.source_ranges, rule.target_tags, rule.disabled
    tcp = {p for proto, ps in allowed if proto == "tcp" for p in ps}
    return not disabled and set(ports) <= tcp and set(source_ranges) <= set(ranges) and set(target_tags) <= set(tags)
